"""Random, gradient (FGSM / PGD / MAD), smoothed (certify) and action attacks.

Known answers (PGD reaches the analytic optimum of ``||W delta||^2`` on a linear policy, the FGSM
step of a linear classifier, the MAD objective as half the Mahalanobis distance, NR-MDP / PR-MDP
mixing, the l1 projection), budgets checked on the recorded perturbations for random threat
models (hypothesis), batch-size invariance of attacked returns, the certify attack end to end.
"""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from certrl.attacks import ATTACKS, AttackError, ThreatModel
from certrl.attacks.action import (
    STREAM_ACTION_ATTACK,
    furthest_vertex,
    lp_norm,
    project_l1,
)
from certrl.attacks.gradient import GradientAttackHook, smoothed_attack_hooks
from certrl.envs import resolve_env
from certrl.evaluator import (
    STREAM_ATTACK,
    EpisodeResult,
    EvalConfig,
    StepContext,
    episode_rng,
    run_episodes,
)
from certrl.policies.base import Policy, build_mlp
from certrl.smoothing import GaussianSmoothing
from tests._fixtures import random_bundle, random_policy

torch.set_num_threads(1)

PENDULUM = resolve_env("pendulum")


# ====================================================================== helpers
def linear_policy(w: np.ndarray, head: str = "deterministic", log_std: float | None = None,
                  bound: float = 1.0) -> Policy:
    """``a = W s`` (deterministic head: the action representation is ``W s`` itself)."""
    k, d = w.shape
    lin = nn.Linear(d, k, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
    if head == "categorical":
        return Policy(lin, "categorical", d, n_actions=k)
    return Policy(lin, head, d, action_low=-bound * np.ones(k), action_high=bound * np.ones(k),
                  log_std=None if log_std is None else torch.full((k,), log_std))


def cartpole_controller() -> Policy:
    """A linear CartPole controller that balances for 100+ steps (push towards the lean)."""
    w = np.array([0.1, 0.3, 1.0, 0.5]) * 5.0
    return linear_policy(np.stack([-w, w]), head="categorical")


def ctx_for(policy: Policy, x: torch.Tensor, seed: int = 0, t: int = 0,
            stream: int = STREAM_ATTACK, slots: np.ndarray | None = None) -> StepContext:
    b = x.shape[0]
    return StepContext(
        policy=policy,
        episodes=np.arange(b),
        slots=np.arange(b) if slots is None else slots,
        t=np.full(b, t),
        rngs=[episode_rng(seed, i, stream) for i in range(b)],
        raw_obs=x,
        deterministic=True,
    )


def attack_once(hook: GradientAttackHook, policy: Policy, x: torch.Tensor) -> torch.Tensor:
    hook.bind(policy, PENDULUM, x.shape[0])
    hook.reset(np.arange(x.shape[0]), [])
    return hook(x, ctx_for(policy, x)) - x


def by_index(results: list[EpisodeResult]) -> list[tuple[int, float, int]]:
    return sorted((r.index, r.ret, r.length) for r in results)


# ====================================================================== registry and options
def test_registry_has_every_attack_with_its_kind():
    obs = {"random", "gaussian", "fgsm", "pgd", "mad"}
    act = {"action-gaussian", "action-uniform", "action-pr", "action-nr", "mas"}
    assert obs | act <= set(ATTACKS)
    assert {n for n in obs | act if ATTACKS[n].kind == "action"} == act
    assert all(ATTACKS[n].description for n in obs | act)
    assert ATTACKS["action-nr"].options.get("continuous_only") is True
    assert not ATTACKS["action-pr"].options.get("continuous_only")


def test_options_are_parsed_from_strings_and_checked():
    pol = random_policy("Pendulum-v1")
    th = ThreatModel(0.1)
    h = ATTACKS["pgd"].factory(th, pol, PENDULUM, steps="4", restarts="2",
                               random_start="false", step_frac="0.5", objective="kl")
    c = h.config()
    assert (c["steps"], c["restarts"], c["random_start"], c["step_frac"], c["objective"]) == (
        4, 2, False, 0.5, "kl")
    assert ATTACKS["pgd"].factory(th, pol, PENDULUM).config()["step_frac"] == pytest.approx(0.25)
    assert ATTACKS["mad"].factory(th, pol, PENDULUM).config()["objective"] == "kl"
    sm = ATTACKS["pgd"].factory(th, pol, PENDULUM, smoothing_sigma="0.2")
    assert sm.config()["eot_samples"] == 8 and sm.config()["smoothing_sigma"] == 0.2
    bad = [
        ("pgd", {"stepz": 3}, "unknown option"),
        ("pgd", {"steps": "ten"}, "not an integer"),
        ("pgd", {"steps": 0}, ">= 1"),
        ("pgd", {"objective": "max"}, "objective"),
        ("mad", {"sgld": "maybe"}, "boolean"),
        ("fgsm", {"eot_samples": 4}, "smoothing_sigma"),
        ("pgd", {"allocation": "front"}, "allocation"),
        ("gaussian", {"std": -1}, "std"),
        ("action-pr", {"alpha": 1.5}, "alpha"),
        ("action-nr", {"alpha": "x"}, "not a number"),
        ("mas", {"norm": "l3"}, "norm"),
        ("action-gaussian", {"radius": -0.1}, ">= 0"),
        ("action-uniform", {"std": 1}, "unknown option"),
        ("mas", {"critic": "dqn"}, "critic"),
    ]
    for name, opts, msg in bad:
        with pytest.raises(AttackError, match=msg):
            ATTACKS[name].factory(th, pol, PENDULUM, **opts)
    cart = random_policy("CartPole-v1")
    for name in ("action-nr", "mas", "action-gaussian", "action-uniform"):
        with pytest.raises(AttackError, match="continuous action space"):
            ATTACKS[name].factory(th, cart, resolve_env("cartpole"))


# ====================================================================== known answers
W3 = np.array([[2.0, -1.0, 0.5], [0.3, 1.5, -1.0]])


def test_pgd_linf_reaches_the_best_vertex():
    pol = linear_policy(W3, bound=100.0)
    eps = 0.1
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    hook = GradientAttackHook(ThreatModel(eps), "pgd", restarts=3)
    delta = attack_once(hook, pol, x)
    assert delta.abs().max() <= eps + 1e-6
    w = torch.as_tensor(W3, dtype=torch.float32)
    got = ((delta @ w.T) ** 2).sum(1)
    best = max(float(((torch.tensor(v) * eps @ w.T) ** 2).sum())
               for v in itertools.product([-1.0, 1.0], repeat=3))
    # the value is (W delta)^2 for every row (the policy is linear), maximal at a vertex
    assert got.min().item() == pytest.approx(best, rel=1e-4)
    assert got.max().item() <= best * (1 + 1e-5)


def test_pgd_l2_finds_the_top_singular_vector():
    pol = linear_policy(W3, bound=100.0)
    eps = 0.2
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    s_max = float(np.linalg.svd(W3, compute_uv=False)[0])
    w = torch.as_tensor(W3, dtype=torch.float32)
    # on the sphere, normalized steps of size s act like a power iteration on I + c W^T W with
    # c ~ s / (sigma^2 eps): steps of eps (not the default 2.5 eps / 10) converge in 10 steps
    hook = GradientAttackHook(ThreatModel(eps, "l2"), "pgd", step_frac=1.0, restarts=2)
    delta = attack_once(hook, pol, x)
    assert delta.norm(dim=1).max() <= eps + 1e-6
    got = ((delta @ w.T) ** 2).sum(1)
    assert got.min().item() == pytest.approx((s_max * eps) ** 2, rel=1e-3)
    assert got.max().item() <= (s_max * eps) ** 2 * (1 + 1e-5)
    v = torch.as_tensor(np.linalg.svd(W3)[2][0], dtype=torch.float32)
    assert (delta @ v).abs().min().item() == pytest.approx(eps, rel=1e-3)


def test_fgsm_step_of_a_linear_classifier_is_the_sign_of_the_weight_difference():
    w = np.array([[1.0, -2.0, 0.5, 3.0], [-1.0, 1.0, 2.0, -0.5]])
    pol = linear_policy(w, head="categorical")
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])  # clean argmax 0 and 1
    delta = attack_once(GradientAttackHook(ThreatModel(0.05), "fgsm"), pol, x)
    expected = torch.as_tensor(np.sign(np.stack([w[1] - w[0], w[0] - w[1]])), dtype=torch.float32)
    assert torch.allclose(delta, 0.05 * expected, atol=1e-7)


def test_mad_maximizes_half_the_mahalanobis_distance():
    # a diagonal linear Gaussian policy: KL = sum_i (w_i delta_i)^2 / (2 sigma^2); every vertex
    # of the cube is optimal, and deterministic sign ascent (sgld=false) reaches one
    w = np.diag([1.0, 2.0, 0.5])
    pol = linear_policy(w, head="gaussian", log_std=math.log(0.5), bound=100.0)
    eps = 0.1
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(2))
    opt = float(((np.diag(w) * eps) ** 2).sum() / (2 * 0.25))
    hook = GradientAttackHook(ThreatModel(eps), "mad", objective="kl", sgld=False)
    delta = attack_once(hook, pol, x)
    assert delta.abs().min().item() == pytest.approx(eps, abs=1e-6)  # a vertex
    assert hook._obj is not None
    kl = hook._obj.value(x + delta, hook._obj.reference(x))
    # (projections aim 5e-7 inside every limit: rounding headroom for the audit)
    assert kl.detach().numpy() == pytest.approx(np.full(6, opt), rel=3e-5)
    # with SGLD noise (SA-PPO's default) it still beats a random perturbation of the same size
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(3))
    mad = GradientAttackHook(ThreatModel(eps), "mad", objective="kl")
    rnd = GradientAttackHook(ThreatModel(eps), "random")
    d_mad, d_rnd = attack_once(mad, pol, x), attack_once(rnd, pol, x)
    assert mad._obj is not None
    ref = mad._obj.reference(x)
    kl_mad = mad._obj.value(x + d_mad, ref).mean().item()
    kl_rnd = mad._obj.value(x + d_rnd, ref).mean().item()
    assert kl_mad > 1.5 * kl_rnd
    assert kl_mad <= opt * (1 + 1e-5)


def test_random_attacks_fill_the_ball():
    pol = linear_policy(W3)
    x = torch.zeros(4000, 3)
    d = attack_once(GradientAttackHook(ThreatModel(0.5), "random"), pol, x)
    assert d.abs().max() <= 0.5 and d.abs().max() > 0.49
    assert d.mean(0).abs().max() < 0.02 and d.std(0).numpy() == pytest.approx(
        np.full(3, 0.5 / math.sqrt(3)), rel=0.05)  # uniform on [-0.5, 0.5]
    d = attack_once(GradientAttackHook(ThreatModel(0.5, "l2"), "random"), pol, x)
    r = d.norm(dim=1)
    assert r.max() <= 0.5 + 1e-6
    # uniform in the 3-ball: P(|d| <= r) = (r / 0.5)^3
    assert float((r <= 0.25).float().mean()) == pytest.approx(1 / 8, abs=0.02)
    d = attack_once(GradientAttackHook(ThreatModel(0.5), "gaussian", std=0.1), pol, x)
    assert d.std(0).numpy() == pytest.approx(np.full(3, 0.1), rel=0.05)


def test_l1_projection_is_the_euclidean_projection():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(50, 5, generator=g) * 2
    r = 1.3
    p = project_l1(x, r)
    assert lp_norm(p, "l1").max() <= r + 1e-5
    # reference: soft-thresholding at the level theta found by bisection
    for i in range(50):
        a = x[i].abs().double()
        if a.sum() <= r:
            assert torch.equal(p[i], x[i])
            continue
        lo, hi = 0.0, float(a.max())
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (a - mid).clamp_min(0).sum() > r else (lo, mid)
        ref = torch.sign(x[i]).double() * (a - lo).clamp_min(0)
        assert torch.allclose(p[i].double(), ref, atol=1e-5)


# ====================================================================== action attacks
def _act(name: str, policy: Policy, a: torch.Tensor, raw: torch.Tensor, **opts):
    hook = ATTACKS[name].factory(ThreatModel(opts.pop("eps", 0.1)), policy, PENDULUM, **opts)
    hook.bind(policy, PENDULUM, a.shape[0])
    hook.reset(np.arange(a.shape[0]), [])
    return hook, hook(a, raw, ctx_for(policy, raw, stream=STREAM_ACTION_ATTACK))


def test_nr_and_pr_mix_with_the_furthest_action():
    pol = linear_policy(np.eye(2), head="gaussian", log_std=0.0, bound=2.0)
    a = torch.tensor([[0.5, -1.0], [-2.0, 0.0], [1.9, 0.3]])
    raw = torch.zeros(3, 2)
    far = torch.tensor([[-2.0, 2.0], [2.0, 2.0], [-2.0, -2.0]])  # ties (0) go to high
    assert torch.equal(furthest_vertex(a, -2 * torch.ones(2), 2 * torch.ones(2)), far)
    _, new = _act("action-nr", pol, a, raw, alpha="0.25")
    assert torch.allclose(new, 0.75 * a + 0.25 * far)
    _, new = _act("action-pr", pol, a, raw, alpha=1.0)
    assert torch.equal(new, far)
    hook, new = _act("action-pr", pol, a, raw, alpha=0.0)
    assert torch.equal(new, a)
    # discrete: the agent's least preferred action, or another action drawn uniformly
    cat = linear_policy(np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]), head="categorical")
    obs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.2]])
    agent = torch.tensor([0, 1, 1])
    _, new = _act("action-pr", cat, agent, obs, alpha=1.0)
    assert new.tolist() == [1, 0, 0]  # argmin of the logits
    _, new = _act("action-pr", cat, agent.repeat(50), obs.repeat(50, 1), alpha=1.0,
                  target="random")
    assert (new != agent.repeat(50)).all() and set(new.tolist()) == {0, 1, 2}


def test_mas_pushes_away_inside_the_ball_and_the_bounds():
    pol = linear_policy(np.eye(3), head="gaussian", log_std=0.0, bound=1.0)
    a = torch.tensor([[0.0, 0.5, -0.9], [0.99, 0.99, 0.99]])
    raw = torch.zeros(2, 3)
    _, new = _act("mas", pol, a, raw, radius=0.3, norm="l2")
    d = new - a
    # row 0: towards the vertex (1, -1, 1) = direction (1, -1.5, 1.9), scaled to 0.3
    v = torch.tensor([1.0, -1.5, 1.9])
    assert torch.allclose(d[0], 0.3 * v / v.norm(), atol=1e-6)
    assert torch.allclose(d[1], torch.full((3,), -0.3 / math.sqrt(3)), atol=1e-6)
    _, new = _act("mas", pol, a, raw, radius=0.3, norm="l1")
    assert lp_norm(new - a, "l1").max() <= 0.3 + 1e-6
    # the l1 projection of (1, -1.5, 1.9): all budget on the largest coordinates
    assert torch.allclose((new - a)[0], torch.tensor([0.0, -0.0, 0.3]), atol=1e-6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["action-gaussian", "action-uniform", "mas"]),
    norm=st.sampled_from(["l1", "l2", "linf"]),
    radius=st.floats(0.0, 1.5),
    eps_bar=st.one_of(st.none(), st.floats(0.0, 0.5)),
    k=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_action_perturbations_respect_bounds_ball_and_coupling(name, norm, radius, eps_bar, k,
                                                               seed):
    pol = linear_policy(np.eye(k), head="gaussian", log_std=0.0, bound=1.0)
    hook = ATTACKS[name].factory(ThreatModel(radius, eps_bar=eps_bar), pol, PENDULUM, norm=norm)
    n = 3
    hook.bind(pol, PENDULUM, n)
    hook.reset(np.arange(n), [])
    g = np.random.default_rng(seed)
    rngs = [episode_rng(seed, i, STREAM_ACTION_ATTACK) for i in range(n)]
    prev_applied = None
    for t in range(6):
        a = torch.as_tensor(g.uniform(-1, 1, (n, k)), dtype=torch.float32)
        ctx = StepContext(pol, np.arange(n), np.arange(n), np.full(n, t), rngs,
                          torch.zeros(n, k), True)
        new = hook(a, a, ctx)
        assert (new.abs() <= 1.0).all()
        assert lp_norm((new - a).double(), norm).max() <= radius + 1e-6
        prev_applied = new - a
    assert prev_applied is not None
    for s in range(n):
        ex = hook.episode_extras(s)
        r = EpisodeResult(s, 0.0, 6, False, 0.0, 0, extras=ex)
        hook.audit(r)
        assert ex["act_norm_max"] <= radius + 1e-6
        if eps_bar is not None:
            assert ex["act_max_step_change"] <= eps_bar + 1e-6


# ====================================================================== budgets (hypothesis)
def _tiny_policy(d: int, discrete: bool, seed: int) -> Policy:
    torch.manual_seed(seed)
    if discrete:
        return Policy(build_mlp([d, 8, 3], "tanh"), "categorical", d, n_actions=3)
    return Policy(build_mlp([d, 8, 2], "tanh"), "gaussian", d, action_low=-np.ones(2),
                  action_high=np.ones(2), log_std=torch.full((2,), -0.5))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["random", "gaussian", "fgsm", "pgd", "mad"]),
    norm=st.sampled_from(["linf", "l2"]),
    d=st.integers(1, 6),
    eps=st.floats(0.0, 1.0),
    budget=st.one_of(st.none(), st.floats(0.0, 1.5)),
    eps_bar=st.one_of(st.none(), st.just(0.0), st.floats(0.01, 0.5)),
    allocation=st.sampled_from(["greedy", "uniform"]),
    discrete=st.booleans(),
    scale=st.sampled_from([0.1, 1.0, 1000.0]),
    seed=st.integers(0, 10_000),
)
def test_observation_attacks_never_exceed_the_threat_model(
    method, norm, d, eps, budget, eps_bar, allocation, discrete, scale, seed
):
    th = ThreatModel(eps, norm, episode_budget=budget, eps_bar=eps_bar)
    pol = _tiny_policy(d, discrete, seed)
    hook = GradientAttackHook(th, method, steps=3, allocation=allocation, horizon=8,
                              objective="kl" if method == "mad" else "action")
    n, steps = 3, 8
    hook.bind(pol, PENDULUM, n)
    hook.reset(np.arange(n), [])
    g = np.random.default_rng(seed)
    rngs = [episode_rng(seed, i, STREAM_ATTACK) for i in range(n)]
    l2sq = np.zeros(n)
    step_max = np.zeros(n)
    change = np.zeros(n)
    prev = None
    for t in range(steps):
        x = torch.as_tensor(g.uniform(-10, 10, size=(n, d)) * scale, dtype=torch.float32)
        ctx = StepContext(pol, np.arange(n), np.arange(n), np.full(n, t), rngs, x, True)
        delta = (hook(x, ctx) - x).double()  # exactly what the evaluator records
        per = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        step_max = np.maximum(step_max, per.numpy())
        l2sq += (delta**2).sum(1).numpy()
        if prev is not None:
            ch = (delta - prev).abs().amax(1) if norm == "linf" else (delta - prev).norm(dim=1)
            change = np.maximum(change, ch.numpy())
        prev = delta
    assert step_max.max() <= eps + 1e-6
    if budget is not None:
        assert np.sqrt(l2sq).max() <= budget + 1e-6
    # coupling compares two rounded perturbations: exact up to float32 rounding of x, which the
    # hook bounds per episode (coupling_rounding: a few ulps of |x|, ~1e-6 at |x| = 10)
    if eps_bar is not None:
        for s in range(n):
            ex = hook.episode_extras(s)
            assert ex["max_step_change"] == pytest.approx(change[s], rel=1e-5, abs=1e-9)
            assert ex["coupling_rounding"] <= 8 * 2.0**-23 * (10 * scale + eps) * np.sqrt(d)
            assert change[s] <= eps_bar + 1e-6 + ex["coupling_rounding"]
    for s in range(n):
        th.audit(EpisodeResult(s, 0.0, steps, False, 0.0, 0, obs_l2_total=float(np.sqrt(l2sq[s])),
                               obs_l2_max=float(step_max[s]) if norm == "l2" else 0.0,
                               obs_linf_max=float(step_max[s]) if norm == "linf" else 0.0,
                               extras=hook.episode_extras(s)))


# ====================================================================== batch invariance
@pytest.mark.parametrize(
    "env,name,threat,opts",
    [
        ("cartpole", "random", ThreatModel(0.05), {}),
        ("cartpole", "pgd", ThreatModel(0.05), {"steps": 3}),
        ("pendulum", "pgd", ThreatModel(0.3, "l2", episode_budget=1.0, eps_bar=0.1),
         {"steps": 3}),
        ("pendulum", "mad", ThreatModel(0.1), {"steps": 3}),
        ("pendulum", "action-gaussian", ThreatModel(0.5, eps_bar=0.2), {}),
        ("cartpole", "action-pr", ThreatModel(0.0), {"alpha": 0.3}),
    ],
)
def test_attacked_returns_do_not_depend_on_the_batch_size(env, name, threat, opts):
    spec = resolve_env(env, {"max_episode_steps": 30})
    pol = random_policy(spec.gym_id, seed=5)
    kind = ATTACKS[name].kind
    hook = ATTACKS[name].factory(threat, pol, spec, **opts)

    def run(bs: int) -> list[EpisodeResult]:
        h = pickle.loads(pickle.dumps(hook))  # as shipped to a worker
        kw = {"obs_hooks": [h]} if kind == "obs" else {"act_hooks": [h]}
        return run_episodes(pol, spec, list(range(6)), EvalConfig(seed=3, batch_size=bs), **kw)

    one, seven = run(1), run(7)
    assert by_index(one) == by_index(seven)
    assert [r.obs_l2_total for r in sorted(one, key=lambda r: r.index)] == [
        r.obs_l2_total for r in sorted(seven, key=lambda r: r.index)]
    for r in one:
        if kind == "obs":
            threat.audit(r)
        else:
            hook.audit(r)
    if name in ("pgd", "action-gaussian"):  # the attack acts on every step
        clean = run_episodes(pol, spec, list(range(6)), EvalConfig(seed=3, batch_size=7))
        assert by_index(clean) != by_index(one)
    if name == "action-pr":
        rep = sum(r.extras["act_replaced"] for r in one)
        steps = sum(r.extras["act_steps"] for r in one)
        assert steps == sum(r.length for r in one)
        assert 0.15 < rep / steps < 0.45  # alpha = 0.3


# ====================================================================== certify attack
def test_smoothed_attack_respects_the_budget_and_lowers_the_smoothed_return():
    spec = resolve_env("cartpole", {"max_episode_steps": 100})
    pol = cartpole_controller()
    sigma, budget, eps = 0.1, 1.5, list(range(8))
    hooks = smoothed_attack_hooks(pol, sigma, "raw", budget, spec.horizon)
    assert len(hooks) == 2 and isinstance(hooks[1], GaussianSmoothing)
    assert hooks[0].adversarial and not hooks[1].adversarial
    assert hooks[0].space == hooks[1].space == "raw"
    assert hooks[0].rng_stream != hooks[1].rng_stream
    cfg = EvalConfig(seed=0, batch_size=8)
    clean = run_episodes(pol, spec, eps, cfg, obs_hooks=[GaussianSmoothing(sigma, "raw")])
    attacked = run_episodes(pol, spec, eps, cfg, obs_hooks=hooks)
    th = ThreatModel(budget, "l2", "raw", episode_budget=budget)
    rnd = GradientAttackHook(th, "random", allocation="uniform", horizon=spec.horizon)
    random_ = run_episodes(pol, spec, eps, cfg, obs_hooks=[rnd, GaussianSmoothing(sigma, "raw")])
    for r in attacked + random_:
        th.audit(r)
    # the uniform allocation spends (almost) all of B on episodes that reach the horizon
    full = [r.obs_l2_total for r in attacked if r.length == 100]
    assert all(budget - 0.05 < v <= budget + 1e-6 for v in full)
    m_clean = np.mean([r.ret for r in clean])
    m_att = np.mean([r.ret for r in attacked])
    m_rnd = np.mean([r.ret for r in random_])
    assert m_clean == 100.0  # the controller balances under smoothing noise
    assert m_att <= m_clean - 10  # measured 76.5
    assert m_att <= m_rnd - 10  # random noise of the same budget does nothing here (100)


def test_certify_runs_the_smoothed_attack_at_every_budget(tmp_path):
    from certrl.cli import main
    from certrl.results import load_results

    pol = random_bundle(tmp_path, "CartPole-v1", normalize=False)
    out = tmp_path / "res"
    rc = main(["certify", str(pol), "--env", "cartpole", "--sigma", "0.1", "--episodes", "12",
               "--budgets", "0,0.2,0.5", "--workers", "1", "--attack-episodes", "3",
               "--out", str(out)])
    assert rc == 0
    rows = load_results(out / "CartPole-v1_policy.json")["certificates"]["budgets"]
    assert rows[0]["attack"] is None  # B = 0: nothing to attack
    for row in rows[1:]:
        att = row["attack"]
        assert att["name"] == "smoothed-pgd" and att["episodes"] == 3
        assert len(att["returns"]) == 3 and att["mean"] == pytest.approx(np.mean(att["returns"]))
        c = att["config"]
        assert c["threat"]["episode_budget"] == row["budget"] and c["threat"]["norm"] == "l2"
        assert c["allocation"] == "uniform" and c["horizon"] == 500 and c["eot_samples"] == 8


def test_critic_adversaries_minimize_the_learned_q(tmp_path):
    spec = resolve_env("pendulum", {"max_episode_steps": 20})
    pol = random_policy(spec.gym_id, seed=5)
    opts = {"critic": "sarsa", "critic_samples": "512", "critic_train_steps": "40",
            "cache_dir": str(tmp_path)}  # the second factory loads the first one's critic
    mas = ATTACKS["mas"].factory(ThreatModel(0.5), pol, spec, **opts)
    assert mas.critic is not None and mas.config()["critic"]["kind"] == "sarsa"
    mas = pickle.loads(pickle.dumps(mas))  # the critic's network is rebuilt in bind
    mas.bind(pol, spec, 8)
    mas.reset(np.arange(8), [])
    g = torch.Generator().manual_seed(6)
    raw = torch.randn(8, 3, generator=g)
    a = torch.rand(8, 1, generator=g) * 4 - 2
    new = mas(a, raw, ctx_for(pol, raw, stream=STREAM_ACTION_ATTACK))
    assert lp_norm(new - a, "l2").max() <= 0.5 + 1e-6 and (new.abs() <= 2).all()
    crit = mas.critic
    q0 = crit._qvals(pol, raw, crit._unit(pol, a))
    q1 = crit._qvals(pol, raw, crit._unit(pol, new))
    assert (q1 <= q0 + 1e-6).all() and (q1 < q0 - 1e-4).float().mean() > 0.5
    # the PR adversary plays argmin_a Q over the box: on this 1-d box, the grid minimum
    pr = ATTACKS["action-pr"].factory(ThreatModel(0.0), pol, spec, alpha=1.0, **opts)
    pr.bind(pol, spec, 8)
    pr.reset(np.arange(8), [])
    adv = pr(a, raw, ctx_for(pol, raw, stream=STREAM_ACTION_ATTACK))
    assert pr.critic is not None and pr.critic.info["cached"]
    crit = pr.critic
    q_adv = crit._qvals(pol, raw, crit._unit(pol, adv))
    grid = torch.linspace(-2, 2, 401)
    q_grid = torch.stack([crit._qvals(pol, raw, crit._unit(pol, torch.full_like(a, float(v))))
                          for v in grid], 1)
    assert (q_adv <= q_grid.min(1).values + 1e-3).all()
    assert (q_adv <= crit._qvals(pol, raw, crit._unit(pol, a)) + 1e-6).all()


# ====================================================================== closed-form gradients
@pytest.mark.parametrize("head,squash,act,out_act", [
    ("gaussian", False, "tanh", None),
    ("gaussian", True, "tanh", None),
    ("deterministic", False, "relu", "tanh"),
    ("linear", False, "relu", None),
])
@pytest.mark.parametrize("rows", [3, 40])
def test_fast_action_gradient_equals_autograd(head, squash, act, out_act, rows):
    """The closed-form PGD objective and gradient for MLP policies match autograd through
    ``action_repr`` (the general path), including the clamp of unsquashed heads and padding."""
    from certrl.attacks.gradient import FastActionGrad
    from certrl.attacks.learned import action_repr

    torch.manual_seed(0)
    net = build_mlp([5, 16, 16, 2], act, out_act)
    with torch.no_grad():  # large outputs, so the action clamp and tanh saturation are hit
        net[-1 if out_act is None else -2].weight.mul_(4.0)
    pol = Policy(net, head, 5, action_low=np.array([-1.0, -0.5]),
                 action_high=np.array([1.0, 2.0]), squash=squash,
                 log_std=torch.zeros(2) if head == "gaussian" else None)
    fast = FastActionGrad.build(pol, "action")
    assert fast is not None
    z = torch.randn(rows, 5) * 2
    ref = torch.rand(rows, 2) * 2 - 1
    v, g = fast.value_grad(z, ref)
    zz = z.clone().requires_grad_(True)
    with torch.enable_grad():
        v_ag = ((action_repr(pol, zz) - ref) ** 2).sum(-1)
        (g_ag,) = torch.autograd.grad(v_ag.sum(), zz)
    assert torch.allclose(v, v_ag.detach(), rtol=1e-5, atol=1e-6)
    assert torch.allclose(g, g_ag, rtol=1e-4, atol=1e-6)
    assert torch.allclose(fast.value(z, ref), v, rtol=0, atol=0)
    assert FastActionGrad.build(pol, "kl") is None  # KL objectives keep autograd


def test_fast_path_pgd_is_batch_invariant_on_hopper():
    """PGD with the closed-form gradient gives the same attacked returns at batch 1 and 5."""
    spec = resolve_env("hopper", {"max_episode_steps": 60})
    pol = random_policy("Hopper-v5", seed=3)
    th = ThreatModel(0.1, "linf", "normalized")
    res = []
    for bs in (1, 5):
        hook = ATTACKS["pgd"].factory(th, pol, spec)
        out = run_episodes(pol, spec, list(range(5)), EvalConfig(seed=4, batch_size=bs),
                           obs_hooks=[hook])
        assert hook._obj is not None and hook._obj.fast is not None  # the closed-form path
        assert max(r.obs_linf_max for r in out) > 0.09  # it attacked
        res.append(by_index(out))
    assert res[0] == res[1]
