"""Learned observation attacks: critic / Robust Sarsa (RS, RS+MAD), optimal adversary, PA-AD.

Known-answer checks (robust-penalty inner max, Sarsa fit of a synthetic MDP), the attack
objective on real Hopper states, budgets audited on evaluated episodes, the learned adversary
beating a random perturbation of the same size on Pendulum, caching and determinism. Training
budgets are tiny so the file runs in well under two minutes on two cores.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import certrl.attacks.critic as critic_mod
from certrl.attacks.base import ATTACKS, AttackError, ThreatModel
from certrl.attacks.critic import (
    QAttackHook,
    SarsaData,
    SarsaSettings,
    fit_sarsa,
    load_qnet,
    robust_inner_max,
    robust_penalty,
)
from certrl.attacks.learned import OptimalAttackHook, action_repr
from certrl.backends import run_local
from certrl.envs import resolve_env
from certrl.evaluator import EvalConfig, ObservationHook, StepContext, run_episodes
from certrl.policies import load_policy, validate_spaces
from certrl.policies.base import Policy
from tests._fixtures import random_policy

torch.set_num_threads(1)

TINY_SARSA = {"samples": 2048, "n_envs": 8, "train_steps": 300, "batch": 128}


def _load(name: str) -> tuple[Policy, object]:
    spec = resolve_env(name)
    policy = load_policy(f"demo:{name}")
    env = spec.make()
    try:
        policy = validate_spaces(policy, env.observation_space, env.action_space, spec.gym_id)
    finally:
        env.close()
    return policy, spec


@pytest.fixture(scope="module")
def hopper() -> tuple[Policy, object]:
    spec = resolve_env("hopper")
    return random_policy("Hopper-v5", seed=3), spec


@pytest.fixture(scope="module")
def pendulum() -> tuple[Policy, object]:
    return _load("pendulum")


def test_registered() -> None:
    for name in ("critic", "rs", "rs+mad", "optimal", "pa-ad"):
        assert name in ATTACKS and ATTACKS[name].kind == "obs"


# ---------------------------------------------------------------- Robust Sarsa penalty
class _BilinearQ(nn.Module):
    """Q(s, a) = <s, a> + 3: linear in a with per-row gradient s."""

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        return (s * a).sum(-1) + 3.0


def test_robust_inner_max_finds_analytic_max() -> None:
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(64, 5, generator=gen)
    a = torch.rand(64, 5, generator=gen) * 2 - 1
    q = _BilinearQ()
    for eps in (0.02, 0.3):
        a_hat = robust_inner_max(q, s, a, eps, steps=3, gen=gen)
        assert float((a_hat - a).abs().max()) <= eps + 1e-7
        gap = (q(s, a_hat) - q(s, a)).abs()
        # max over the l_inf ball of |<s, delta>| = eps * ||s||_1, reached at a corner
        torch.testing.assert_close(gap, eps * s.abs().sum(-1), rtol=1e-5, atol=1e-6)
        pen = robust_penalty(q, s, a, eps, 3, gen)
        torch.testing.assert_close(pen, ((eps * s.abs().sum(-1)) ** 2).mean(), rtol=1e-5, atol=0)


# ---------------------------------------------------------------- Sarsa TD fit
def test_sarsa_fit_recovers_known_q() -> None:
    """Synthetic MDP, gamma 0.9, actions irrelevant:
    A: r=1, absorbing (s'=A)          -> Q = 1 / (1 - 0.9) = 10
    B: r=2, terminal                  -> Q = 2
    C: r=0, s'=A                      -> Q = 0 + 0.9 * 10 = 9
    """
    rng = np.random.default_rng(0)
    n = 3000
    kind = rng.integers(0, 3, n)
    onehot = np.eye(3, dtype=np.float32)
    s = torch.as_tensor(onehot[kind])
    s2 = torch.as_tensor(onehot[np.where(kind == 1, 1, 0)])
    r = torch.as_tensor(np.array([1.0, 2.0, 0.0], dtype=np.float32)[kind])
    done = torch.as_tensor((kind == 1).astype(np.float32))
    act = lambda: torch.as_tensor(rng.uniform(-1, 1, (n, 2)).astype(np.float32))  # noqa: E731
    data = SarsaData(s=s, a=act(), r=r, s2=s2, a2=act(), done=done)
    settings = SarsaSettings(train_steps=2500, batch=128, lr=3e-3, gamma=0.9, seed=0)
    state, stats = fit_sarsa(data, settings)
    q = load_qnet(state)
    scale = float(state["r_scale"]) / (1 - float(state["gamma"]))
    with torch.no_grad():
        probe = torch.as_tensor(rng.uniform(-1, 1, (3 * 50, 2)).astype(np.float32))
        vals = q(torch.as_tensor(np.repeat(onehot, 50, 0)), probe).reshape(3, 50) * scale
    means = vals.mean(1).numpy()
    np.testing.assert_allclose(means, [10.0, 2.0, 9.0], atol=0.3)
    assert float(vals.std(1).max()) < 0.3  # Q does not depend on the (irrelevant) action
    assert stats["td_loss"] < 1e-3


# ---------------------------------------------------------------- Q attack on Hopper
def _states(policy: Policy, spec: object, n: int = 48) -> Tensor:
    env = spec.make()  # type: ignore[attr-defined]
    obs = []
    o, _ = env.reset(seed=5)
    for _ in range(n):
        obs.append(o)
        o, _, term, trunc, _ = env.step(policy.predict(o))
        if term or trunc:
            o, _ = env.reset(seed=len(obs))
    env.close()
    return torch.as_tensor(np.asarray(obs), dtype=torch.float32)


def _ctx(policy: Policy, x: Tensor) -> StepContext:
    b = x.shape[0]
    return StepContext(
        policy=policy, episodes=np.arange(b), slots=np.arange(b), t=np.zeros(b, dtype=int),
        rngs=[np.random.default_rng(i) for i in range(b)], raw_obs=x, deterministic=True,
    )


@pytest.mark.parametrize(
    "threat",
    [ThreatModel(eps=0.1), ThreatModel(eps=0.5, norm="l2", space="raw", episode_budget=2.0)],
    ids=["linf-normalized", "l2-raw-budget"],
)
def test_critic_attack_lowers_q_and_respects_budget(
    hopper: tuple[Policy, object], threat: ThreatModel, tmp_path: Path
) -> None:
    policy, spec = hopper
    hook = ATTACKS["critic"].factory(threat, policy, spec, cache_dir=tmp_path, **TINY_SARSA)
    assert isinstance(hook, QAttackHook) and hook.config()["sarsa_reg"] == 0.0
    raw = _states(policy, spec)
    hook.bind(policy, spec, raw.shape[0])
    hook.reset(np.arange(raw.shape[0]), [])
    x = raw if threat.space == "raw" else policy.normalize(raw)
    x_hat = hook(x, _ctx(policy, raw))
    nobs_true, nobs_hat = policy.normalize(raw), hook.to_policy_space(x_hat)
    q_clean = hook.q_value(nobs_true, nobs_true)
    q_adv = hook.q_value(nobs_true, nobs_hat)
    assert bool((q_adv <= q_clean + 1e-6).all())  # best iterate: never worse than clean
    assert float((q_adv < q_clean - 1e-6).float().mean()) > 0.9
    d = (x_hat - x).flatten(1)
    norm = d.abs().amax(1) if threat.norm == "linf" else d.norm(dim=1)
    assert float(norm.max()) <= threat.eps + 1e-6 and float(norm.mean()) > 0.5 * threat.eps

    results = []
    run_local(
        policy, spec, [0, 1, 2], EvalConfig(seed=1, batch_size=3), obs_hooks=[hook],
        on_result=results.append,
    )
    assert len(results) == 3
    for r in results:
        threat.audit(r)
        assert r.obs_linf_max > 0  # the attack perturbed
    if threat.episode_budget is not None:
        assert max(r.obs_l2_total for r in results) <= threat.episode_budget + 1e-6


def test_rs_scan_selection_cache_and_rs_mad_reuse(
    hopper: tuple[Policy, object], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy, spec = hopper
    threat = ThreatModel(eps=0.1)
    opts = dict(TINY_SARSA, sarsa_eps="0.02,0.2", sarsa_reg=[1.0], select_episodes=2)
    hook = ATTACKS["rs"].factory(threat, policy, spec, cache_dir=tmp_path, **opts)
    cfg = hook.config()
    scan = cfg["scan"]
    assert [(s["sarsa_eps"], s["sarsa_reg"]) for s in scan] == [(0.02, 1.0), (0.2, 1.0)]
    best = min(scan, key=lambda s: s["selection_return"])
    assert (cfg["sarsa_eps"], cfg["sarsa_reg"]) == (best["sarsa_eps"], best["sarsa_reg"])
    assert hook.details()["cached"] is False and all(s["reg_loss"] > 0 for s in scan)
    assert "cached" not in cfg and "fit_seconds" not in scan[0]  # config() is the resume key

    def no_collection(*a: object, **k: object) -> None:
        raise AssertionError("critics should come from the cache")

    monkeypatch.setattr(critic_mod, "collect_transitions", no_collection)
    again = ATTACKS["rs"].factory(threat, policy, spec, cache_dir=tmp_path, **opts)
    assert again.details()["cached"] is True
    assert again.config() == hook.config()  # same --resume key, trained or loaded
    for k, v in hook.q_state.items():  # type: ignore[union-attr]
        assert torch.equal(v, again.q_state[k])  # type: ignore[index]
    # rs+mad reuses the per-setting critics (no new rollouts) and adds the KL term
    mad = ATTACKS["rs+mad"].factory(threat, policy, spec, cache_dir=tmp_path, mad_weight=5, **opts)
    assert mad.mad_weight == 5.0 and "KL" in mad.config()["objective"]
    res = run_episodes(policy, spec, [0, 1], EvalConfig(seed=0, batch_size=2), obs_hooks=[mad])
    for r in res:
        threat.audit(r)


def test_critic_determinism_and_pickle(hopper: tuple[Policy, object]) -> None:
    policy, spec = hopper
    threat = ThreatModel(eps=0.1)
    h1 = ATTACKS["critic"].factory(threat, policy, spec, cache_dir="none", **TINY_SARSA)
    h2 = ATTACKS["critic"].factory(threat, policy, spec, cache_dir="none", **TINY_SARSA)
    for k, v in h1.q_state.items():  # type: ignore[union-attr]
        assert torch.equal(v, h2.q_state[k])  # type: ignore[index]
    h3 = pickle.loads(pickle.dumps(h1))
    cfg = EvalConfig(seed=4, batch_size=2)
    r1 = run_episodes(policy, spec, [0, 1, 2], cfg, obs_hooks=[h1])
    r3 = run_episodes(policy, spec, [0, 1, 2], cfg, obs_hooks=[h3])
    assert sorted((r.index, r.ret) for r in r1) == sorted((r.index, r.ret) for r in r3)
    other = ATTACKS["critic"].factory(
        threat, policy, spec, cache_dir="none", **{**TINY_SARSA, "seed": 1}
    )
    assert not torch.equal(other.q_state["net.0.weight"], h1.q_state["net.0.weight"])  # type: ignore[index]


def test_bad_options() -> None:
    policy = random_policy("Pendulum-v1")
    spec = resolve_env("pendulum")
    with pytest.raises(AttackError, match="unknown option"):
        ATTACKS["rs"].factory(ThreatModel(eps=0.1), policy, spec, sarsa_epsilon=0.1)
    with pytest.raises(AttackError, match="not an integer"):
        ATTACKS["optimal"].factory(ThreatModel(eps=0.1), policy, spec, train_steps="lots")


# ---------------------------------------------------------------- learned adversaries
class _RandomSign(ObservationHook):
    """A random corner of the l_inf ball each step: the 'no learning' baseline."""

    name = "random-sign"

    def __init__(self, eps: float) -> None:
        self.eps = eps

    def __call__(self, x: Tensor, ctx: StepContext) -> Tensor:
        z = np.stack([g.choice([-1.0, 1.0], size=x.shape[1]) for g in ctx.rngs])
        return x + self.eps * torch.as_tensor(z, dtype=torch.float32)


def _mean_return(policy: Policy, spec: object, hooks: list[ObservationHook], n: int = 16) -> float:
    res = run_episodes(policy, spec, list(range(n)), EvalConfig(seed=7, batch_size=n), hooks)  # type: ignore[arg-type]
    return float(np.mean([r.ret for r in res]))


def test_optimal_adversary_beats_random_and_is_cached(
    pendulum: tuple[Policy, object], tmp_path: Path
) -> None:
    policy, spec = pendulum
    threat = ThreatModel(eps=0.3)
    opts = {"train_steps": 50_000, "seed": 0, "cache_dir": tmp_path}
    t0 = time.perf_counter()
    hook = ATTACKS["optimal"].factory(threat, policy, spec, **opts)
    t_train = time.perf_counter() - t0
    assert isinstance(hook, OptimalAttackHook) and hook.details()["cached"] is False
    clean = _mean_return(policy, spec, [])
    rand = _mean_return(policy, spec, [_RandomSign(0.3)])
    att = _mean_return(policy, spec, [hook])
    # measured: clean ~ -150, random corners ~ -470, learned adversary ~ -600
    assert att < rand - 50 and rand < clean
    res = run_episodes(policy, spec, [0, 1], EvalConfig(seed=7, batch_size=2), [hook])
    for r in res:
        threat.audit(r)
        assert r.obs_linf_max > 0.5 * threat.eps

    t0 = time.perf_counter()
    again = ATTACKS["optimal"].factory(threat, policy, spec, **opts)
    assert again.details()["cached"] is True
    assert again.config() == hook.config()
    assert time.perf_counter() - t0 < 0.25 * t_train
    assert all(torch.equal(v, again.state[k]) for k, v in hook.state.items())  # type: ignore[union-attr,index]
    # a different threat model is a different adversary
    other = ATTACKS["optimal"].factory(ThreatModel(eps=0.2), policy, spec, train_steps=2048,
                                       cache_dir=tmp_path)
    assert other.details()["cached"] is False


def test_learned_adversary_determinism(pendulum: tuple[Policy, object]) -> None:
    policy, spec = pendulum
    threat = ThreatModel(eps=0.3)
    opts = {"train_steps": 4096, "seed": 3, "cache_dir": "none"}
    h1 = ATTACKS["optimal"].factory(threat, policy, spec, **opts)
    h2 = ATTACKS["optimal"].factory(threat, policy, spec, **opts)
    for k, v in h1.state.items():  # type: ignore[union-attr]
        assert torch.equal(v, h2.state[k])  # type: ignore[index]
    h2 = pickle.loads(pickle.dumps(h2))
    cfg = EvalConfig(seed=2, batch_size=3)
    r1 = run_episodes(policy, spec, [0, 1, 2], cfg, obs_hooks=[h1])
    r2 = run_episodes(policy, spec, [0, 1, 2], cfg, obs_hooks=[h2])
    assert [r.ret for r in r1] == [r.ret for r in r2]
    h4 = ATTACKS["optimal"].factory(threat, policy, spec, **{**opts, "seed": 4})
    assert not torch.equal(h4.state["pi.0.weight"], h1.state["pi.0.weight"])  # type: ignore[index]


def test_pa_ad_actor_follows_direction_and_trains(
    pendulum: tuple[Policy, object], tmp_path: Path
) -> None:
    policy, spec = pendulum
    threat = ThreatModel(eps=0.3, eps_bar=0.4)
    hook = ATTACKS["pa-ad"].factory(threat, policy, spec, train_steps=4096, cache_dir=tmp_path)
    # the gradient actor moves the victim's action along the director's direction
    raw = _states(policy, spec, 32)
    from certrl.attacks.learned import pa_ad_perturb

    for sign in (1.0, -1.0):
        u = torch.full((raw.shape[0], 1), sign)
        delta = pa_ad_perturb(threat, policy, 5, 0.5)(u, raw, raw)
        assert float(delta.abs().max()) <= threat.eps + 1e-6
        with torch.no_grad():
            moved = sign * (action_repr(policy, raw + delta) - action_repr(policy, raw))
        assert bool((moved >= -1e-6).all()) and float(moved.mean()) > 0.05
    res = run_episodes(policy, spec, [0, 1], EvalConfig(seed=0, batch_size=2), [hook])
    for r in res:
        threat.audit(r)  # includes the temporal-coupling audit
        assert "max_step_change" in r.extras


def test_fit_float32_keeps_recorded_perturbation_inside() -> None:
    """Raw observations of magnitude 1e3 (an ulp is 6e-5): x + delta rounds past eps unless
    pulled back; the recorded (x + delta) - x must satisfy the ball and the episode budget."""
    from certrl.attacks.learned import fit_float32

    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(256, 7, generator=gen) * 2 - 1) * 1000
    for threat in (ThreatModel(eps=0.1, space="raw"),
                   ThreatModel(eps=0.1, norm="l2", space="raw", episode_budget=0.15)):
        delta = threat.project_step(torch.randn(256, 7, generator=gen))
        spent = torch.full((256,), 0.01)
        if threat.episode_budget is not None:
            delta = threat.project(delta, None, spent)
        naive = ((x + delta) - x).to(torch.float64)
        nn_ = naive.abs().amax(1) if threat.norm == "linf" else naive.norm(dim=1)
        assert float(nn_.max()) > threat.eps + 1e-6  # the bug this guards against is real
        out = fit_float32(x, delta, threat, spent)
        rec = (out - x).to(torch.float64)
        n = rec.abs().amax(1) if threat.norm == "linf" else rec.norm(dim=1)
        assert float(n.max()) <= threat.eps
        if threat.episode_budget is not None:
            assert float(((rec**2).sum(1) + 0.01).max()) <= threat.episode_budget**2
        assert float((rec - delta).abs().max()) < 2e-4  # a few ulps, not a different attack
