"""The lockstep evaluator: exactness against a plain Gymnasium loop, and seed / batch / worker
invariance (the reproducibility contract of certrl.evaluator)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from certrl.backends import run_local
from certrl.envs import resolve_env, with_reward_bounds
from certrl.evaluator import (
    STREAM_POLICY,
    STREAM_SMOOTHING,
    BlockDraws,
    EvalConfig,
    EvaluationError,
    ObservationHook,
    episode_env_seed,
    episode_rng,
    run_episodes,
)
from certrl.smoothing import GaussianSmoothing
from tests._fixtures import random_policy


def _returns(policy, spec, n, cfg, workers=1, hooks=None):
    out = {}
    run_local(policy, spec, list(range(n)), cfg, workers=workers, obs_hooks=hooks,
              on_result=lambda r: out.__setitem__(r.index, r))
    return [out[i] for i in range(n)]


def test_matches_plain_gymnasium_loop():
    """Deterministic evaluation equals a one-env, one-call-per-step loop with the same seeds."""
    policy = random_policy("Hopper-v5", seed=1)
    spec = resolve_env("hopper")
    res = _returns(policy, spec, 6, EvalConfig(seed=7, batch_size=4))
    env = spec.make()
    for r in res:
        obs, _ = env.reset(seed=episode_env_seed(7, r.index))
        total, steps, done = 0.0, 0, False
        while not done:
            a = policy.predict(obs)
            obs, rew, term, trunc, _ = env.step(a)
            total += rew
            steps += 1
            done = term or trunc
        assert r.ret == total
        assert r.length == steps
        assert r.terminated == term
    env.close()


@pytest.mark.parametrize("deterministic", [True, False])
def test_smoothed_and_stochastic_match_a_plain_loop_with_per_step_draws(deterministic):
    """Smoothing noise and policy sampling noise (fetched in blocks by the evaluator) are the
    per-step draws of each episode's own generators: a one-env loop drawing
    ``standard_normal(d)`` every step gives the same returns. Pendulum episodes (200 steps)
    span several 64-step blocks; the batch of 3 restarts slots mid-block."""
    policy = random_policy("Pendulum-v1", seed=5)
    spec = resolve_env("pendulum")
    sigma = 0.3
    cfg = EvalConfig(seed=11, batch_size=3, deterministic=deterministic)
    res = run_episodes(policy, spec, list(range(5)), cfg, [GaussianSmoothing(sigma)])
    assert len(res) == 5
    env = spec.make()
    for r in sorted(res, key=lambda r: r.index):
        obs, _ = env.reset(seed=episode_env_seed(11, r.index))
        g_smooth = episode_rng(11, r.index, STREAM_SMOOTHING)
        g_policy = episode_rng(11, r.index, STREAM_POLICY)
        total, done = 0.0, False
        with torch.no_grad():
            while not done:
                x = policy.normalize(torch.as_tensor(obs, dtype=torch.float32)[None])
                z = torch.as_tensor(g_smooth.standard_normal(policy.obs_dim)[None],
                                    dtype=torch.float32)
                noise = None
                if not deterministic:
                    noise = torch.as_tensor(g_policy.standard_normal(policy.act_dim)[None],
                                            dtype=torch.float32)
                a = policy.act_normalized(x + sigma * z, deterministic, noise)[0].numpy()
                obs, rew, term, trunc, _ = env.step(a)
                total += rew
                done = term or trunc
        assert r.ret == total
    env.close()


@pytest.mark.parametrize("kind", ["normal", "uniform"])
def test_block_draws_are_the_per_step_draws(kind):
    """BlockDraws hands each slot the same numbers as one generator call per step, across
    block refills, uneven take patterns and restarts of a slot with a new generator."""
    def gen(i):
        return np.random.default_rng(1000 + i)

    draws = BlockDraws(3, (4,), kind, block=5)
    ref = {k: gen(k) for k in range(3)}
    for k in range(3):
        draws.start(k, gen(k))
    pattern = [[0, 1, 2], [0, 2], [1], [0, 1, 2]] * 4
    for step, slots in enumerate(pattern):
        if step == 7:  # slot 1 starts a new episode mid-block
            draws.start(1, gen(50))
            ref[1] = gen(50)
        out = draws.take(np.array(slots))
        assert out.dtype == np.float32 and out.shape == (len(slots), 4)
        for j, k in enumerate(slots):
            want = ref[k].standard_normal(4) if kind == "normal" else ref[k].random(4)
            np.testing.assert_array_equal(out[j], want.astype(np.float32))
    with pytest.raises(ValueError):
        BlockDraws(1, (2,), "gumbel")


@pytest.mark.parametrize("deterministic", [True, False])
def test_batch_size_and_workers_do_not_change_returns(deterministic):
    policy = random_policy("Hopper-v5", seed=2)
    spec = resolve_env("hopper")
    hooks = [GaussianSmoothing(0.1, "normalized")]
    base = _returns(policy, spec, 10, EvalConfig(seed=3, batch_size=1, deterministic=deterministic),
                    hooks=hooks)
    rets = [r.ret for r in base]
    assert len(set(rets)) > 5  # the episodes really differ
    for bs, workers in [(3, 1), (64, 1), (2, 2)]:
        other = _returns(policy, spec, 10,
                         EvalConfig(seed=3, batch_size=bs, deterministic=deterministic),
                         workers=workers, hooks=hooks)
        assert [r.ret for r in other] == rets
        assert [r.length for r in other] == [r.length for r in base]


def test_seed_changes_returns_and_episode_subset_is_stable():
    policy = random_policy("Pendulum-v1", seed=0)
    spec = resolve_env("pendulum")
    a = _returns(policy, spec, 8, EvalConfig(seed=0, batch_size=8))
    b = _returns(policy, spec, 8, EvalConfig(seed=1, batch_size=8))
    assert [r.ret for r in a] != [r.ret for r in b]
    # episode 5 alone gives the same return as episode 5 in the full run
    alone = run_episodes(policy, spec, [5], EvalConfig(seed=0, batch_size=1))
    assert alone[0].ret == a[5].ret


def test_stochastic_differs_from_deterministic_and_is_reproducible():
    policy = random_policy("Pendulum-v1", seed=0)
    spec = resolve_env("pendulum")
    det = _returns(policy, spec, 4, EvalConfig(seed=0, deterministic=True))
    sto = _returns(policy, spec, 4, EvalConfig(seed=0, deterministic=False))
    sto2 = _returns(policy, spec, 4, EvalConfig(seed=0, deterministic=False, batch_size=3))
    assert [r.ret for r in det] != [r.ret for r in sto]
    assert [r.ret for r in sto] == [r.ret for r in sto2]


def test_discrete_policy_and_exact_bounds():
    policy = random_policy("CartPole-v1", seed=0, normalize=False)
    spec = resolve_env("cartpole")
    res = _returns(policy, spec, 5, EvalConfig(seed=0))
    for r in res:
        assert r.ret == r.length  # +1 per step
        assert r.clipped_steps == 0 and r.clipped_return == r.ret


def test_reward_clipping_is_counted():
    policy = random_policy("Pendulum-v1", seed=0)
    spec = with_reward_bounds(resolve_env("pendulum"), -1.0, 0.0)
    res = _returns(policy, spec, 2, EvalConfig(seed=0))
    for r in res:
        assert r.clipped_steps > 0
        assert r.clipped_return >= r.ret  # raising rewards below -1
        assert r.clipped_return >= -1.0 * r.length


class _Shift(ObservationHook):
    """Adds a constant perturbation to the first coordinate (adversarial: audited)."""

    name = "shift"

    def __init__(self, eps: float) -> None:
        self.eps = eps

    def __call__(self, x, ctx):
        d = torch.zeros_like(x)
        d[:, 0] = self.eps
        return x + d


def test_perturbation_norms_are_recorded():
    policy = random_policy("Pendulum-v1", seed=0)
    spec = resolve_env("pendulum")
    (r,) = run_episodes(policy, spec, [0], EvalConfig(seed=0), obs_hooks=[_Shift(0.5)])
    assert r.length == 200
    assert r.obs_linf_max == pytest.approx(0.5, abs=1e-6)
    assert r.obs_l2_max == pytest.approx(0.5, abs=1e-6)
    assert r.obs_l2_total == pytest.approx(0.5 * np.sqrt(200), rel=1e-5)
    # smoothing noise is the defender's own: not counted as a perturbation
    (s,) = run_episodes(policy, spec, [0], EvalConfig(seed=0),
                        obs_hooks=[GaussianSmoothing(0.3, "normalized")])
    assert s.obs_l2_total == 0.0 and s.ret != r.ret


def test_nan_actions_fail_loudly():
    policy = random_policy("Pendulum-v1", seed=0)
    with torch.no_grad():
        policy.net[0].weight[0, 0] = float("nan")
    with pytest.raises(EvaluationError, match="non-finite action"):
        run_episodes(policy, resolve_env("pendulum"), [0], EvalConfig(seed=0))


def test_policy_rows_are_batch_invariant():
    policy = random_policy("Hopper-v5", seed=4)
    x = torch.randn(300, 11)
    with torch.no_grad():
        full = policy.act(x)
        for b in (1, 2, 3, 7, 16, 64):
            parts = torch.cat([policy.act(x[i : i + b]) for i in range(0, 300, b)])
            assert torch.equal(parts, full), b
