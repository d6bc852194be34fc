"""Tests for certrl.certificates.propagation (IBP / CROWN output bounds of MLP policies).

Soundness is checked against the float32 policy itself: random and vertex points of each
threat ball and PGD with restarts must stay inside the certified bounds; exactness, tightness
(CROWN vs IBP), monotonicity and batch invariance are checked with concrete numbers.
"""

from __future__ import annotations

import functools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn

from certrl.certificates.propagation import (
    BoundError,
    Layer,
    action_deviation_bounds,
    extract_mlp,
    greedy_action_certified,
    output_bounds,
    pgd_max_deviation,
    relaxation,
)
from certrl.policies._nets import GaussianActor
from certrl.policies.base import ObsNormalization, Policy, build_mlp
from certrl.policies.loader import load_policy

ACTS = ("tanh", "relu", "elu", "leaky_relu", "sigmoid")
HEADS = ("gaussian", "squash", "deterministic", "categorical")
CLIP = 3.0  # normalization clip of the random policies: states near it exercise the clamp


# -------------------------------------------------------------------------------- helpers
def make_policy(act: str, head: str, seed: int = 0, obs_dim: int = 5, hidden: int = 12,
                out: int = 3, normalize: bool = True, gain: float = 2.0) -> Policy:
    """A random MLP policy; weights scaled by ``gain`` so that activations are nonlinear."""
    torch.manual_seed(seed)
    net = build_mlp([obs_dim, hidden, hidden, out], act,
                    "tanh" if head == "deterministic" else None)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(gain)
                m.bias.uniform_(-0.5, 0.5)
    rng = np.random.default_rng(seed)
    norm = (ObsNormalization(rng.normal(size=obs_dim), rng.uniform(0.3, 2.0, obs_dim), clip=CLIP)
            if normalize else None)
    if head == "categorical":
        return Policy(net, "categorical", obs_dim, n_actions=out, obs_norm=norm)
    low = np.array([-1.0, -2.0, 0.5][:out] + [-1.0] * max(0, out - 3))
    high = np.array([1.0, 3.0, 1.0][:out] + [1.0] * max(0, out - 3))
    if head == "squash":
        return Policy(net, "gaussian", obs_dim, action_low=low, action_high=high, squash=True,
                      obs_norm=norm)
    return Policy(net, "deterministic" if head == "deterministic" else "gaussian", obs_dim,
                  action_low=low, action_high=high, obs_norm=norm,
                  log_std=torch.zeros(out) if head == "gaussian" else None)


def states(policy: Policy, n: int, space: str, seed: int) -> torch.Tensor:
    """States in the threat space; in raw space half of them have coordinates near the
    normalization clip (inside or beyond it) so that the clamp is active inside the ball."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, policy.obs_dim, generator=g) * 1.5
    if space == "normalized" or policy.obs_norm is None:
        return z
    near = torch.rand(n, policy.obs_dim, generator=g) < 0.5
    # |z| in [clip - 0.3, clip + 0.3]: the ball straddles the clip, or lies beyond it
    edge = torch.sign(torch.randn(n, policy.obs_dim, generator=g)) * (
        CLIP + 0.6 * (torch.rand(n, policy.obs_dim, generator=g) - 0.5))
    z = torch.where(near & (torch.arange(n)[:, None] % 2 == 0), edge, z)
    return policy._mu + policy._scale * z


def ball_points(x: torch.Tensor, eps: float, norm: str, k: int, seed: int) -> torch.Tensor:
    """``[k, N, d]`` points of each ball: uniform inside, plus vertices (linf) or sphere
    points (l2)."""
    g = torch.Generator().manual_seed(seed)
    n, d = x.shape
    if norm == "linf":
        inside = (torch.rand(k // 2, n, d, generator=g) * 2 - 1) * eps
        vertex = torch.sign(torch.rand(k - k // 2, n, d, generator=g) - 0.5) * eps
        delta = torch.cat([inside, vertex])
    else:
        u = torch.randn(k, n, d, generator=g)
        u = u / u.norm(dim=-1, keepdim=True)
        r = torch.rand(k, n, 1, generator=g) ** (1.0 / d)
        r[: k // 2] = 1.0  # on the sphere
        delta = u * r * eps * (1 - 1e-6)
    return x[None] + delta


def head_and_action(policy: Policy, pts: torch.Tensor, space: str):
    flat = pts.reshape(-1, pts.shape[-1]).to(torch.float32)
    with torch.no_grad():
        z = policy.normalize(flat) if space == "raw" else flat
        y = policy.head_output(z).double().reshape(*pts.shape[:2], -1)
        a = policy.act_normalized(z).double()
    return y, a.reshape(*pts.shape[:2], *a.shape[1:])


def check_sound(policy: Policy, x: torch.Tensor, eps: float, norm: str, space: str, method: str,
                seed: int, pgd_restarts: int = 3, pgd_steps: int = 15, k: int = 64) -> None:
    """Random / vertex points inside the bounds; PGD never beats the certificate."""
    ob = output_bounds(policy, x, eps, norm, space, method)
    assert torch.all(ob.lower <= ob.nominal) and torch.all(ob.nominal <= ob.upper)
    pts = ball_points(x.double(), eps, norm, k, seed)
    y, a = head_and_action(policy, pts, space)
    assert torch.all(y >= ob.lower[None]), float((ob.lower[None] - y).max())
    assert torch.all(y <= ob.upper[None]), float((y - ob.upper[None]).max())
    pgd = pgd_max_deviation(policy, x, eps, norm, space, steps=pgd_steps,
                            restarts=pgd_restarts, seed=seed)
    if policy.discrete:
        cert = greedy_action_certified(policy, x, eps, norm, space, method)
        assert not torch.any(cert.certified & pgd.changed)
        assert not torch.any(cert.certified[None] & (a != cert.action[None]))
        assert torch.all(pgd.margin >= cert.margin - 1e-12)
        return
    ab = action_deviation_bounds(policy, x, eps, norm, space, method)
    assert torch.all(a >= ab.lower[None]) and torch.all(a <= ab.upper[None])
    dev = (a - ab.nominal[None]).abs()
    assert torch.all(dev <= ab.deviation[None])
    assert torch.all(dev.norm(dim=-1) <= ab.l2[None])
    assert pgd.deviation is not None and pgd.l2 is not None
    assert torch.all(pgd.deviation <= ab.deviation), float((pgd.deviation - ab.deviation).max())
    assert torch.all(pgd.l2 <= ab.l2)


@functools.cache
def demo(name: str) -> Policy:
    return load_policy(f"demo:{name}")


@functools.cache
def rollout_states(name: str, steps: int) -> torch.Tensor:
    """Raw observations visited by the demo policy (deterministic, seed 0)."""
    policy = demo(name)
    env = gym.make({"hopper": "Hopper-v5", "cartpole": "CartPole-v1",
                    "pendulum": "Pendulum-v1"}[name])
    obs, _ = env.reset(seed=0)
    out = []
    for i in range(steps):
        out.append(np.asarray(obs, dtype=np.float32))
        obs, _, term, trunc, _ = env.step(policy.predict(obs))
        if term or trunc:
            obs, _ = env.reset(seed=i + 1)
    env.close()
    return torch.as_tensor(np.stack(out))


def hopper_states(n: int = 200) -> torch.Tensor:
    """Normalized observations visited by demo:hopper."""
    p = demo("hopper")
    return p.normalize(rollout_states("hopper", n))


# ----------------------------------------------------------------------------- relaxations
@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(["tanh", "sigmoid", "relu", "leaky_relu", "elu", "clamp"]),
       l0=st.floats(-8, 8), w=st.floats(0, 12))
@example(kind="clamp", l0=-3.0, w=7.0)  # both kinks: the max of sigma - k z is at hi
@example(kind="clamp", l0=-3.0, w=4.0)
@example(kind="clamp", l0=0.0, w=4.0)
@example(kind="tanh", l0=-2.0, w=5.0)  # mixed: tangent through (l, tanh l) above
@example(kind="sigmoid", l0=-0.3, w=6.0)
@example(kind="elu", l0=-4.0, w=4.5)
@example(kind="leaky_relu", l0=-1.0, w=3.0)
def test_relaxations_enclose_the_activation(kind: str, l0: float, w: float) -> None:
    clamp = kind == "clamp"
    layer = Layer(kind, alpha={"leaky_relu": 0.1, "elu": 0.7}.get(kind, 0.0),
                  lo=-1.5 if clamp else -math.inf, hi=2.0 if clamp else math.inf)
    l, u = torch.tensor([l0], dtype=torch.float64), torch.tensor([l0 + w], dtype=torch.float64)
    al, cl, au, cu = relaxation(layer, l, u)
    z = torch.linspace(l0, l0 + w, 4001, dtype=torch.float64)
    f = torch.nn.functional
    fz = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu,
          "leaky_relu": lambda t: f.leaky_relu(t, 0.1), "elu": lambda t: f.elu(t, 0.7),
          "clamp": lambda t: torch.clamp(t, -1.5, 2.0)}[kind](z)
    assert torch.all(al * z + cl <= fz) and torch.all(fz <= au * z + cu)
    # the intercepts are the tightest for the slopes: each line touches sigma (up to the grid)
    step = w / 4000
    assert float((au * z + cu - fz).min()) <= 1e-12 + step * float(au.abs().max() + 1)
    assert float((fz - al * z - cl).min()) <= 1e-12 + step * float(al.abs().max() + 1)


def test_tanh_mixed_relaxation_is_the_crown_tangent() -> None:
    """l < 0 < u with sigma'(u) < chord slope: the upper line is the tangent through
    (l, tanh(l)) (Zhang et al. 2018), not the chord (which would cut through tanh)."""
    layer = Layer("tanh")
    l = torch.tensor([-2.0, -0.5], dtype=torch.float64)
    u = torch.tensor([3.0, 0.5], dtype=torch.float64)
    al, cl, au, cu = relaxation(layer, l, u)
    # through (l, tanh(l)) up to the bisection tolerance (10 steps; never below: sound)
    assert 0.0 <= float(au[0] * l[0] + cu[0] - torch.tanh(l[0])) < 5e-3
    d = torch.acosh(1 / torch.sqrt(au[0]))  # the tangent point, tanh'(d) = slope
    assert 0 < float(d) < 3.0
    assert float(au[0] * d + cu[0] - torch.tanh(d)) == pytest.approx(0.0, abs=1e-12)
    chord = (math.tanh(3.0) - math.tanh(-2.0)) / 5.0
    # the chord is not an upper bound here: it passes below tanh at the tangent point
    assert math.tanh(-2.0) + chord * (float(d) + 2.0) < math.tanh(float(d)) - 0.1
    assert float(au[0]) > chord
    # l = -3, u = 0.3: tanh'(u) >= chord slope, so the chord is the upper line; tanh'(l) < chord
    # slope, so the lower line is the tangent through (u, tanh(u)) at some d in (l, 0)
    l, u = torch.tensor([-3.0], dtype=torch.float64), torch.tensor([0.3], dtype=torch.float64)
    al, cl, au, cu = relaxation(layer, l, u)
    chord1 = (math.tanh(0.3) - math.tanh(-3.0)) / 3.3
    assert float(au[0]) == pytest.approx(chord1, rel=1e-9)
    assert float(au[0] * u[0] + cu[0]) == pytest.approx(math.tanh(0.3), abs=1e-9)
    assert 0.0 <= math.tanh(0.3) - float(al[0] * u[0] + cl[0]) < 5e-3
    assert float(al[0]) > chord1


# ---------------------------------------------------------------------------------- exactness
def _linear_policy(seed: int = 3) -> tuple[Policy, nn.Linear]:
    torch.manual_seed(seed)
    lin = nn.Linear(6, 4)
    p = Policy(nn.Sequential(lin), "linear", 6, action_low=np.full(4, -1e6),
               action_high=np.full(4, 1e6))
    return p, lin


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_single_linear_layer_is_exact(norm: str) -> None:
    p, lin = _linear_policy()
    x = torch.randn(9, 6, generator=torch.Generator().manual_seed(1))
    eps = 0.3
    w, b = lin.weight.double(), lin.bias.double()
    center = x.double() @ w.t() + b
    l1 = eps * w.abs().sum(1)
    rad = l1 if norm == "linf" else eps * w.norm(dim=1)
    for method in ("ibp", "crown"):
        ob = output_bounds(p, x, eps, norm, method=method, float32_margin=False)
        # IBP replaces the l2 ball by its bounding box: exact only for linf
        r = l1 if method == "ibp" else rad
        torch.testing.assert_close(ob.lower, center - r, atol=1e-6, rtol=0)
        torch.testing.assert_close(ob.upper, center + r, atol=1e-6, rtol=0)
        # with the float32 margin: contains the exact bounds, widened by exactly the margin
        om = output_bounds(p, x, eps, norm, method=method)
        assert torch.all(om.lower <= center - r) and torch.all(om.upper >= center + r)
        torch.testing.assert_close(om.upper - ob.upper, om.margin - ob.margin, atol=1e-12,
                                   rtol=0)
        assert float(om.margin.max()) < 1e-5
    # l2: CROWN is strictly tighter than IBP's box for a dense layer
    crown = output_bounds(p, x, eps, "l2", method="crown").width
    ibp = output_bounds(p, x, eps, "l2", method="ibp").width
    if norm == "l2":
        assert torch.all(crown < 0.8 * ibp)


# -------------------------------------------------------------------------------- soundness
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("head", HEADS)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(eps=st.floats(0.0, 0.6), seed=st.integers(0, 10_000), norm=st.sampled_from(["linf", "l2"]),
       space=st.sampled_from(["normalized", "raw"]), method=st.sampled_from(["ibp", "crown"]))
def test_random_mlp_bounds_are_sound(act: str, head: str, eps: float, seed: int, norm: str,
                                     space: str, method: str) -> None:
    policy = make_policy(act, head, seed=seed % 7)
    x = states(policy, 6, space, seed)
    check_sound(policy, x, eps, norm, space, method, seed)


@pytest.mark.parametrize("kind", ["sac", "gsde", "nested"])
def test_sac_actor_and_hardtanh_are_supported(kind: str) -> None:
    torch.manual_seed(5)
    latent = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU())
    if kind == "sac":
        net: nn.Module = GaussianActor(latent, nn.Linear(16, 2), nn.Linear(16, 2))
    elif kind == "gsde":
        net = nn.Sequential(latent, nn.Linear(16, 2), nn.Hardtanh(-0.5, 0.5))
    else:
        net = nn.Sequential(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Identity()),
                            nn.Sequential(nn.Linear(8, 8), nn.LeakyReLU(0.2), nn.Linear(8, 2)))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(2.5)
    p = Policy(net, "gaussian", 4, action_low=np.array([-1.0, -2.0]),
               action_high=np.array([1.0, 0.5]), squash=True, state_dependent_std=kind == "sac")
    spec = extract_mlp(p)
    assert spec.out_dim == 2
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    for method in ("ibp", "crown"):
        for norm in ("linf", "l2"):
            check_sound(p, x, 0.4, norm, "normalized", method, seed=1)


@pytest.mark.parametrize("name", ["hopper", "cartpole", "pendulum"])
def test_demo_policies_are_sound_against_pgd(name: str) -> None:
    policy = demo(name)
    raw = rollout_states(name, 120)[::10]  # 12 visited states
    eps = {"hopper": 0.075, "cartpole": 0.05, "pendulum": 0.05}[name]
    for space in ("normalized", "raw"):
        x = policy.normalize(raw) if space == "normalized" else raw
        if space == "raw" and policy.obs_norm is not None:
            # push some coordinates next to the normalization clip (clamp active in the ball)
            z = policy.normalize(raw).clone()
            z[::3, ::2] = policy._clip - 0.05
            x = policy._mu + policy._scale * z
        for norm in ("linf", "l2"):
            for method in ("ibp", "crown"):
                check_sound(policy, x, eps, norm, space, method, seed=0, pgd_restarts=8,
                            pgd_steps=25, k=32)


# ------------------------------------------------------------------------------ tightness
def test_crown_tighter_than_ibp_on_hopper() -> None:
    policy = demo("hopper")
    z = hopper_states()
    ibp = output_bounds(policy, z, 0.075, "linf", method="ibp")
    crown = output_bounds(policy, z, 0.075, "linf", method="crown")
    assert torch.all(crown.lower >= ibp.lower - 1e-12)
    assert torch.all(crown.upper <= ibp.upper + 1e-12)
    ratio = float(crown.width.mean() / ibp.width.mean())
    assert 0.15 < ratio < 0.25  # measured 0.22 on these 200 visited states
    a_ibp = action_deviation_bounds(policy, z, 0.075, method="ibp")
    a_crown = action_deviation_bounds(policy, z, 0.075, method="crown")
    assert torch.all(a_crown.linf <= a_ibp.linf + 1e-12)
    assert float(a_crown.linf.mean()) < 0.5 * float(a_ibp.linf.mean())
    # l2 ball: CROWN's dual-norm concretization is much tighter than IBP's bounding box
    l2_ibp = output_bounds(policy, z, 0.075, "l2", method="ibp").width.mean()
    l2_crown = output_bounds(policy, z, 0.075, "l2", method="crown").width.mean()
    assert float(l2_crown / l2_ibp) < 0.1


def test_zero_eps_gives_zero_width_up_to_the_margin() -> None:
    for name in ("hopper", "pendulum"):
        policy = demo(name)
        z = policy.normalize(rollout_states(name, 60))
        for method in ("ibp", "crown"):
            ob = output_bounds(policy, z, 0.0, method=method)
            assert torch.all(ob.width <= 2 * ob.margin + 1e-12)
            exact = output_bounds(policy, z, 0.0, method=method, float32_margin=False)
            assert float(exact.width.max()) < 1e-7
            ab = action_deviation_bounds(policy, z, 0.0, method=method)
            assert float(ab.linf.max()) < {"hopper": 1e-3, "pendulum": 2e-2}[name]
    hopper = demo("hopper")
    m = output_bounds(hopper, hopper_states(), 0.0).margin
    assert float(m.max()) < 5e-4


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(e1=st.floats(0.0, 0.3), factor=st.floats(1.05, 3.0), seed=st.integers(0, 1000),
       norm=st.sampled_from(["linf", "l2"]), act=st.sampled_from(list(ACTS)))
def test_widths_non_decreasing_in_eps(e1: float, factor: float, seed: int, norm: str,
                                      act: str) -> None:
    e2 = e1 * factor + 1e-3
    cases = [(demo("hopper"), hopper_states(40)[seed % 20 :: 5]),
             (make_policy(act, "gaussian", seed % 5), states(make_policy(act, "gaussian", seed % 5),
                                                            6, "normalized", seed))]
    for policy, x in cases:
        for method in ("ibp", "crown"):
            w1 = output_bounds(policy, x, e1, norm, method=method).width
            w2 = output_bounds(policy, x, e2, norm, method=method).width
            assert torch.all(w2 >= w1 - 1e-9), (method, float((w1 - w2).max()))


# ------------------------------------------------------------------------------- discrete
def test_cartpole_greedy_certificates() -> None:
    policy = demo("cartpole")
    x = rollout_states("cartpole", 150)
    grid = [0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05]
    fracs = {}
    for method in ("ibp", "crown"):
        fr = []
        prev = None
        for eps in grid:
            c = greedy_action_certified(policy, x, eps, "linf", "raw", method)
            if eps == 0:
                assert bool(c.certified.all())
                torch.testing.assert_close(c.action, policy.act(x))
            if prev is not None:
                assert not torch.any(c.certified & ~prev)  # certified at eps => at smaller eps
            prev = c.certified
            fr.append(float(c.certified.float().mean()))
        assert all(a >= b for a, b in zip(fr, fr[1:], strict=False))
        fracs[method] = fr
    # CROWN certifies every state IBP does (its margins are the max of both), and more
    assert all(c >= i for c, i in zip(fracs["crown"], fracs["ibp"], strict=True))
    assert fracs["ibp"][5] == 0.0 and fracs["crown"][5] > 0.2  # eps = 0.02: measured 0.32
    assert fracs["crown"][-1] == 0.0  # this policy is very sensitive (logit slopes ~100)
    # certified => PGD cannot change the action; PGD does change uncertified ones
    for eps in (0.005, 0.02):
        c = greedy_action_certified(policy, x, eps, "linf", "raw", "crown")
        pgd = pgd_max_deviation(policy, x, eps, "linf", "raw", steps=20, restarts=5, seed=0)
        assert pgd.changed is not None
        assert not torch.any(c.certified & pgd.changed)
        assert float(pgd.changed.float().mean()) > 0.3


def test_margin_spec_beats_interval_difference() -> None:
    """The difference specification C = e_a - e_j folded into the last layer is tighter than
    differencing CROWN's own output intervals whenever rows of the last layer share signs.
    (demo:cartpole's two logit rows have exactly opposite signs, so there it is equal.)"""
    p = make_policy("tanh", "categorical", seed=1, out=4, gain=1.0)
    x = states(p, 64, "normalized", 0)
    crown = greedy_action_certified(p, x, 0.05, "linf", "normalized", "crown")
    ibp = greedy_action_certified(p, x, 0.05, "linf", "normalized", "ibp")
    assert torch.all(crown.margin >= ibp.margin)
    assert float(crown.certified.float().mean()) > float(ibp.certified.float().mean()) + 0.3
    ob = output_bounds(p, x, 0.05, "linf", "normalized", "crown")
    a = crown.action
    inter = (ob.lower.gather(1, a[:, None]) - ob.upper).scatter(1, a[:, None], math.inf)
    gain = crown.margin - inter.amin(1)
    assert float(gain.min()) > 0 and float(gain.mean()) > 0.005  # measured 0.0117
    cartpole = demo("cartpole")
    xc = rollout_states("cartpole", 40)
    cc = greedy_action_certified(cartpole, xc, 0.01, "linf", "raw", "crown")
    oc = output_bounds(cartpole, xc, 0.01, "linf", "raw", "crown")
    ac = cc.action
    ic = oc.lower.gather(1, ac[:, None])[:, 0] - oc.upper.gather(1, (1 - ac)[:, None])[:, 0]
    torch.testing.assert_close(cc.margin, ic, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------- errors, invariance
@pytest.mark.parametrize("module,name", [(nn.GELU(), "GELU"), (nn.SiLU(), "SiLU"),
                                         (nn.ELU(alpha=2.0), "ELU"),
                                         (nn.Conv1d(1, 1, 1), "Conv1d")])
def test_unsupported_layers_raise_bound_error(module: nn.Module, name: str) -> None:
    net = nn.Sequential(nn.Linear(3, 4), module, nn.Linear(4, 2))
    p = Policy(net, "categorical", 3, n_actions=2)
    with pytest.raises(BoundError, match=name) as info:
        extract_mlp(p)
    assert "\n" not in str(info.value)
    if name != "ELU":
        assert "supports MLP policies" in str(info.value)
    with pytest.raises(BoundError):
        greedy_action_certified(p, torch.zeros(2, 3), 0.1)


def test_torchscript_and_missing_bounds_raise() -> None:
    scripted = torch.jit.script(build_mlp([3, 4, 2], "tanh"))
    p = Policy(scripted, "linear", 3, act_dim=2)
    with pytest.raises(BoundError, match="TorchScript"):
        extract_mlp(p)
    q = Policy(build_mlp([3, 4, 2], "tanh"), "linear", 3, act_dim=2)
    with pytest.raises(BoundError, match="action bounds"):
        action_deviation_bounds(q, torch.zeros(2, 3), 0.1)
    with pytest.raises(BoundError, match="greedy_action_certified"):
        action_deviation_bounds(demo("cartpole"), torch.zeros(2, 4), 0.1)
    with pytest.raises(BoundError, match="method"):
        output_bounds(demo("hopper"), torch.zeros(2, 11), 0.1, method="alpha-crown")
    with pytest.raises(BoundError, match="eps"):
        output_bounds(demo("hopper"), torch.zeros(2, 11), -0.1)


def test_batch_invariance() -> None:
    policy = demo("hopper")
    z = hopper_states(60)[:37]
    perm = torch.randperm(37, generator=torch.Generator().manual_seed(0))
    for method in ("ibp", "crown"):
        full = output_bounds(policy, z, 0.05, method=method)
        shuffled = output_bounds(policy, z[perm], 0.05, method=method, chunk_size=7)
        torch.testing.assert_close(shuffled.lower, full.lower[perm], atol=1e-6, rtol=0)
        torch.testing.assert_close(shuffled.upper, full.upper[perm], atol=1e-6, rtol=0)
        for i in (0, 13, 36):
            one = output_bounds(policy, z[i : i + 1], 0.05, method=method)
            torch.testing.assert_close(one.lower[0], full.lower[i], atol=1e-6, rtol=0)
            torch.testing.assert_close(one.upper[0], full.upper[i], atol=1e-6, rtol=0)


def test_pgd_is_deterministic_and_finds_deviation() -> None:
    policy = demo("hopper")
    z = hopper_states(40)[:8]
    a = pgd_max_deviation(policy, z, 0.075, "l2", steps=10, restarts=3, seed=4)
    b = pgd_max_deviation(policy, z, 0.075, "l2", steps=10, restarts=3, seed=4)
    assert a.linf is not None and b.linf is not None
    torch.testing.assert_close(a.deviation, b.deviation, atol=0, rtol=0)
    assert float(a.linf.min()) > 0
    cert = action_deviation_bounds(policy, z, 0.075, "l2")
    assert torch.all(a.linf <= cert.linf)
    # the certificate is not vacuous: within a small factor of what PGD finds
    assert float((cert.linf / a.linf).median()) < 5.0
    zero = pgd_max_deviation(policy, z, 0.0, steps=5, restarts=2)
    assert zero.linf is not None and float(zero.linf.max()) == 0.0
