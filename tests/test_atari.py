"""Atari environments: SB3-equivalent preprocessing, Kumar et al.'s variants, per-frame
smoothing, and the certificate pipeline on short pixel runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("ale_py")
pytest.importorskip("cv2")

from certrl.atari import AtariPixels  # noqa: E402
from certrl.envs import resolve_env  # noqa: E402
from certrl.evaluator import (  # noqa: E402
    STREAM_SMOOTHING,
    EvalConfig,
    ObservationHook,
    StepContext,
    episode_rng,
    run_episodes,
)
from certrl.smoothing import FrameSmoothing, GaussianSmoothing, smoothing_hook  # noqa: E402


def _sb3_stack(make, seed: int, sticky: float = 0.0):
    """SB3's evaluation stack on ``make()``: AtariWrapper (no life-loss terminal, no reward
    clipping, sticky actions ``sticky``) + VecFrameStack(4) + VecTransposeImage."""
    pytest.importorskip("stable_baselines3")
    from stable_baselines3.common.atari_wrappers import AtariWrapper
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

    venv = VecTransposeImage(VecFrameStack(DummyVecEnv([
        lambda: AtariWrapper(make(), terminal_on_life_loss=False, clip_reward=False,
                             action_repeat_probability=sticky)]), 4))
    venv.seed(seed)
    return venv


@pytest.mark.parametrize("game,sticky", [("pong", 0.0), ("freeway", 0.0), ("pong", 0.25)])
def test_preprocessing_equals_sb3_wrappers(game: str, sticky: float) -> None:
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    name = {"pong": "Pong", "freeway": "Freeway"}[game]

    def make():
        return gym.make(f"ALE/{name}-v5", frameskip=1, repeat_action_probability=0.0,
                        full_action_space=False, max_num_frames_per_episode=108_000)

    ours = AtariPixels(game=game, repeat_action_probability=sticky)
    # a used environment: certrl re-seeds without reloading the ROM, which must not matter
    ours.reset(seed=99)
    for _ in range(50):
        ours.step(1)
    for seed in (7, 8):
        venv = _sb3_stack(make, seed, sticky)
        theirs = venv.reset()[0]
        mine, _ = ours.reset(seed=seed)
        assert mine.shape == theirs.shape == (4, 84, 84) and mine.dtype == np.uint8
        assert np.array_equal(mine, theirs)
        assert not mine[:3].any() and mine[3].any()  # zero padding before the first frame
        rng = np.random.default_rng(seed)
        for t in range(250):
            a = int(rng.integers(ours.action_space.n))
            mine, r, te, tr, _ = ours.step(a)
            theirs, r2, done, _ = venv.step(np.array([a]))
            assert r == r2[0], t
            assert not (te or tr or done[0])
            assert np.array_equal(mine, theirs[0]), f"seed {seed} step {t}"
        venv.close()
    ours.close()


def test_one_round_pong_ends_at_the_first_point_with_a_win_indicator() -> None:
    full = AtariPixels(game="pong", repeat_action_probability=0.25)
    one = resolve_env("pong-one-round").make()
    o1, _ = full.reset(seed=3)
    o2, _ = one.reset(seed=3)
    assert np.array_equal(o1, o2)
    steps = 0
    while True:
        o1, r1, te1, _, _ = full.step(0)
        o2, r2, te2, _, _ = one.step(0)
        steps += 1
        assert np.array_equal(o1, o2)
        if r1 != 0:
            assert te2 and not te1
            assert r2 == (1.0 if r1 > 0 else 0.0)
            break
        assert r2 == 0 and not te2
        assert steps < 5000, "no point in 5000 steps"
    assert steps > 20  # a real rally, not an immediate end


def test_atari_env_specs_and_table() -> None:
    from certrl.envs import env_table

    spec = resolve_env("pong-one-round")
    assert spec.frame_stack == 4 and spec.return_bounds == (0.0, 1.0)
    assert spec.bounds_kind == "exact" and spec.default_eps == pytest.approx(1 / 255)
    assert resolve_env("freeway-250").horizon == 250
    assert resolve_env("pong").return_bounds == (-21.0, 21.0)
    rows = {r["alias"]: r for r in env_table()}
    assert rows["pong"]["obs_shape"] == [4, 84, 84] and rows["pong"]["obs_dim"] == 28224
    assert rows["freeway-250"]["action"] == "Discrete(3)"
    env = resolve_env("freeway-250").make()
    assert env.unwrapped.sticky == 0.25  # SB3 StickyActionEnv rule, applied by certrl
    assert env.spec.max_episode_steps == 250
    env.close()
    env = resolve_env("pong").make()
    assert env.unwrapped.sticky == 0.0
    env.close()


def test_lattice_band_for_integer_scores() -> None:
    from certrl.pipeline.certify import return_lattice

    assert list(return_lattice(resolve_env("pong-one-round"))) == [1.0]
    assert len(return_lattice(resolve_env("pong"))) == 42
    assert return_lattice(resolve_env("freeway-250")) is None  # 250 thresholds: not worth it


# ------------------------------------------------------------------ per-frame smoothing
class _P:
    obs_dim = 12


def _ctx(slots, t):
    return StepContext(policy=None, episodes=np.asarray(slots), slots=np.asarray(slots),  # type: ignore[arg-type]
                       t=np.asarray(t), rngs=[], raw_obs=torch.zeros(len(slots), 12),
                       deterministic=True)


def test_frame_smoothing_reuses_each_frames_noise_and_skips_padding() -> None:
    sigma, k, f = 0.5, 3, 4
    hook = FrameSmoothing(sigma, "normalized", frame_stack=k)
    hook.bind(_P(), None, n_slots=2)  # type: ignore[arg-type]
    gens = [episode_rng(0, e, STREAM_SMOOTHING) for e in (10, 11)]
    hook.reset(np.array([0, 1]), gens)
    expect = [episode_rng(0, e, STREAM_SMOOTHING).standard_normal((6, f)).astype(np.float32)
              for e in (10, 11)]
    x = torch.zeros(2, k * f)
    noises = []
    for t in range(6):
        out = (hook(x, _ctx([0, 1], [t, t])) / sigma).numpy().reshape(2, k, f)
        noises.append(out)
        for row in range(2):
            for j in range(k):
                frame_t = t - (k - 1 - j)  # the step whose frame sits in stack slot j
                want = expect[row][frame_t] if frame_t >= 0 else np.zeros(f, np.float32)
                np.testing.assert_allclose(out[row, j], want, rtol=0, atol=1e-6)
    # slot 1 alone, in a batch of its own, sees exactly the same noise (batch invariance)
    solo = FrameSmoothing(sigma, "normalized", frame_stack=k)
    solo.bind(_P(), None, n_slots=1)  # type: ignore[arg-type]
    solo.reset(np.array([0]), [episode_rng(0, 11, STREAM_SMOOTHING)])
    for t in range(6):
        out = (solo(torch.zeros(1, k * f), _ctx([0], [t])) / sigma).numpy().reshape(k, f)
        np.testing.assert_array_equal(out, noises[t][1])


def test_smoothing_hook_picks_the_unit() -> None:
    pong, cart = resolve_env("pong-one-round"), resolve_env("cartpole")
    assert isinstance(smoothing_hook(0.1, "normalized", pong), FrameSmoothing)
    h = smoothing_hook(0.1, "normalized", pong, "input")
    assert type(h) is GaussianSmoothing
    assert type(smoothing_hook(0.1, "raw", cart)) is GaussianSmoothing
    with pytest.raises(ValueError, match="stack of frames"):
        smoothing_hook(0.1, "raw", cart, "frame")


# ------------------------------------------------------------------ pipeline on pixels
def _cnn_bundle(tmp_path, seed: int = 0):
    from torch import nn

    from certrl.policies import load_policy
    from certrl.policies.bundle import save_cnn_bundle

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(4, 8, 8, stride=4), nn.ReLU(), nn.Conv2d(8, 8, 4, stride=2),
                        nn.ReLU(), nn.Flatten(), nn.Linear(648, 32), nn.ReLU(),
                        nn.Linear(32, 6))
    path = save_cnn_bundle(tmp_path / "cnn", net=net, obs_shape=(4, 84, 84), n_actions=6,
                           head="categorical", env_id="certrl/PongOneRound-v0")
    return path, net, load_policy(str(path))


def test_cnn_bundle_round_trip(tmp_path) -> None:
    path, net, policy = _cnn_bundle(tmp_path)
    x = torch.randint(0, 256, (5, 4 * 84 * 84)).float()
    want = net(x.reshape(5, 4, 84, 84) / 255.0)
    np.testing.assert_allclose(policy.head_output(policy.normalize(x)).detach().numpy(),
                               want.detach().numpy(), atol=1e-6)
    assert policy.obs_shape == (4, 84, 84) and policy.obs_norm.is_pixel_scale
    assert policy.info.format == "certrl-cnn"


def test_smoothed_pixel_episodes_batch_invariant(tmp_path) -> None:
    _, _, policy = _cnn_bundle(tmp_path)
    spec = resolve_env("pong-one-round")
    runs = []
    for width in (3, 20):  # 20 live rows: above the policy's 16-row padding (unpadded convs)
        hook = FrameSmoothing(0.1, "normalized", 4)
        res = run_episodes(policy, spec, list(range(20)), EvalConfig(seed=4, batch_size=width),
                           obs_hooks=[hook])
        runs.append(sorted((r.index, r.ret, r.length) for r in res))
    assert runs[0] == runs[1]
    assert all(length > 10 for _, _, length in runs[0])
    assert len({length for _, _, length in runs[0]}) > 1  # episodes differ


def test_certify_on_pong_one_round_matches_the_closed_form(tmp_path) -> None:
    from scipy.stats import norm
    from statsmodels.stats.proportion import proportion_confint

    from certrl import api

    path, _, _ = _cnn_bundle(tmp_path)
    res = api.certify(str(path), "pong-one-round", sigma=0.1, budgets=(0.0, 0.05, 0.2),
                      episodes=12, clean_episodes=4, attack_episodes=4, workers=1,
                      batch_size=6, out=tmp_path / "out")
    sec = res.to_json()
    assert sec["smoothing"] == {"unit": "frame", "frame_stack": 4, "values_per_unit": 7056}
    assert sec["band"]["method"] == "clopper-pearson-grid-bonferroni"
    wins = int(np.sum(np.asarray(sec["smoothed_returns"]) >= 1))
    p = proportion_confint(wins, 12, alpha=0.1, method="beta")[0] if wins else 0.0
    for row in sec["budgets"]:
        b = row["budget"]
        want = norm.cdf(norm.ppf(p) - b / 0.1) if p > 0 else 0.0
        assert row["expected_return_lower_bound"] == pytest.approx(want, abs=1e-9)
        if b > 0:  # the per-frame adversary of this threat model, audited at B
            att = row["attack"]
            assert att["name"] == "smoothed-pgd-frames" and att["episodes"] == 4
            assert att["config"]["unit"] == "frame" and att["config"]["frame_stack"] == 4
        else:
            assert row["attack"] is None
    assert "each new frame" in sec["statement"]
    assert all(math.isfinite(v) for v in sec["smoothed_returns"])


# ------------------------------------------------------------------ the per-frame adversary
class _Recorder(ObservationHook):
    """Records, per episode and step, what the hooks before it added to the clean stack."""

    adversarial = False
    rng_stream = 97

    def __init__(self) -> None:
        self.deltas: dict[int, dict[int, np.ndarray]] = {}

    def bind(self, policy, spec, n_slots) -> None:
        self.policy = policy

    def __call__(self, x, ctx):
        clean = self.policy.normalize(ctx.raw_obs)
        for row, (ep, t) in enumerate(zip(ctx.episodes, ctx.t, strict=True)):
            self.deltas.setdefault(int(ep), {})[int(t)] = (x[row] - clean[row]).numpy()
        return x


def test_frame_attack_perturbs_each_frame_once_within_its_budget(tmp_path) -> None:
    from certrl.attacks.base import ThreatModel
    from certrl.attacks.gradient import smoothed_attack_hooks

    _, _, policy = _cnn_bundle(tmp_path)
    spec = resolve_env("pong-one-round")
    budget, k = 0.5, 4
    attack, smooth = smoothed_attack_hooks(policy, 0.1, "normalized", budget, 40,
                                           steps=3, eot_samples=2, frame_stack=k)
    assert isinstance(smooth, FrameSmoothing) and attack.frame_stack == k
    rec = _Recorder()
    res = run_episodes(policy, spec, [0, 1, 2], EvalConfig(seed=3, batch_size=2),
                       obs_hooks=[attack, rec, smooth])
    threat = ThreatModel(eps=budget, norm="l2", space="normalized", episode_budget=budget)
    for r in res:
        threat.audit(r)
        d = rec.deltas[r.index]
        assert sorted(d) == list(range(r.length))
        frames = {t: d[t].reshape(k, -1) for t in d}
        for t, f in frames.items():
            for j in range(k - 1):  # stack slot j holds the frame that was newest at t-(k-1-j)
                s = t - (k - 1 - j)
                want = frames[s][-1] if s >= 0 else np.zeros_like(f[j])
                np.testing.assert_array_equal(f[j], want)
        # the episode's budget is the newest frames' perturbations, each counted once
        newest = math.sqrt(sum(float(np.sum(f[-1].astype(np.float64) ** 2))
                               for f in frames.values()))
        assert r.obs_l2_total == pytest.approx(newest, rel=1e-6)
        # the uniform allocation over 40 steps spends all of B in these longer episodes (a
        # hook that also charged itself for the older frames would stop near B / 2)
        assert r.length > 40
        assert budget - 1e-5 < r.obs_l2_total <= budget + 1e-6


def test_frame_attack_is_batch_width_invariant(tmp_path) -> None:
    """The same episodes give bit-identical attacked episodes whatever the lockstep width
    (the EOT mean sums draw by draw: a mean over [draws, batch] depends on the batch)."""
    from certrl.attacks.gradient import smoothed_attack_hooks

    _, _, policy = _cnn_bundle(tmp_path)
    spec = resolve_env("pong-one-round")
    runs = []
    for width in (1, 3):
        hooks = smoothed_attack_hooks(policy, 0.1, "normalized", 0.5, 40, steps=2,
                                      eot_samples=8, frame_stack=4)
        res = run_episodes(policy, spec, [0, 1, 2], EvalConfig(seed=3, batch_size=width),
                           obs_hooks=hooks)
        runs.append(sorted((r.index, r.ret, r.length, r.obs_l2_total.hex()) for r in res))
    assert runs[0] == runs[1]


class _Shift(ObservationHook):
    """A per-frame adversary adding ``c`` to frames: ``mode`` ``all`` (the whole stack,
    padding included), ``newest`` (the newest frame only, older frames shown clean) or
    ``consistent`` (every real frame: each frame shifted once, shown shifted later)."""

    frame_stack = 4
    adversarial = True

    def __init__(self, c: float, mode: str) -> None:
        self.c, self.mode = c, mode

    def __call__(self, x, ctx):
        k = self.frame_stack
        f = x.reshape(x.shape[0], k, -1).clone()
        for row, t in enumerate(ctx.t):
            for j in range(k):
                real = t - (k - 1 - j) >= 0
                if self.mode == "all" or j == k - 1 or (self.mode == "consistent" and real):
                    f[row, j] += self.c
        return f.reshape(x.shape[0], -1)


def test_evaluator_counts_the_newest_frame_and_rejects_rewriting_old_frames(tmp_path) -> None:
    from certrl.errors import EvaluationError

    _, _, policy = _cnn_bundle(tmp_path)
    spec = resolve_env("pong-one-round")
    c = 1e-3
    (r,) = run_episodes(policy, spec, [0], EvalConfig(seed=0),
                        obs_hooks=[_Shift(c, "consistent")])
    # every frame counted once, when newest: c * sqrt(7056 pixels * T frames)
    assert r.obs_l2_total == pytest.approx(c * math.sqrt(7056 * r.length), rel=1e-4)
    assert r.obs_l2_max == pytest.approx(c * 84, rel=1e-4)
    with pytest.raises(EvaluationError, match=r"already perturbed \(episode 0, step 0\)"):
        run_episodes(policy, spec, [0], EvalConfig(seed=0), obs_hooks=[_Shift(c, "all")])
    with pytest.raises(EvaluationError, match=r"already perturbed \(episode 0, step 1\)"):
        run_episodes(policy, spec, [0], EvalConfig(seed=0), obs_hooks=[_Shift(c, "newest")])



def test_evaluator_refuses_a_per_frame_adversary_on_other_frames(tmp_path) -> None:
    """A hook's frame_stack must be the environment's: else it could leave part of what it
    adds out of the audited budget (declared frames that are not frames)."""
    from certrl.errors import EvaluationError
    from certrl.policies import load_policy

    cart = resolve_env("cartpole")
    policy = load_policy("demo:cartpole-noisy")
    hook = _Shift(1e-3, "consistent")
    hook.frame_stack = 2
    with pytest.raises(EvaluationError, match="no frame stacks"):
        run_episodes(policy, cart, [0], EvalConfig(seed=0), obs_hooks=[hook])
    _, _, cnn = _cnn_bundle(tmp_path)
    with pytest.raises(EvaluationError, match="stacks of 2 frames, but .* stacks of 4"):
        run_episodes(cnn, resolve_env("pong-one-round"), [0], EvalConfig(seed=0),
                     obs_hooks=[hook])


def test_attack_option_unit_frame(tmp_path) -> None:
    """``certrl attack --opt unit=frame``: the per-frame adversary, on Atari only."""
    from certrl.attacks.base import AttackError, ThreatModel
    from certrl.attacks.gradient import build_gradient_attack

    _, _, policy = _cnn_bundle(tmp_path)
    threat = ThreatModel(eps=1.0, norm="l2", space="normalized", episode_budget=1.0)
    hook = build_gradient_attack("pgd", threat, policy, resolve_env("pong-one-round"),
                                 {"unit": "frame"})
    assert hook.frame_stack == 4 and hook.config()["unit"] == "frame"
    assert build_gradient_attack("pgd", threat, policy, resolve_env("pong-one-round"),
                                 {}).frame_stack == 0
    with pytest.raises(AttackError, match="frame-stacked"):
        build_gradient_attack("pgd", threat, policy, resolve_env("cartpole"), {"unit": "frame"})
    with pytest.raises(AttackError, match="unit must be"):
        build_gradient_attack("pgd", threat, policy, resolve_env("pong-one-round"),
                              {"unit": "pixel"})
