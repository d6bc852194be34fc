"""Where and along which observation directions a policy is fragile: the maths of ``diagnose``.

Korkmaz ("Understanding and Diagnosing Deep Reinforcement Learning", ICML 2024) locates the
instability of a deep RL policy in the observation directions along which its action changes
fastest, and compares them across time steps and across policies (adversarially trained
policies have unstable directions largely disjoint from those of vanilla ones, and these
directions oscillate more in time). This module computes those quantities for a
:class:`~certrl.policies.base.Policy`; ``certrl diagnose`` runs it on visited states.

Setting (common to every function taking a ``policy``):

* ``nobs [N, d]``: ``N`` states in the threat space ``space``: ``"normalized"`` (default) -- the
  policy's normalized observation, where the attacks and certificates of certrl measure budgets
  (:mod:`certrl.attacks.gradient`, :mod:`certrl.certificates.propagation`); ``"raw"`` -- raw
  observations, the normalization ``clamp((x - mu) / scale, -clip, clip)`` included (its clamp
  has a zero derivative beyond the clip). ``"auto"`` / ``None`` mean what
  :func:`certrl.smoothing.resolve_space` says (``normalized``; the two coincide for a policy
  without normalization). Every function is batched over the ``N`` states, which are treated
  independently (the network must not mix rows: true of MLPs, and of batch norm in eval mode);
* the network runs in eval mode (no dropout) and in ``dtype`` (float32, the policy's own
  arithmetic, or float64 on a float64 copy of the network, for tests);
* the *action function* ``y(x)`` (:func:`action_function`) is the policy's deterministic output
  in action units *before clipping* to the Box bounds: the action mean (SB3 PPO / A2C gaussian
  heads), the network output (``linear`` heads), ``rescale(tanh(mean))`` (squashed gaussian:
  SAC) and ``rescale(net(x))`` (``deterministic``: TD3; these two are never clipped), or the
  logits / Q-values of discrete heads. The clip is left out on purpose: it has a zero
  derivative wherever the action saturates, so the Jacobian of the clipped action would call a
  saturated state perfectly stable along every direction although a perturbation that brings
  the mean back inside the bounds does change the action. :func:`min_perturbation` does take
  the clip into account, since it measures the actual action change;
* action change of a continuous policy (as :func:`~certrl.certificates.propagation.
  pgd_max_deviation` and :func:`~certrl.certificates.propagation.action_deviation_bounds`
  define it): ``||a(x') - a(x)||_inf`` with ``a`` the deterministic action the policy takes
  (``clip(mean, low, high)``, ``rescale(tanh(mean))``, ``rescale(net(x))``), in action units,
  the difference taken in float64; of a discrete policy: a change of the greedy (argmax)
  action, whose margin is ``y_a(x) - max_{j != a} y_j(x)``.

Directions (:func:`top_directions`, :func:`unstable_subspace`): right singular vectors of the
Jacobian ``J = dy/dx [k, d]`` -- the unit observation perturbations that move ``y`` most to
first order, ``||J v|| = s`` -- with a deterministic sign: the component of largest absolute
value is positive (the first such component on ties), so that directions of different states
or policies can be compared entry by entry. Directions of (near-)equal singular values are not
unique; compare subspaces (:func:`subspace_overlap`) rather than vectors there.

:func:`min_perturbation` is an *empirical* search (PGD inside a bisection on the radius): every
value it returns is attained by an explicit perturbation that changes the action, so it is an
**upper bound on the true minimal perturbation, not a certificate**: a smaller perturbation that
the search missed may exist. The sound counterparts are the certified radii of
:mod:`certrl.certificates.propagation` (a lower bound on the same minimum).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from certrl.policies.base import Policy, PolicyError
from certrl.smoothing import resolve_space

__all__ = [
    "DEFAULT_TOL_FRACTION",
    "MinPerturbation",
    "action_function",
    "action_jacobian",
    "dimension_shares",
    "margin_jacobian",
    "min_perturbation",
    "min_perturbation_search",
    "similarity_matrix",
    "subspace_overlap",
    "temporal_similarity",
    "top_directions",
    "unstable_subspace",
]

#: Default ``tol`` of :func:`min_perturbation` for continuous policies, as a fraction of the
#: narrowest action range ``min_i (high_i - low_i)`` (0.1 for ``[-1, 1]`` boxes).
DEFAULT_TOL_FRACTION = 0.05
NORMS = ("linf", "l2")
JACOBIAN_METHODS = ("auto", "func", "autograd")


# ------------------------------------------------------------------------------- helpers
def _device(policy: Policy) -> torch.device:
    for t in policy.parameters():
        return t.device
    for t in policy.buffers():
        return t.device
    return torch.device("cpu")


def _as_2d(policy: Policy, obs: ArrayLike | Tensor, dtype: torch.dtype) -> Tensor:
    x = obs if isinstance(obs, Tensor) else torch.as_tensor(np.asarray(obs))
    x = x.detach().to(device=_device(policy), dtype=dtype)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != policy.obs_dim:
        raise ValueError(f"nobs must have shape [N, {policy.obs_dim}], got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("nobs must be finite")
    return x


def _clips(policy: Policy) -> bool:
    """Whether the deterministic action is ``clip(y, low, high)`` (else it is ``y`` itself)."""
    return policy.head == "linear" or (policy.head == "gaussian" and not policy.squash)


def _need_bounds(policy: Policy) -> None:
    if not policy.discrete and not policy.bounds_known:
        raise PolicyError(
            "this policy file does not record its action bounds: check it against the "
            "environment first (validate_spaces / --env), or call with_action_bounds"
        )


@contextmanager
def _eval_mode(policy: Policy) -> Iterator[None]:
    """Eval mode (no dropout, frozen batch norm) for the duration, then the previous flags."""
    flags = [(m, m.training) for m in policy.modules()]
    policy.eval()
    try:
        yield
    finally:
        for m, t in flags:
            m.training = t


def _fix_signs(v: Tensor) -> Tensor:
    """Flip each vector (last axis) so that its largest-|component| entry is positive."""
    idx = v.abs().argmax(-1, keepdim=True)
    s = torch.sign(v.gather(-1, idx))
    return v * torch.where(s == 0, torch.ones_like(s), s)


def _unit_rows(v: Tensor) -> Tensor:
    n = v.norm(dim=-1, keepdim=True)
    return torch.where(n > 0, v / n.clamp_min(torch.finfo(v.dtype).tiny), torch.zeros_like(v))


# ------------------------------------------------------------------------ action function
def action_function(
    policy: Policy, *, space: str | None = "normalized", dtype: torch.dtype = torch.float32
) -> Callable[[Tensor], Tensor]:
    """The differentiable map ``x [N, d] -> y [N, k]`` that the diagnostics differentiate.

    Continuous policies (``k = act_dim``): the deterministic action in action units *before*
    clipping to the Box bounds -- the mean of gaussian heads (SB3 PPO / A2C act on
    ``clip(mean)``), the network output of ``linear`` heads (clipped when acting),
    ``rescale(tanh(mean))`` of squashed gaussians (SAC) and ``rescale(net(x))`` of
    ``deterministic`` heads (TD3), the last two being the action itself. The clip is left out
    because its derivative is zero where the action saturates (see the module docstring).
    Discrete policies (``k = n_actions``): the logits or Q-values, whose argmax is the action.

    ``x`` lies in ``space`` (``normalized``: the policy's network input; ``raw``: the
    normalization is applied inside). ``dtype=torch.float64`` runs a float64 copy of the network
    (made once, here). The function computes what
    :meth:`~certrl.policies.base.Policy.act_normalized` computes before its clip / argmax (up
    to the rounding of the small-batch padding of inference), and works under ``torch.func``
    transforms for ``nn.Module`` networks. The policy should be in eval mode (a
    :class:`Policy` puts itself there; the other functions of this module enforce it).
    """
    space = resolve_space(policy, space)
    if policy.head == "deterministic" or (policy.head == "gaussian" and policy.squash):
        _need_bounds(policy)
    net = policy.net
    if dtype != torch.float32:
        net = copy.deepcopy(policy.net).to(dtype)
        net.eval()
    raw = space == "raw" and policy.obs_norm is not None
    mu = policy._mu.to(dtype) if raw else None
    scale = policy._scale.to(dtype) if raw else None
    clip = float(policy._clip) if raw else math.inf
    low = high = None
    if not policy.discrete:
        low, high = policy._low.to(dtype), policy._high.to(dtype)
    head, squash = policy.head, policy.squash

    def f(x: Tensor) -> Tensor:
        z = x.to(dtype)
        if mu is not None and scale is not None:
            z = (z - mu) / scale
            if math.isfinite(clip):
                z = torch.clamp(z, -clip, clip)
        out = net(z)
        if isinstance(out, tuple):  # (mean, log_std) actors
            out = out[0]
        if head == "gaussian" and squash:
            out = torch.tanh(out)
        if head == "deterministic" or (head == "gaussian" and squash):
            assert low is not None and high is not None
            return low + (out + 1.0) * 0.5 * (high - low)  # Policy._rescale
        return out

    return f


def _to_action(policy: Policy, y: Tensor) -> Tensor:
    """Deterministic continuous action from the action function's output (the clip)."""
    if _clips(policy):
        return torch.minimum(torch.maximum(y, policy._low.to(y)), policy._high.to(y))
    return y


# ------------------------------------------------------------------------------ Jacobians
def _jac_autograd(f: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``[N, k, d]`` by ``k`` backward passes over the whole batch (rows are independent)."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = f(xg)
        k = y.shape[1]
        rows = []
        for j in range(k):
            (g,) = torch.autograd.grad(y[:, j].sum(), xg, retain_graph=j < k - 1,
                                       allow_unused=True)
            rows.append(torch.zeros_like(x) if g is None else g)
    return torch.stack(rows, 1).detach()


def _jac_func(f: Callable[[Tensor], Tensor], x: Tensor, k: int,
              chunk_size: int | None) -> Tensor:
    from torch.func import jacfwd, jacrev, vmap

    def one(xi: Tensor) -> Tensor:
        return f(xi[None])[0]

    jac = jacrev(one) if k <= x.shape[1] else jacfwd(one)  # reverse mode when k <= d
    return vmap(jac, chunk_size=chunk_size)(x.detach()).detach()


def _jacobian(f: Callable[[Tensor], Tensor], x: Tensor, method: str,
              chunk_size: int | None = None) -> Tensor:
    if method not in JACOBIAN_METHODS:
        raise ValueError(f"method must be one of {JACOBIAN_METHODS}, got {method!r}")
    if method == "autograd":
        return _jac_autograd(f, x)
    with torch.no_grad():
        k = int(f(x[:1]).shape[1])
    if method == "func":
        return _jac_func(f, x, k, chunk_size)
    try:
        return _jac_func(f, x, k, chunk_size)
    except Exception:  # modules torch.func cannot transform (TorchScript, interpreters)
        return _jac_autograd(f, x)


def action_jacobian(
    policy: Policy,
    nobs: ArrayLike | Tensor,
    *,
    space: str | None = "normalized",
    dtype: torch.dtype = torch.float32,
    method: str = "auto",
    chunk_size: int | None = None,
) -> Tensor:
    """Jacobian ``J [N, k, d]`` of the action function (:func:`action_function`) at each state.

    ``J[i, j, l] = d y_j / d x_l`` at ``nobs[i]``: continuous policies, the pre-clip action in
    action units per unit of observation (``space``); discrete ones, the logits / Q-values.
    ``method``: ``"func"`` -- ``torch.func.vmap`` over ``jacrev`` (reverse mode, when
    ``k <= d``) or ``jacfwd`` (forward mode, ``k > d``), ``chunk_size`` states at a time
    (all by default); ``"autograd"`` -- ``k`` batched backward passes; ``"auto"`` -- ``func``,
    falling back to ``autograd`` for networks ``torch.func`` cannot transform. Eval mode;
    ``dtype`` as in :func:`action_function`. Returned detached, in ``dtype``.
    """
    x = _as_2d(policy, nobs, dtype)
    f = action_function(policy, space=space, dtype=dtype)
    with _eval_mode(policy):
        return _jacobian(f, x, method, chunk_size)


def margin_jacobian(
    policy: Policy,
    nobs: ArrayLike | Tensor,
    *,
    space: str | None = "normalized",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Gradient ``[N, d]`` of the greedy margin ``y_a(x) - y_b(x)`` of a discrete policy.

    ``a = argmax_j y_j(x)`` is the greedy action and ``b = argmax_{j != a} y_j(x)`` the runner-up
    (lowest index on ties), both fixed at ``x``; ``y`` are the logits / Q-values. Minus this
    gradient is the direction along which the action flips fastest to first order (the flip
    needs ``margin / ||gradient||_*``, the dual norm of the threat norm). Raises
    :class:`ValueError` for continuous policies and for a single action.
    """
    if not policy.discrete:
        raise ValueError("margin_jacobian is for discrete policies; use action_jacobian")
    if policy.n_actions < 2:
        raise ValueError("a policy with a single action has no greedy margin")
    x = _as_2d(policy, nobs, dtype)
    f = action_function(policy, space=space, dtype=dtype)
    with _eval_mode(policy):
        with torch.no_grad():
            y0 = f(x)
        a = y0.argmax(-1, keepdim=True)
        b = y0.scatter(1, a, -math.inf).argmax(-1, keepdim=True)
        xg = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            y = f(xg)
            m = y.gather(1, a) - y.gather(1, b)
            (g,) = torch.autograd.grad(m.sum(), xg)
    return g.detach()


# ----------------------------------------------------------------------------- directions
def top_directions(jac: Tensor, k: int = 3) -> tuple[Tensor, Tensor]:
    """Top singular values ``sing [N, k']`` and right singular vectors ``vecs [N, k', d]``.

    ``jac [N, m, d]`` (e.g. :func:`action_jacobian`; a ``[N, d]`` gradient such as
    :func:`margin_jacobian` is read as ``m = 1``). ``vecs[i, r]`` is the unit observation
    direction ``v`` maximizing ``||J_i v||_2`` orthogonally to ``vecs[i, :r]``, and
    ``sing[i, r] = ||J_i vecs[i, r]||_2`` (descending). ``k' = min(k, m, d)`` (a Jacobian has at
    most ``min(m, d)`` singular directions). Sign convention: each vector's component of
    largest absolute value is positive (first one on ties), so the directions of consecutive
    states or of two policies can be compared. Computed by ``torch.linalg.svd`` in ``jac``'s
    dtype.
    """
    if jac.ndim == 2:
        jac = jac[:, None, :]
    if jac.ndim != 3:
        raise ValueError(f"jac must have shape [N, m, d] or [N, d], got {tuple(jac.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    _, s, vh = torch.linalg.svd(jac.detach(), full_matrices=False)
    kk = min(int(k), s.shape[-1])
    return s[:, :kk], _fix_signs(vh[:, :kk])


def dimension_shares(sing: Tensor, vecs: Tensor, directions: int = 1) -> Tensor:
    """Share ``[d]`` of the first-order action sensitivity carried by each observation dimension.

    ``shares[l] = sum_i sum_{r < directions} sing[i, r]^2 vecs[i, r, l]^2 / sum_i sum_r
    sing[i, r]^2``: the energy of the top direction (``directions=1``, the default) of every
    state split over the dimensions (``vecs`` rows are unit vectors), each state weighted by
    its squared top singular value, so states where the policy is more sensitive count more.
    Sums to 1; all zeros if every singular value is 0 (a policy that ignores its input). With
    ``directions = m`` (all of them) this is the per-dimension share of ``sum_i ||J_i||_F^2``.
    ``sing [N, k]``, ``vecs [N, k, d]`` from :func:`top_directions` (``[k]``, ``[k, d]`` for
    one state).
    """
    if sing.ndim == 1:
        sing, vecs = sing[None], vecs[None]
    if vecs.ndim != 3 or sing.shape != vecs.shape[:2]:
        raise ValueError(f"expected sing [N, k] and vecs [N, k, d], got {tuple(sing.shape)} "
                         f"and {tuple(vecs.shape)}")
    r = max(1, int(directions))
    w = sing[:, :r].to(torch.float64) ** 2
    e = (w[..., None] * vecs[:, :r].to(torch.float64) ** 2).sum((0, 1))
    total = e.sum()
    out = e / total if float(total) > 0 else torch.zeros_like(e)
    return out.to(vecs.dtype)


def temporal_similarity(vecs1: Tensor) -> Tensor:
    """``|cos|`` between the directions of consecutive steps of one episode: ``[T - 1]``.

    ``vecs1 [T, d]``: one direction per step (e.g. ``vecs[:, 0]`` of :func:`top_directions`).
    ``out[t] = |<u_t, u_{t+1}>| / (||u_t|| ||u_{t+1}||)`` in ``[0, 1]`` (sign-free, as a
    singular direction has no intrinsic sign; 0 where a vector is zero). Low values mean the
    fragile direction oscillates in time.
    """
    if vecs1.ndim != 2:
        raise ValueError(f"vecs1 must have shape [T, d], got {tuple(vecs1.shape)}")
    u = _unit_rows(vecs1)
    return (u[1:] * u[:-1]).sum(-1).abs().clamp(max=1.0)


def similarity_matrix(vecs1: Tensor) -> Tensor:
    """``|cos|`` between the directions of every pair of steps: ``[T, T]`` (see
    :func:`temporal_similarity`); symmetric, ones on the diagonal (zero rows for zero
    vectors)."""
    if vecs1.ndim != 2:
        raise ValueError(f"vecs1 must have shape [T, d], got {tuple(vecs1.shape)}")
    u = _unit_rows(vecs1)
    return (u @ u.T).abs().clamp(max=1.0)


def unstable_subspace(jac: Tensor, k_dims: int = 3) -> tuple[Tensor, Tensor]:
    """The observation subspace along which the action changes most on average over states.

    Top ``k' = min(k_dims, d)`` eigenpairs of the average Gram matrix
    ``G = mean_i J_i^T J_i [d, d]`` (``jac [N, m, d]``, or ``[N, d]`` gradients read as
    ``m = 1``): ``eigvals [k']`` descending, ``eigvals[r] = mean_i ||J_i u_r||_2^2``, and the
    orthonormal ``basis [d, k']`` (columns ``u_r``, sign convention of :func:`top_directions`).
    ``span(basis)`` maximizes ``mean_i ||J_i P||_F^2`` over ``k'``-dimensional projections
    ``P``. Computed in float64 (``torch.linalg.eigh``), returned in ``jac``'s dtype.
    """
    if jac.ndim == 2:
        jac = jac[:, None, :]
    if jac.ndim != 3 or jac.shape[0] == 0:
        raise ValueError(f"jac must have shape [N, m, d] (N > 0), got {tuple(jac.shape)}")
    j = jac.detach().to(torch.float64)
    g = torch.einsum("nmd,nme->de", j, j) / j.shape[0]
    g = 0.5 * (g + g.T)
    vals, vecs = torch.linalg.eigh(g)  # ascending
    kk = min(max(1, int(k_dims)), g.shape[0])
    vals = vals.flip(0)[:kk].clamp_min(0.0)
    basis = _fix_signs(vecs.flip(1)[:, :kk].T).T
    return vals.to(jac.dtype), basis.to(jac.dtype)


def subspace_overlap(U1: Tensor, U2: Tensor) -> dict[str, Any]:
    """How much two subspaces of observation space coincide.

    ``U1 [d, k1]``, ``U2 [d, k2]``: bases (columns; made orthonormal here by a QR
    factorization, so any basis of full column rank gives the same result). Returns
    ``overlap`` (float) ``= ||Q1^T Q2||_F^2 / k`` with ``k = min(k1, k2)``: 1 when the smaller
    subspace lies in the other, 0 when they are orthogonal, the mean squared cosine of the
    principal angles in between; and ``principal_angles_deg`` (``[k]`` tensor, ascending,
    degrees): the principal angles (Bjorck & Golub 1973), each from both its cosine (singular
    values of ``Q1^T Q2``) and its sine (singular values of the part of the smaller basis
    orthogonal to the larger one) with ``atan2``, accurate near 0 and 90 degrees alike.
    Invariant to rotations (changes of basis) within either subspace.
    """
    if U1.ndim == 1:
        U1 = U1[:, None]
    if U2.ndim == 1:
        U2 = U2[:, None]
    if U1.ndim != 2 or U2.ndim != 2 or U1.shape[0] != U2.shape[0]:
        raise ValueError(f"expected bases [d, k1] and [d, k2], got {tuple(U1.shape)} and "
                         f"{tuple(U2.shape)}")
    q1 = torch.linalg.qr(U1.detach().to(torch.float64), mode="reduced").Q
    q2 = torch.linalg.qr(U2.detach().to(torch.float64), mode="reduced").Q
    if q1.shape[1] < q2.shape[1]:
        q1, q2 = q2, q1  # q2: the smaller basis
    m = q1.T @ q2  # [k1, k2]
    cos = torch.linalg.svdvals(m)  # descending: smallest angle first
    sin = torch.linalg.svdvals(q2 - q1 @ m)  # descending: largest angle first
    angles = torch.rad2deg(torch.atan2(sin.flip(0), cos))
    k = q2.shape[1]
    overlap = float((m**2).sum() / k)
    return {"overlap": min(1.0, max(0.0, overlap)),
            "principal_angles_deg": angles.to(U1.dtype if U1.is_floating_point()
                                              else torch.float64)}


# --------------------------------------------------------------- minimal perturbations
@dataclass
class MinPerturbation:
    """Result of :func:`min_perturbation_search`.

    ``eps [N]`` float64: the smallest perturbation norm found that changes the action (``inf``
    where none was found up to ``eps_max``) -- an upper bound on the true minimum, not a
    certificate; ``delta [N, d]``: a perturbation attaining it (in the threat space;
    ``x + delta`` changes the action, ``||delta|| = eps``; zeros where ``eps`` is ``inf``);
    ``found [N]``: ``eps < inf``; ``norm``; ``tol`` (continuous policies; ``None`` for discrete
    ones)."""

    eps: Tensor
    delta: Tensor
    found: Tensor
    norm: str
    tol: float | None


@dataclass
class _Targets:
    """The ways the action can change: ``T`` targets per state, each a scalar ``progress``
    that changes the action once it exceeds ``thr``. Continuous: ``T = 2 act_dim`` targets
    ``(i, s)``, progress ``s (y_i(x') - a_i(x))`` (the pre-clip action moving coordinate ``i``
    by more than ``tol`` in direction ``s``; feasible iff ``a_i + s tol`` lies strictly inside
    the bounds, else the clip forbids it), ``thr = tol``. Discrete: ``T = n_actions`` targets
    ``j``, progress ``y_j(x') - y_a(x')``, feasible iff ``j != a``, ``thr = 0``."""

    a0: Tensor  # [N, k] clean action (continuous) or [N] greedy action (discrete)
    idx: Tensor  # [T] coordinate of each target (continuous)
    sgn: Tensor  # [T] direction of each target (continuous)
    feasible: Tensor  # [N, T]
    grad: Tensor  # [N, T, d] gradient of the progress at x
    order: Tensor  # [N, T] targets by first-order radius, ascending
    n_feasible: Tensor  # [N]


def _progress(policy: Policy, tg: _Targets, y: Tensor, rows: Tensor) -> Tensor:
    if policy.discrete:
        return y - y.gather(1, tg.a0[rows][:, None])
    return tg.sgn * (y[:, tg.idx] - tg.a0[rows][:, tg.idx])


def _success(policy: Policy, tg: _Targets, y: Tensor, rows: Tensor, tol: float) -> Tensor:
    if policy.discrete:
        return y.argmax(-1) != tg.a0[rows]
    dev = (_to_action(policy, y).double() - tg.a0[rows].double()).abs()  # exact difference
    return dev.amax(-1) > tol


def _targets(policy: Policy, f: Callable[[Tensor], Tensor], x: Tensor, tol: float,
             norm: str) -> _Targets:
    with torch.no_grad():
        y0 = f(x)
    jac = _jac_autograd(f, x)  # [N, k, d]; rows independent, as the attack itself assumes
    n = x.shape[0]
    if policy.discrete:
        a0 = y0.argmax(-1)
        k = y0.shape[1]
        idx = torch.arange(k, device=x.device)
        sgn = torch.ones(k, dtype=x.dtype, device=x.device)
        feasible = idx[None, :] != a0[:, None]
        grad = jac - jac[torch.arange(n), a0][:, None]
        need = (y0.gather(1, a0[:, None]) - y0).double()
    else:
        a0 = _to_action(policy, y0)
        k = y0.shape[1]
        idx = torch.arange(k, device=x.device).repeat_interleave(2)
        sgn = torch.tensor([1.0, -1.0], dtype=x.dtype, device=x.device).repeat(k)
        low, high = policy._low.double()[idx], policy._high.double()[idx]
        target = a0.double()[:, idx] + sgn.double() * tol
        feasible = (target > low) & (target < high)
        grad = sgn[None, :, None] * jac[:, idx]
        need = tol - (sgn * (y0[:, idx] - a0[:, idx])).double()
    dual = grad.double().abs().sum(-1) if norm == "linf" else grad.double().norm(dim=-1)
    # first-order radius of each target; a feasible target without gradient ranks after the
    # others, infeasible targets last
    est = torch.where(dual > 0, need.clamp_min(0.0) / dual.clamp_min(1e-300),
                      torch.full_like(dual, 1e300))
    est = torch.where(feasible, est, torch.full_like(est, math.inf))
    order = torch.argsort(est, dim=1, stable=True)
    return _Targets(a0, idx, sgn, feasible, grad, order, feasible.sum(1))


def _project(delta: Tensor, radius: Tensor, norm: str) -> Tensor:
    if norm == "linf":
        return torch.maximum(torch.minimum(delta, radius), -radius)
    nrm = delta.norm(dim=1, keepdim=True)
    return delta * torch.where(nrm > radius, radius / nrm.clamp_min(1e-30), torch.ones_like(nrm))


def _direction(g: Tensor, norm: str) -> Tensor:
    if norm == "linf":
        return torch.sign(g)
    return g / g.norm(dim=-1, keepdim=True).clamp_min(1e-30)


def _random_ball(n: int, d: int, radius: Tensor, norm: str, gen: torch.Generator,
                 like: Tensor) -> Tensor:
    if norm == "linf":
        u = torch.rand((n, d), generator=gen, dtype=torch.float64) * 2 - 1
    else:
        z = torch.randn((n, d), generator=gen, dtype=torch.float64)
        r = torch.rand((n, 1), generator=gen, dtype=torch.float64) ** (1.0 / d)
        u = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12) * r
    return u.to(like) * radius


def _attack(policy: Policy, f: Callable[[Tensor], Tensor], tg: _Targets, x: Tensor,
            sel: Tensor, radius: Tensor, norm: str, tol: float, steps: int, restarts: int,
            step_frac: float, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Batched PGD at per-state ``radius [n]`` on the states ``sel``: (success [n], norm of the
    smallest successful perturbation [n] (inf if none), that perturbation [n, d])."""
    n, d = sel.shape[0], x.shape[1]
    rad = radius.to(x)[:, None]  # [n, 1]
    n_lin = restarts - 1 if restarts >= 2 else 1  # first-order starts; the last one is random
    starts = []
    for r in range(restarts):
        rand = _random_ball(n, d, rad, norm, gen, x)
        if r < n_lin:
            valid = r < tg.n_feasible[sel]
            t = tg.order[sel, min(r, tg.order.shape[1] - 1)]
            g = tg.grad[sel, t]  # [n, d]
            lin = rad * _direction(g, norm)
            starts.append(torch.where(valid[:, None], lin, rand))
        else:
            starts.append(rand)
    delta = _project(torch.cat(starts), rad.repeat(restarts, 1), norm)
    rows = sel.repeat(restarts)
    xr = x[sel].repeat(restarts, 1)
    radr = rad.repeat(restarts, 1)
    feas = tg.feasible[rows]
    alpha = step_frac * radr / max(steps, 1)
    best = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
    best_delta = torch.zeros((n, d), dtype=x.dtype, device=x.device)
    done = torch.zeros(n, dtype=torch.bool, device=x.device)
    ar = torch.arange(n, device=x.device)
    for it in range(steps + 1):
        dv = delta.detach().requires_grad_(it < steps)
        with torch.enable_grad():
            inp = xr + dv
            y = f(inp)
        with torch.no_grad():
            succ = _success(policy, tg, y.detach(), rows, tol)
            actual = inp.detach() - xr  # the perturbation the policy saw
            a64 = actual.double()
            nrm = a64.abs().amax(-1) if norm == "linf" else a64.norm(dim=-1)
            cand = torch.where(succ, nrm, torch.full_like(nrm, math.inf)).reshape(restarts, n)
            m, which = cand.min(0)
            better = m < best
            best = torch.where(better, m, best)
            pick = actual.reshape(restarts, n, d)[which, ar]
            best_delta = torch.where(better[:, None], pick, best_delta)
            done |= succ.reshape(restarts, n).any(0)
        if it == steps or bool(done.all()):
            break
        with torch.enable_grad():
            p = _progress(policy, tg, y, rows).masked_fill(~feas, -math.inf)
            value = p.max(-1).values  # subgradient of the best target only
            (g,) = torch.autograd.grad(value.sum(), dv)
        with torch.no_grad():
            delta = _project(delta + alpha * _direction(g, norm), radr, norm)
    return done, best, best_delta


def min_perturbation_search(
    policy: Policy,
    nobs: ArrayLike | Tensor,
    *,
    norm: str = "linf",
    tol: float | None = None,
    eps_max: float,
    steps: int = 20,
    restarts: int = 2,
    bisect: int = 12,
    seed: int = 0,
    space: str | None = "normalized",
    dtype: torch.dtype = torch.float32,
    step_frac: float = 2.5,
    scan: int = 4,
) -> MinPerturbation:
    """:func:`min_perturbation` with the perturbations that attain it (:class:`MinPerturbation`).

    Search, per state, all states at once. A scan: the attack at the ``scan`` radii
    ``eps_max * 2^-j`` (``j < scan``, one batch; PGD's success need not be monotone in the radius,
    and large balls can trap it where the policy saturates), giving ``hi``, the norm of the
    smallest successful perturbation, and ``lo``, the largest failed radius below it (or 0); then,
    where something was found, ``bisect`` bisection steps on ``[lo, hi]``, each running the attack
    at the midpoint (success: ``hi`` = the norm found there, ``<=`` the midpoint; failure: ``lo`` =
    the midpoint). The attack: ``restarts`` starts per state -- the first ``restarts - 1`` (at
    least one) at the first-order optimum ``radius * sign(g)`` (``linf``) or
    ``radius * g / ||g||`` (``l2``) of the targets ranked best by their first-order radius
    ``(thr - progress) / ||g||_*`` (``g``: gradient at ``x`` of the target's progress, see below;
    ``||.||_*`` the dual norm), the last one uniform in the ball (from a private
    ``torch.Generator`` seeded with ``seed``) -- then ``steps`` projected steps of size
    ``step_frac * radius / steps``, sign steps (``linf``) or normalized gradient steps (``l2``)
    on the largest progress over the feasible targets. Targets: continuous policies, coordinate
    ``i`` of the pre-clip action moving past ``a_i(x) +- tol`` (skipped where the clip bound
    lies within ``tol``); discrete, logit ``j`` overtaking the greedy one (the negative margin).
    Every iterate is checked on the actual action (clipped, difference in float64; argmax) and
    the smallest successful perturbation norm is kept.

    Guarantee: where ``eps[i] < inf``, ``x_i + delta[i]`` with ``||delta[i]|| = eps[i]``
    (computed on the perturbation as rounded in ``dtype``) changes the action, so the true
    minimal perturbation is ``<= eps[i]``; ``eps`` is an *upper bound*, not a certificate, and
    ``inf`` only means that the search found nothing up to ``eps_max``. The search resolves
    ``eps`` to within ``(hi - lo) / 2^bisect <= eps_max / 2^bisect`` (absolute) of what PGD can
    find; for linear policies the first-order start is the exact optimum, so ``eps`` is the true
    minimum to that resolution. Cost: ``scan + bisect`` attacks of at most ``steps + 1``
    forward / backward passes on ``restarts`` rows per state (an attack stops once every state
    has succeeded).
    Deterministic given ``seed`` and the batch (random starts are drawn for the whole batch).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be linf or l2, got {norm!r}")
    eps_max = float(eps_max)
    if not (math.isfinite(eps_max) and eps_max > 0):
        raise ValueError(f"eps_max must be a finite number > 0, got {eps_max}")
    if int(steps) < 0 or int(restarts) < 1 or int(bisect) < 0 or int(scan) < 1:
        raise ValueError("steps and bisect must be >= 0, restarts and scan >= 1")
    steps, restarts, bisect, scan = int(steps), int(restarts), int(bisect), int(scan)
    if policy.discrete:
        tol_v = 0.0
        out_tol: float | None = None
    else:
        _need_bounds(policy)
        if tol is None:
            tol_v = DEFAULT_TOL_FRACTION * float(np.min(policy._high.double().cpu().numpy()
                                                        - policy._low.double().cpu().numpy()))
        else:
            tol_v = float(tol)
        if not (math.isfinite(tol_v) and tol_v >= 0):
            raise ValueError(f"tol must be a finite number >= 0, got {tol_v}")
        out_tol = tol_v
    x = _as_2d(policy, nobs, dtype)
    n, d = x.shape
    f = action_function(policy, space=space, dtype=dtype)
    gen = torch.Generator().manual_seed(int(seed))
    hi = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
    lo = torch.zeros(n, dtype=torch.float64, device=x.device)
    delta = torch.zeros((n, d), dtype=dtype, device=x.device)
    with _eval_mode(policy):
        tg = _targets(policy, f, x, tol_v, norm)

        def run(sel: Tensor, radius: Tensor) -> None:
            ok, nrm, dl = _attack(policy, f, tg, x, sel, radius, norm, tol_v, steps, restarts,
                                  step_frac, gen)
            better = ok & (nrm < hi[sel])
            s = sel[better]
            hi[s] = nrm[better]
            delta[s] = dl[better]
            fail = sel[~ok]
            lo[fail] = torch.maximum(lo[fail], radius[~ok])

        sel = torch.nonzero(tg.n_feasible > 0).flatten()
        if sel.numel():  # the scan: every state at every radius of the grid, one batch
            m = sel.numel()
            grid = eps_max * 0.5 ** torch.arange(scan, dtype=torch.float64, device=x.device)
            radius = grid.repeat_interleave(m)
            ok, nrm, dl = _attack(policy, f, tg, x, sel.repeat(scan), radius, norm, tol_v,
                                  steps, restarts, step_frac, gen)
            ok, nrm, radius = ok.reshape(scan, m), nrm.reshape(scan, m), radius.reshape(scan, m)
            best, which = torch.where(ok, nrm, torch.full_like(nrm, math.inf)).min(0)
            hi[sel] = best
            delta[sel] = dl.reshape(scan, m, d)[which, torch.arange(m, device=x.device)]
            failed = torch.where(~ok & (radius < best), radius, torch.zeros_like(radius))
            lo[sel] = failed.amax(0)
        for _ in range(bisect):
            sel = torch.nonzero(torch.isfinite(hi)).flatten()
            if not sel.numel():
                break
            lo = torch.minimum(lo, hi)
            run(sel, 0.5 * (lo[sel] + hi[sel]))
    return MinPerturbation(hi, delta, torch.isfinite(hi), norm, out_tol)


def min_perturbation(
    policy: Policy,
    nobs: ArrayLike | Tensor,
    *,
    norm: str = "linf",
    tol: float | None = None,
    eps_max: float,
    steps: int = 20,
    restarts: int = 2,
    bisect: int = 12,
    seed: int = 0,
    space: str | None = "normalized",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Smallest perturbation ``eps [N]`` (float64) found to change each state's action.

    Discrete policies: a perturbation ``||delta|| <= eps`` (``norm`` ``linf`` or ``l2``, in
    ``space``) that changes the greedy action; continuous ones: one that moves the deterministic
    (clipped) action by more than ``tol`` in ``l_inf``, in action units -- the deviation of
    :func:`~certrl.certificates.propagation.pgd_max_deviation` /
    :func:`~certrl.certificates.propagation.action_deviation_bounds` (``tol`` defaults to
    :data:`DEFAULT_TOL_FRACTION` of the narrowest action range; ignored for discrete
    policies). Found by bisection on ``eps`` in ``[0, eps_max]`` with a batched PGD at each
    radius (details: :func:`min_perturbation_search`); ``inf`` where nothing is found up to
    ``eps_max``.

    **An empirical upper bound on the true minimal perturbation, not a certificate**: each
    finite value is attained by a perturbation that changes the action; a smaller one may
    exist. (So a certified radius can never exceed it: a certificate at any ``eps >=`` this
    value would be unsound.) Deterministic given ``seed``.
    """
    return min_perturbation_search(
        policy, nobs, norm=norm, tol=tol, eps_max=eps_max, steps=steps, restarts=restarts,
        bisect=bisect, seed=seed, space=space, dtype=dtype).eps
