"""Tests for certrl.diagnostics (Jacobians, fragile directions, minimal perturbations).

Jacobians are checked against central finite differences in float64; the directions against
``torch.linalg.svd`` / ``eigh``; :func:`min_perturbation` against the closed forms of linear
policies (below) and, on nonlinear ones, for the validity of its witnesses and its consistency
with the certificates of :mod:`certrl.certificates.propagation`.

Closed forms (linear policies, no clipping active at the state or within ``tol`` of it):

* continuous ``a = W x + b``, change ``||a(x') - a(x)||_inf > tol``: ``a_i`` moves by at most
  ``eps ||W_i||_*`` in a ball of radius ``eps``, so ``eps* = tol / max_i ||W_i||_*`` with the
  dual norm ``||.||_* = ||.||_1`` for ``linf`` and ``||.||_2`` for ``l2``. With clipping
  ``a = clip(y)`` coordinate ``i`` moves up by more than ``tol`` iff ``y_i(x')`` exceeds
  ``a_i + tol < high_i`` (infeasible if ``a_i + tol >= high_i``), i.e. at
  ``eps = (a_i + tol - y_i) / ||W_i||_*``, and down at ``(y_i - a_i + tol) / ||W_i||_*``;
  ``eps*`` is the smallest of these;
* discrete logits ``z = W x + b``, greedy ``a``: the action changes iff some
  ``z_j > z_a``, a half-space at distance ``(z_a - z_j) / ||W_a - W_j||_*``, so
  ``eps* = min_{j != a} (z_a - z_j) / ||W_a - W_j||_*``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from certrl.certificates.propagation import action_deviation_bounds, greedy_action_certified
from certrl.diagnostics import (
    action_function,
    action_jacobian,
    dimension_shares,
    margin_jacobian,
    min_perturbation,
    min_perturbation_search,
    similarity_matrix,
    subspace_overlap,
    temporal_similarity,
    top_directions,
    unstable_subspace,
)
from certrl.policies._nets import GaussianActor
from certrl.policies.base import ObsNormalization, Policy, build_mlp
from tests._fixtures import random_policy

HEADS = ("gaussian", "squash", "sac", "deterministic", "linear", "categorical", "qvalues")
CLIP = 3.0
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# -------------------------------------------------------------------------------- helpers
def make_policy(head: str, seed: int = 0, obs_dim: int = 5, hidden: int = 12, out: int = 3,
                normalize: bool = True, gain: float = 1.5) -> Policy:
    """A random tanh MLP policy of each head kind (like ``tests/_fixtures.random_policy``, with
    more head kinds), with observation normalization."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    norm = (ObsNormalization(rng.normal(size=obs_dim), rng.uniform(0.3, 2.0, obs_dim), clip=CLIP)
            if normalize else None)
    low = np.array([-1.0, -2.0, 0.5][:out] + [-1.0] * max(0, out - 3))
    high = np.array([1.0, 3.0, 1.0][:out] + [1.0] * max(0, out - 3))
    if head == "sac":
        latent = build_mlp([obs_dim, hidden, hidden], "tanh", "tanh")
        net: nn.Module = GaussianActor(latent, nn.Linear(hidden, out), nn.Linear(hidden, out))
    else:
        net = build_mlp([obs_dim, hidden, hidden, out], "tanh",
                        "tanh" if head == "deterministic" else None)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(gain)
                m.bias.uniform_(-0.5, 0.5)
    if head in ("categorical", "qvalues"):
        return Policy(net, head, obs_dim, n_actions=out, obs_norm=norm)
    if head in ("squash", "sac"):
        return Policy(net, "gaussian", obs_dim, action_low=low, action_high=high, squash=True,
                      state_dependent_std=head == "sac", obs_norm=norm)
    return Policy(net, head, obs_dim, action_low=low, action_high=high, obs_norm=norm,
                  log_std=torch.zeros(out) if head == "gaussian" else None)


def states(policy: Policy, n: int, space: str, seed: int = 1) -> torch.Tensor:
    """States in ``space``; raw states stay inside the normalization clip (margin 0.5)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, policy.obs_dim, generator=g, dtype=torch.float64).clamp(-2.5, 2.5)
    if space == "normalized" or policy.obs_norm is None:
        return z
    return policy._mu.double() + policy._scale.double() * z


def finite_differences(policy: Policy, x: torch.Tensor, space: str, h: float = 1e-6):
    f = action_function(policy, space=space, dtype=torch.float64)
    n, d = x.shape
    cols = []
    with torch.no_grad():
        for j in range(d):
            e = torch.zeros(d, dtype=torch.float64)
            e[j] = h
            cols.append((f(x + e) - f(x - e)) / (2 * h))
    return torch.stack(cols, -1)  # [N, k, d]


def linear_policy(kind: str, d: int, k: int, seed: int, low: float = -1e3, high: float = 1e3,
                  bias: float = 0.5) -> Policy:
    torch.manual_seed(seed)
    lin = nn.Linear(d, k)
    with torch.no_grad():
        lin.bias.uniform_(-bias, bias)
    if kind in ("categorical", "qvalues"):
        return Policy(lin, kind, d, n_actions=k)
    return Policy(lin, kind, d, action_low=np.full(k, low), action_high=np.full(k, high),
                  log_std=torch.zeros(k) if kind == "gaussian" else None)


def weights(policy: Policy) -> tuple[torch.Tensor, torch.Tensor]:
    lin = policy.net
    assert isinstance(lin, nn.Linear)
    return lin.weight.detach().double(), lin.bias.detach().double()


def dual(w: torch.Tensor, norm: str) -> torch.Tensor:
    return w.abs().sum(-1) if norm == "linf" else w.norm(dim=-1)


def closed_form_continuous(policy: Policy, x: torch.Tensor, tol: float, norm: str):
    """``eps*`` of a linear clipped policy (module docstring), clipping included."""
    w, b = weights(policy)
    y = x.double() @ w.T + b
    low, high = policy._low.double(), policy._high.double()
    a = torch.minimum(torch.maximum(y, low), high)
    nw = dual(w, norm)  # [k]
    up = torch.where(a + tol < high, (a + tol - y) / nw, torch.full_like(y, math.inf))
    down = torch.where(a - tol > low, (y - a + tol) / nw, torch.full_like(y, math.inf))
    return torch.minimum(up, down).amin(-1)


def closed_form_discrete(policy: Policy, x: torch.Tensor, norm: str) -> torch.Tensor:
    w, b = weights(policy)
    z = x.double() @ w.T + b
    a = z.argmax(-1)
    gap = z.gather(1, a[:, None]) - z  # [N, n]
    nw = dual(w[a][:, None, :] - w[None], norm)  # [N, n]
    eps = gap / nw
    eps[torch.arange(len(a)), a] = math.inf
    return eps.amin(-1)


# ------------------------------------------------------------------------------ Jacobians
@pytest.mark.parametrize("space", ["normalized", "raw"])
@pytest.mark.parametrize("head", HEADS)
def test_jacobian_matches_finite_differences(head: str, space: str) -> None:
    policy = make_policy(head, seed=HEADS.index(head))
    x = states(policy, 6, space)
    jac = action_jacobian(policy, x, space=space, dtype=torch.float64)
    assert jac.shape == (6, 3, policy.obs_dim) and jac.dtype == torch.float64
    fd = finite_differences(policy, x, space)
    torch.testing.assert_close(jac, fd, atol=1e-7, rtol=1e-6)
    # float32 and both methods agree with it to float32 accuracy
    for method in ("func", "autograd"):
        j32 = action_jacobian(policy, x, space=space, method=method)
        assert j32.dtype == torch.float32
        torch.testing.assert_close(j32.double(), jac, atol=1e-4, rtol=1e-3)


def test_raw_jacobian_is_the_chain_rule_through_normalization() -> None:
    for env_id in ("Pendulum-v1", "CartPole-v1"):
        policy = random_policy(env_id, seed=3)
        z = states(policy, 8, "normalized").clamp(-2, 2)
        raw = policy._mu.double() + policy._scale.double() * z
        jn = action_jacobian(policy, z, dtype=torch.float64)
        jr = action_jacobian(policy, raw, space="raw", dtype=torch.float64)
        torch.testing.assert_close(jr, jn / policy._scale.double(), atol=1e-9, rtol=1e-7)
        assert action_jacobian(policy, z, space="auto").shape == jn.shape


def test_raw_jacobian_is_zero_beyond_the_normalization_clip() -> None:
    policy = make_policy("gaussian")
    z = states(policy, 4, "normalized")
    z[:, 1] = CLIP + 1.0
    raw = policy._mu.double() + policy._scale.double() * z
    jac = action_jacobian(policy, raw, space="raw", dtype=torch.float64)
    assert torch.all(jac[:, :, 1] == 0) and torch.any(jac[:, :, 0] != 0)


@pytest.mark.parametrize("head", HEADS)
def test_action_function_is_the_action_before_clip_or_argmax(head: str) -> None:
    policy = make_policy(head, gain=4.0)  # saturates some actions
    x = states(policy, 64, "normalized").float()
    y = action_function(policy)(x)
    a = policy.act_normalized(x)
    if policy.discrete:
        assert torch.equal(y.argmax(-1), a)
        torch.testing.assert_close(y, policy.head_output(x))
    else:
        clipped = torch.minimum(torch.maximum(y, policy._low), policy._high)
        torch.testing.assert_close(clipped, a, atol=1e-6, rtol=0)
        if head in ("gaussian", "linear"):
            assert bool(((y < policy._low) | (y > policy._high)).any())  # before clipping


class _DataDependent(nn.Module):
    """A network ``torch.func.vmap`` cannot transform (data-dependent Python control flow)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.abs() > 1e6).any()):
            x = torch.zeros_like(x)
        return torch.tanh(self.lin(x))


def test_jacobian_falls_back_to_autograd() -> None:
    policy = Policy(_DataDependent(), "categorical", 4, n_actions=2)
    x = torch.randn(5, 4)
    with pytest.raises(Exception):  # noqa: B017 -- whatever torch.func raises
        action_jacobian(policy, x, method="func")
    jac = action_jacobian(policy, x)
    torch.testing.assert_close(jac, action_jacobian(policy, x, method="autograd"))
    assert jac.shape == (5, 2, 4)


def test_jacobian_restores_training_mode_and_validates() -> None:
    policy = make_policy("gaussian")
    policy.train()
    action_jacobian(policy, torch.zeros(2, 5))
    assert policy.training and policy.net.training
    with pytest.raises(ValueError, match="shape"):
        action_jacobian(policy, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="finite"):
        action_jacobian(policy, torch.full((2, 5), math.nan))
    with pytest.raises(ValueError, match="method"):
        action_jacobian(policy, torch.zeros(2, 5), method="bogus")
    assert action_jacobian(policy, torch.zeros(5)).shape == (1, 3, 5)


@pytest.mark.parametrize("head", ["categorical", "qvalues"])
def test_margin_jacobian(head: str) -> None:
    policy = make_policy(head, seed=4)
    x = states(policy, 16, "normalized")
    g = margin_jacobian(policy, x, dtype=torch.float64)
    jac = action_jacobian(policy, x, dtype=torch.float64)
    y = action_function(policy, dtype=torch.float64)(x)
    a = y.argmax(-1)
    b = y.scatter(1, a[:, None], -math.inf).argmax(-1)
    r = torch.arange(16)
    torch.testing.assert_close(g, jac[r, a] - jac[r, b])
    lin = linear_policy("categorical", 6, 4, seed=0)
    w, _ = weights(lin)
    xl = torch.randn(8, 6, dtype=torch.float64)
    yl = action_function(lin, dtype=torch.float64)(xl)
    al = yl.argmax(-1)
    bl = yl.scatter(1, al[:, None], -math.inf).argmax(-1)
    torch.testing.assert_close(margin_jacobian(lin, xl, dtype=torch.float64), w[al] - w[bl])
    with pytest.raises(ValueError, match="discrete"):
        margin_jacobian(make_policy("gaussian"), x)


# ----------------------------------------------------------------------------- directions
@SETTINGS
@given(n=st.integers(1, 4), m=st.integers(1, 5), d=st.integers(1, 7), k=st.integers(1, 6),
       seed=st.integers(0, 2**16))
def test_top_directions_are_the_svd(n: int, m: int, d: int, k: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    jac = torch.randn(n, m, d, generator=g, dtype=torch.float64)
    sing, vecs = top_directions(jac, k)
    kk = min(k, m, d)
    assert sing.shape == (n, kk) and vecs.shape == (n, kk, d)
    torch.testing.assert_close(sing, torch.linalg.svdvals(jac)[:, :kk])
    eye = torch.eye(kk, dtype=torch.float64).expand(n, kk, kk)
    torch.testing.assert_close(vecs @ vecs.transpose(1, 2), eye)  # orthonormal
    torch.testing.assert_close((jac @ vecs.transpose(1, 2)).norm(dim=1), sing)  # ||J v|| = s
    vh = torch.linalg.svd(jac, full_matrices=False).Vh[:, :kk]
    torch.testing.assert_close((vh * vecs).sum(-1).abs(), torch.ones(n, kk, dtype=torch.float64))
    # sign convention: the largest-|component| entry is positive; invariant to J -> -J
    top = vecs.gather(-1, vecs.abs().argmax(-1, keepdim=True))
    assert bool((top > 0).all())
    torch.testing.assert_close(top_directions(-jac, k)[1], vecs)


def test_top_directions_sign_and_gradient_input() -> None:
    jac = torch.tensor([[[0.0, -3.0, 1.0]], [[2.0, 0.0, 0.0]]])
    sing, vecs = top_directions(jac, k=3)
    assert sing.shape == (2, 1)
    torch.testing.assert_close(vecs[:, 0], torch.tensor([[0.0, 3.0, -1.0], [1.0, 0.0, 0.0]])
                               / torch.tensor([[math.sqrt(10.0)], [1.0]]))
    s2, v2 = top_directions(jac[:, 0], k=1)  # [N, d] gradients
    torch.testing.assert_close(v2, vecs)
    torch.testing.assert_close(s2, sing)


def test_dimension_shares() -> None:
    policy = make_policy("gaussian", normalize=False)
    jac = action_jacobian(policy, states(policy, 32, "normalized"), dtype=torch.float64)
    sing, vecs = top_directions(jac, 3)
    shares = dimension_shares(sing, vecs)
    assert shares.shape == (5,) and bool((shares >= 0).all())
    assert float(shares.sum()) == pytest.approx(1.0, abs=1e-12)
    # all directions: the per-dimension share of sum_i ||J_i||_F^2
    full = dimension_shares(sing, vecs, directions=3)
    fro = (jac**2).sum((0, 1))
    torch.testing.assert_close(full, fro / fro.sum())
    # one state, 1-D input
    assert float(dimension_shares(sing[0], vecs[0]).sum()) == pytest.approx(1.0)
    # a policy that only reads input 2
    torch.manual_seed(0)
    net = build_mlp([5, 12, 12, 3], "tanh")
    with torch.no_grad():
        net[0].weight[:, [0, 1, 3, 4]] = 0.0
    one = Policy(net, "gaussian", 5, action_low=-np.ones(3), action_high=np.ones(3),
                 log_std=torch.zeros(3))
    s1, v1 = top_directions(action_jacobian(one, torch.randn(20, 5)), 3)
    sh = dimension_shares(s1, v1)
    assert int(sh.argmax()) == 2 and float(sh[2]) == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(dimension_shares(torch.zeros(2, 1), torch.ones(2, 1, 4) / 2),
                       torch.zeros(4))


@SETTINGS
@given(t=st.integers(2, 8), d=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_similarities(t: int, d: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(t, d, generator=g, dtype=torch.float64)
    m = similarity_matrix(v)
    ts = temporal_similarity(v)
    assert m.shape == (t, t) and ts.shape == (t - 1,)
    assert bool(((m >= 0) & (m <= 1)).all()) and bool(((ts >= 0) & (ts <= 1)).all())
    torch.testing.assert_close(m, m.T)
    torch.testing.assert_close(torch.diagonal(m), torch.ones(t, dtype=torch.float64))
    torch.testing.assert_close(ts, torch.diagonal(m, 1))
    signs = torch.where(torch.rand(t, 1, generator=g) < 0.5, -1.0, 1.0).double()
    scale = torch.rand(t, 1, generator=g, dtype=torch.float64) + 0.1
    torch.testing.assert_close(similarity_matrix(v * signs * scale), m)  # sign / scale free


def test_similarity_edge_cases() -> None:
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(temporal_similarity(v), torch.tensor([0.0, 0.0, 0.0]))
    assert float(similarity_matrix(v)[0, 2]) == pytest.approx(1.0)
    assert temporal_similarity(v[:1]).shape == (0,)
    with pytest.raises(ValueError):
        temporal_similarity(torch.zeros(2, 3, 4))


def test_unstable_subspace() -> None:
    g = torch.Generator().manual_seed(0)
    jac = torch.randn(40, 3, 6, generator=g, dtype=torch.float64)
    vals, basis = unstable_subspace(jac, 3)
    gram = torch.einsum("nkd,nke->de", jac, jac) / 40
    ref = torch.linalg.eigvalsh(gram).flip(0)[:3]
    torch.testing.assert_close(vals, ref)
    torch.testing.assert_close(basis.T @ basis, torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(gram @ basis, basis * vals)  # eigenvectors
    for r in range(3):  # eigvals = mean ||J_i u||^2
        assert float(((jac @ basis[:, r]) ** 2).sum(1).mean()) == pytest.approx(float(vals[r]))
    top = basis.gather(0, basis.abs().argmax(0, keepdim=True))
    assert bool((top > 0).all())
    # Jacobians that only use dimensions 1 and 4 span exactly those
    j2 = torch.zeros(30, 2, 6, dtype=torch.float64)
    j2[:, :, [1, 4]] = torch.randn(30, 2, 2, generator=g, dtype=torch.float64)
    v2, b2 = unstable_subspace(j2, 2)
    e = torch.zeros(6, 2, dtype=torch.float64)
    e[1, 0] = e[4, 1] = 1.0
    assert subspace_overlap(b2, e)["overlap"] == pytest.approx(1.0)
    v3, b3 = unstable_subspace(j2, 10)  # k_dims capped at d
    assert v3.shape == (6,) and b3.shape == (6, 6)
    assert float(v3[2:].abs().max()) < 1e-12
    assert unstable_subspace(j2[:, 0], 1)[1].shape == (6, 1)  # [N, d] gradients


@SETTINGS
@given(d=st.integers(2, 8), k=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_subspace_overlap_properties(d: int, k: int, seed: int) -> None:
    k = min(k, d)
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(d, k, generator=g, dtype=torch.float64)).Q
    same = subspace_overlap(u, u)
    assert same["overlap"] == pytest.approx(1.0)
    assert float(same["principal_angles_deg"].abs().max()) < 1e-5
    rot = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64)).Q
    mix = torch.randn(k, k, generator=g, dtype=torch.float64) + 3 * torch.eye(k)
    other = torch.randn(d, k, generator=g, dtype=torch.float64)
    ref = subspace_overlap(u, other)
    for u2 in (u @ rot, u @ mix):  # any basis of the same subspace
        assert subspace_overlap(u2, u)["overlap"] == pytest.approx(1.0)
        r2 = subspace_overlap(u2, other)
        assert r2["overlap"] == pytest.approx(ref["overlap"], abs=1e-9)
        torch.testing.assert_close(r2["principal_angles_deg"], ref["principal_angles_deg"])
    assert 0.0 <= ref["overlap"] <= 1.0
    ang = ref["principal_angles_deg"]
    assert ang.shape == (k,) and bool((ang[1:] >= ang[:-1] - 1e-9).all())
    cos2 = torch.cos(torch.deg2rad(ang)) ** 2
    assert float(cos2.mean()) == pytest.approx(ref["overlap"], abs=1e-9)
    assert subspace_overlap(other, u)["overlap"] == pytest.approx(ref["overlap"], abs=1e-9)


def test_subspace_overlap_known_angles() -> None:
    e = torch.eye(4, dtype=torch.float64)
    orth = subspace_overlap(e[:, :2], e[:, 2:])
    assert orth["overlap"] == pytest.approx(0.0, abs=1e-15)
    torch.testing.assert_close(orth["principal_angles_deg"],
                               torch.tensor([90.0, 90.0], dtype=torch.float64))
    th = math.radians(1e-4)  # tiny angles are resolved (atan2, not arccos)
    v = torch.tensor([math.cos(th), math.sin(th), 0.0, 0.0], dtype=torch.float64)
    r = subspace_overlap(e[:, 0], v)
    assert float(r["principal_angles_deg"][0]) == pytest.approx(1e-4, rel=1e-6)
    assert r["overlap"] == pytest.approx(math.cos(th) ** 2)
    e5 = torch.eye(5, dtype=torch.float64)
    v5 = torch.cat([v, torch.zeros(1, dtype=torch.float64)])
    mixed = subspace_overlap(e5[:, [0, 3]], torch.stack([v5, e5[:, 2], e5[:, 4]], 1))  # k = 2
    torch.testing.assert_close(mixed["principal_angles_deg"],
                               torch.tensor([1e-4, 90.0], dtype=torch.float64))
    assert mixed["overlap"] == pytest.approx(math.cos(th) ** 2 / 2)


# -------------------------------------------------------------------- minimal perturbation
EPS_MAX = 2.0
BISECT = 12
RES = EPS_MAX / 2**BISECT  # bisection resolution


def _check_tight(found: torch.Tensor, exact: torch.Tensor) -> None:
    assert bool(torch.isfinite(exact).all()) and bool(torch.isfinite(found).all())
    assert bool((found >= exact * (1 - 1e-5) - 1e-7).all()), "below the true minimum"
    assert bool((found <= exact + RES + 1e-5).all()), "not tight"
    big = exact > 0.05 * EPS_MAX  # relative accuracy where the resolution allows it
    assert float((found[big] / exact[big]).max()) < 1.01


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("kind", ["linear", "gaussian"])
def test_min_perturbation_linear_continuous(kind: str, norm: str) -> None:
    policy = linear_policy(kind, d=6, k=3, seed=1)
    w, _ = weights(policy)
    x = torch.randn(40, 6)
    tol = 0.4
    exact = tol / dual(w, norm).max()  # no clipping: wide bounds
    found = min_perturbation(policy, x, norm=norm, tol=tol, eps_max=EPS_MAX, bisect=BISECT)
    assert found.dtype == torch.float64 and found.shape == (40,)
    _check_tight(found, exact.expand(40))
    torch.testing.assert_close(found, closed_form_continuous(policy, x, tol, norm),
                               atol=RES + 1e-5, rtol=0)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_min_perturbation_linear_with_clipping(norm: str) -> None:
    policy = linear_policy("gaussian", d=5, k=3, seed=2, low=-1.0, high=1.0, bias=1.5)
    x = torch.randn(60, 5) * 0.7
    y = action_function(policy)(x)
    assert bool(((y.abs() > 1).sum(-1) > 0).any())  # some actions saturate
    tol = 0.3
    exact = closed_form_continuous(policy, x, tol, norm)
    found = min_perturbation(policy, x, norm=norm, tol=tol, eps_max=EPS_MAX, bisect=BISECT)
    fin = torch.isfinite(exact) & (exact < EPS_MAX)
    assert int(fin.sum()) > 40
    _check_tight(found[fin], exact[fin])


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("kind", ["categorical", "qvalues"])
def test_min_perturbation_linear_discrete(kind: str, norm: str) -> None:
    policy = linear_policy(kind, d=6, k=5, seed=3)
    x = torch.randn(50, 6)
    exact = closed_form_discrete(policy, x, norm)
    fin = exact < EPS_MAX
    found = min_perturbation(policy, x, norm=norm, eps_max=EPS_MAX, bisect=BISECT)
    _check_tight(found[fin], exact[fin])
    rest, ex = found[~fin], exact[~fin]  # true minimum beyond eps_max: nothing below it
    assert bool((torch.isinf(rest) | (rest >= ex * (1 - 1e-5))).all())


def test_min_perturbation_inf_when_eps_max_too_small() -> None:
    policy = linear_policy("categorical", d=6, k=5, seed=3)
    x = torch.randn(20, 6)
    exact = closed_form_discrete(policy, x, "l2")
    res = min_perturbation_search(policy, x, norm="l2", eps_max=0.9 * float(exact.min()))
    assert bool(torch.isinf(res.eps).all()) and not bool(res.found.any())
    assert torch.equal(res.delta, torch.zeros_like(res.delta)) and res.tol is None
    cont = linear_policy("linear", d=6, k=3, seed=1)
    w, _ = weights(cont)
    small = 0.9 * 0.4 / float(dual(w, "linf").max())
    assert bool(torch.isinf(min_perturbation(cont, x, tol=0.4, eps_max=small)).all())
    # no feasible change at all: tol wider than the action range
    assert bool(torch.isinf(min_perturbation(
        linear_policy("linear", 6, 3, 1, low=-1, high=1), x, tol=5.0, eps_max=10.0)).all())


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("head", HEADS)
def test_min_perturbation_witnesses_and_certificates(head: str, norm: str) -> None:
    """On nonlinear policies: every finite value has a witness that really changes the action
    of the policy itself, and no certificate holds at that radius (same conventions)."""
    policy = make_policy(head, seed=7, gain=2.0)
    x = states(policy, 12, "normalized").float()
    tol = None if policy.discrete else 0.1
    res = min_perturbation_search(policy, x, norm=norm, tol=tol, eps_max=1.0, steps=10)
    assert int(res.found.sum()) >= 6
    f = res.found
    xs, dl, eps = x[f], res.delta[f], res.eps[f]
    nrm = dl.double().abs().amax(-1) if norm == "linf" else dl.double().norm(dim=-1)
    torch.testing.assert_close(nrm, eps)
    a0, a1 = policy.act_normalized(xs), policy.act_normalized(xs + dl)
    if policy.discrete:
        assert bool((a0 != a1).all())
        cert = greedy_action_certified(policy, xs, float(eps.max()) * 1.0001, norm=norm)
        # a certificate at a radius >= the witness norm would be unsound
        for i in range(len(eps)):
            c = greedy_action_certified(policy, xs[i : i + 1], float(eps[i]), norm=norm)
            assert not bool(c.certified[0])
        assert not bool(cert.certified.any())
    else:
        assert res.tol == 0.1
        assert bool(((a1.double() - a0.double()).abs().amax(-1) > 0.1).all())
        for i in range(len(eps)):
            b = action_deviation_bounds(policy, xs[i : i + 1], float(eps[i]), norm=norm)
            assert float(b.linf[0]) > 0.1


def test_min_perturbation_raw_space_and_default_tol() -> None:
    policy = random_policy("Pendulum-v1", seed=1)  # action range [-2, 2]: default tol 0.2
    raw = states(policy, 10, "raw").float()
    res = min_perturbation_search(policy, raw, space="raw", eps_max=10.0, steps=5)
    assert res.tol == pytest.approx(0.2)
    f = res.found
    assert int(f.sum()) >= 5
    a0, a1 = policy.act(raw[f]), policy.act(raw[f] + res.delta[f])
    assert bool(((a1.double() - a0.double()).abs().amax(-1) > 0.2).all())


def test_min_perturbation_is_deterministic() -> None:
    policy = make_policy("categorical", seed=5, gain=2.0)
    x = states(policy, 16, "normalized").float()
    kw = {"norm": "l2", "eps_max": 2.0, "steps": 8, "restarts": 3, "bisect": 6}
    a = min_perturbation(policy, x, seed=3, **kw)
    b = min_perturbation(policy, x, seed=3, **kw)
    assert torch.equal(a, b)
    cont = make_policy("squash", seed=5, gain=2.0)
    c1 = min_perturbation(cont, x, tol=0.05, eps_max=1.0, seed=1, steps=5, bisect=5)
    c2 = min_perturbation(cont, x, tol=0.05, eps_max=1.0, seed=1, steps=5, bisect=5)
    assert torch.equal(c1, c2)


def test_min_perturbation_float64_and_validation() -> None:
    policy = linear_policy("categorical", d=4, k=3, seed=0)
    x = torch.randn(10, 4, dtype=torch.float64)
    exact = closed_form_discrete(policy, x, "linf")
    fin = exact < 1.0
    found = min_perturbation(policy, x, eps_max=1.0, bisect=30, dtype=torch.float64)
    assert bool((found[fin] >= exact[fin] * (1 - 1e-12)).all())
    torch.testing.assert_close(found[fin], exact[fin], atol=1e-8, rtol=0)
    for bad in ({"norm": "l1"}, {"eps_max": 0.0}, {"eps_max": math.inf}, {"restarts": 0},
                {"steps": -1}, {"scan": 0}):
        kw = {"eps_max": 1.0, **bad}
        with pytest.raises(ValueError):
            min_perturbation_search(policy, x, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tol"):
        min_perturbation(make_policy("gaussian"), x[:, :4].repeat(1, 2)[:, :5], tol=-1.0,
                         eps_max=1.0)
