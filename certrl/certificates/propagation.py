"""Sound per-step output bounds of MLP policies: interval bound propagation and CROWN.

Setting (common to every function in this module):

* the policy's network ``net`` is an MLP: ``nn.Linear`` layers and elementwise activations
  (``Tanh``, ``ReLU``, ``ELU``, ``LeakyReLU``, ``Sigmoid``, ``Hardtanh``, ``Identity``), in
  (possibly nested) ``nn.Sequential`` s, or SAC's :class:`~certrl.policies._nets.GaussianActor`
  (its mean path ``mu(latent(x))``); :func:`extract_mlp` raises :class:`BoundError` for anything
  else;
* threat model: one observation is perturbed inside a ball, ``||x' - x|| <= eps`` (``linf`` or
  ``l2``), in the space the attacks use (:class:`~certrl.attacks.base.ThreatModel`):
  ``normalized`` -- ``x`` is the normalized observation and the policy acts on
  ``act_normalized(x')`` (no re-clipping); ``raw`` -- ``x`` is the raw observation and the policy
  acts on ``act(x')``, i.e. on ``clamp((x' - mu) / scale, -clip, clip)``. The raw -> normalized
  map is included as a diagonal affine layer followed by a clamp activation;
* single step, static: each state's ball is bounded separately (no temporal coupling, no
  episode budget).

Methods:

* ``"ibp"``: interval bound propagation (Gowal et al., "On the Effectiveness of Interval Bound
  Propagation for Training Verifiably Robust Models", 2018): boxes through affine layers
  (``W c + b +- |W| r``) and monotone activations. The l2 ball is replaced by the box that
  contains it. Loose: it ignores correlations between neurons (width grows like ``prod |W|``);
* ``"crown"``: CROWN (Zhang et al., "Efficient Neural Network Robustness Certification with
  General Activation Functions", NeurIPS 2018): every activation is enclosed between two lines
  ``a_L z + c_L <= sigma(z) <= a_U z + c_U`` on its pre-activation interval, and linear bounds
  of the output in terms of the input are back-substituted layer by layer, then maximised over
  the input set in closed form (``linf``: ``l1`` row norm; ``l2``: ``l2`` row norm). Every
  intermediate layer is bounded the same way (full CROWN) and intersected with IBP (both are
  sound, so the elementwise max / min is too). Loose where the relaxations are (wide intervals
  of unstable neurons) and because each output is bounded separately.

Linear relaxations (all sound by construction). A slope ``k`` is chosen per neuron by the
heuristics of the CROWN paper, and the intercepts are then the *tightest* ones for that slope,
``c_U = max_{z in [l, u]} sigma(z) - k z`` and ``c_L = min_{z in [l, u]} sigma(z) - k z``,
computed exactly by evaluating ``sigma(z) - k z`` at every point where its maximum or minimum
can be: the ends ``l``, ``u`` and the stationary / kink points in ``[l, u]`` (tanh:
``+-acosh(1 / sqrt(k))``, where ``tanh'(z) = 1 - tanh(z)^2 = k``; sigmoid:
``+-2 acosh(1 / (2 sqrt(k)))``; ELU: ``0`` and ``log(k / alpha)``; ReLU / LeakyReLU: ``0``;
clamp: ``lo``, ``hi``). Soundness therefore never depends on the slope heuristic. Slopes:

* tanh / sigmoid (convex on ``z < 0``, concave on ``z > 0``): ``u <= 0``: upper chord, lower
  tangent at the midpoint; ``l >= 0``: the mirror image; ``l < 0 < u``: upper = the chord if
  ``sigma'(u) >=`` chord slope, else the tangent at the ``d in (0, u)`` whose tangent passes
  through ``(l, sigma(l))`` (found by bisection; ``d >= 0`` lies in the concave part, so the
  tangent is above ``sigma`` on ``[0, u]``, and above on ``[l, 0]`` because ``tangent - sigma``
  is concave there and ``>= 0`` at both ends); lower = the mirror image (tangent at
  ``d in (l, 0)`` through ``(u, sigma(u))``, or the chord if ``sigma'(l) >=`` chord slope);
* ReLU / LeakyReLU (slope ``a <= 1``): upper chord, lower slope ``1`` if ``u >= -l`` else ``a``
  (CROWN's adaptive choice);
* ELU: upper chord, lower tangent at the midpoint (ELU is convex for ``alpha <= 1``);
* clamp ``[lo, hi]``: identity / constant where the interval is inside one piece; one kink:
  chord on the convex (concave) side and the adaptive ``0`` / ``1`` slope on the other; both
  kinks: chord slope on both sides.

Floating point. Bounds are computed in float64 on the float32 weights (exactly representable)
and are bounds on the float32 policy: the float32 forward pass differs from exact arithmetic
by at most ``e``, propagated forward with the standard model (Higham, "Accuracy and Stability
of Numerical Algorithms", 2002, Sec. 3.5): input rounding ``u (|x| + eps)``; affine layers
``|W| e + gamma_{n+1} (|W| m + |b|)`` (``gamma_n = n u / (1 - n u)``, ``u = 2^-24``, ``n`` the
fan-in, ``m`` the magnitude bound of the layer's input); activations ``L e + rho (m' + L e)``
(``L`` the largest slope of the activation on the pre-activation interval widened by ``e``, so
inactive ReLUs and saturated tanh units stop the error; ``rho = 8 u`` -- 4 ulp -- for tanh /
sigmoid / ELU kernels, ``u`` for LeakyReLU, 0 for ReLU / clamp), and the ``tanh`` / ``rescale``
of the action heads. Assumptions: float32 round-to-nearest arithmetic without TF32 / bf16 /
fast-math and elementwise kernels accurate to 4 ulp (glibc / SLEEF are within 1-3.5 ulp). This
worst-case model is conservative: on visited states it gives head-output margins up to
``1.6e-4`` (demo:hopper, median ``9e-5``) and ``1.6e-3`` (demo:pendulum, 256-wide, median
``4e-4``), while the float32 - float64 difference actually observed is about ``1e-6``. The
float64 arithmetic of the bounds themselves is covered by a further ``1e-9 (1 + |bound|)``
(orders of magnitude above its rounding error for these sizes; not directed rounding).
``float32_margin=False`` drops the float32 term (bounds on the exact-arithmetic network, the
convention of the IBP / CROWN papers). With ``eps = 0`` the widths are exactly these margins;
``OutputBounds.margin`` reports them.

Measured tightness (demo:hopper, 200 visited normalized states, eps 0.075): linf -- mean
CROWN / IBP head-output width ratio 0.22, mean certified linf action deviation 0.86 (CROWN) vs
1.91 (IBP) vs 0.55 found by PGD (30 steps x 5 restarts); l2 -- ratio 0.059, 0.22 (CROWN) vs
1.91 (IBP) vs 0.18 (PGD).
Cost: ``benchmarks/bench_bounds.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from certrl.policies._nets import GaussianActor
from certrl.policies.base import Policy

__all__ = [
    "ActionBounds",
    "BoundError",
    "GreedyCertificate",
    "Layer",
    "MLPSpec",
    "OutputBounds",
    "PGDResult",
    "action_deviation_bounds",
    "extract_mlp",
    "greedy_action_certified",
    "output_bounds",
    "pgd_max_deviation",
    "relaxation",
]

_U32 = 2.0**-24  # unit roundoff of float32
_ULP4 = 8 * _U32  # 4 ulp, relative: accuracy assumed of float32 tanh / sigmoid / exp kernels
_F64_SLACK = 1e-9  # relative widening for the float64 arithmetic of the bounds
_CHUNK_ELEMS = 1 << 19  # elements of the largest [chunk, m, n] CROWN tensor (4 MiB float64)
_BISECT = 10  # bisection steps for the tanh / sigmoid tangent points
_SUPPORTED = "Linear + tanh/relu/elu/leaky_relu/sigmoid/hardtanh"
_ACTIVATION_KINDS = ("tanh", "sigmoid", "relu", "leaky_relu", "elu", "clamp", "identity")
METHODS = ("ibp", "crown")
NORMS = ("linf", "l2")
SPACES = ("normalized", "raw")


class BoundError(ValueError):
    """A policy or request that bound propagation cannot handle (one-line message)."""


# ------------------------------------------------------------------------------------ layers
@dataclass(frozen=True)
class Layer:
    """One layer of an :class:`MLPSpec`.

    ``kind``: ``"affine"`` (``weight [out, in]``, ``bias [out]``, float64) or an elementwise
    activation: ``tanh``, ``sigmoid``, ``relu``, ``leaky_relu`` (negative slope ``alpha``),
    ``elu`` (``alpha``), ``clamp`` (to ``[lo, hi]``), ``identity``. ``exact``: an affine layer
    the float32 policy does not compute (an identity inserted between two activations), so it
    adds no rounding. ``fan_in``: the largest number of nonzero weights in a row (rounding
    model; 1 for the diagonal normalization layer)."""

    kind: str
    weight: Tensor | None = None
    bias: Tensor | None = None
    alpha: float = 0.0
    lo: float = -math.inf
    hi: float = math.inf
    exact: bool = False
    fan_in: int = 0

    @property
    def out_dim(self) -> int:
        assert self.weight is not None
        return int(self.weight.shape[-2])


def _affine(weight: Tensor, bias: Tensor | None, exact: bool = False) -> Layer:
    w = weight.detach().to(torch.float64)
    b = torch.zeros(w.shape[0], dtype=torch.float64) if bias is None else bias.detach().double()
    if not (bool(torch.isfinite(w).all()) and bool(torch.isfinite(b).all())):
        raise BoundError("bound propagation needs finite weights; this policy has inf or NaN")
    fan = int((w != 0).sum(1).max()) if w.numel() else 0
    return Layer("affine", w, b, exact=exact, fan_in=fan)


def _identity_affine(d: int) -> Layer:
    return Layer("affine", torch.eye(d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64),
                 exact=True, fan_in=1)


@dataclass(frozen=True)
class MLPSpec:
    """What bound propagation needs from a :class:`~certrl.policies.base.Policy`.

    ``layers``: the network ``net`` from the normalized observation ``[obs_dim]`` to the head
    output ``[out_dim]`` (action mean before clipping / squashing, tanh-bounded action, logits
    or Q-values). ``obs_mean``, ``obs_scale``, ``obs_clip``: the policy's float32 normalization
    buffers (``None`` without normalization), used for ``space="raw"``. ``action_low`` /
    ``action_high``: the Box bounds (continuous heads)."""

    layers: tuple[Layer, ...]
    in_dim: int
    out_dim: int
    head: str
    squash: bool
    discrete: bool
    action_low: Tensor | None = None
    action_high: Tensor | None = None
    obs_mean: Tensor | None = None
    obs_scale: Tensor | None = None
    obs_clip: float = math.inf

    def input_layers(self, space: str) -> tuple[Layer, ...]:
        """Layers from the threat space to the network input: none for ``normalized`` (or
        without normalization); for ``raw``: ``z = (x - mu) / scale`` then ``clamp(-c, c)``."""
        if space == "normalized" or self.obs_mean is None:
            return ()
        assert self.obs_scale is not None
        inv = 1.0 / self.obs_scale
        diag = Layer("affine", torch.diag(inv), -self.obs_mean * inv, fan_in=1)
        if math.isfinite(self.obs_clip):
            return (diag, Layer("clamp", lo=-self.obs_clip, hi=self.obs_clip))
        return (diag,)

    def describe(self) -> str:
        sizes = [str(self.in_dim)] + [str(x.out_dim) for x in self.layers if x.kind == "affine"]
        acts = sorted({x.kind for x in self.layers if x.kind not in ("affine", "identity")})
        return f"{'-'.join(sizes)} {'/'.join(acts) or 'linear'} ({self.head} head)"


def _walk(module: nn.Module, out: list[Layer]) -> None:
    if isinstance(module, torch.jit.ScriptModule):
        raise BoundError(
            "bound propagation supports MLP policies (" + _SUPPORTED + "); this policy is a "
            "TorchScript module, which cannot be inspected: load the original SB3 / CleanRL / "
            "certrl bundle file instead"
        )
    if isinstance(module, GaussianActor):
        _walk(module.latent, out)
        _walk(module.mu, out)
        return
    if type(module) is nn.Sequential:
        for m in module:
            _walk(m, out)
        return
    if isinstance(module, nn.Linear):
        out.append(_affine(module.weight, module.bias))
    elif isinstance(module, nn.Tanh):
        out.append(Layer("tanh"))
    elif isinstance(module, nn.Sigmoid):
        out.append(Layer("sigmoid"))
    elif isinstance(module, nn.ReLU):
        out.append(Layer("relu"))
    elif isinstance(module, nn.LeakyReLU):
        slope = float(module.negative_slope)
        if not 0.0 <= slope <= 1.0:
            raise BoundError(
                f"bound propagation supports LeakyReLU with a negative slope in [0, 1]; this "
                f"policy has {slope:g}"
            )
        out.append(Layer("leaky_relu", alpha=slope))
    elif isinstance(module, nn.ELU):
        alpha = float(module.alpha)
        if not 0.0 <= alpha <= 1.0:
            raise BoundError(
                f"bound propagation supports ELU with alpha in [0, 1]; this policy has {alpha:g}"
            )
        out.append(Layer("elu", alpha=alpha))
    elif isinstance(module, nn.Hardtanh):  # also ReLU6; gSDE's clip_mean
        lo, hi = float(module.min_val), float(module.max_val)
        if not lo <= hi:
            raise BoundError(f"Hardtanh with min_val {lo:g} > max_val {hi:g}")
        out.append(Layer("clamp", lo=lo, hi=hi))
    elif isinstance(module, nn.Identity):
        pass
    elif isinstance(module, (nn.Conv2d, nn.Unflatten)):
        raise BoundError(
            "bound propagation supports MLP policies; this is a pixel (CNN) policy, whose "
            "convolutions it does not propagate yet: certify it with `certrl certify` "
            "(smoothing) and measure it with `certrl attack`"
        )
    else:
        raise BoundError(
            f"bound propagation supports MLP policies ({_SUPPORTED}); this policy has "
            f"{type(module).__name__}: retrain or export it with a supported activation, or "
            "use the empirical attacks (certrl attack) instead"
        )


def extract_mlp(policy: Policy) -> MLPSpec:
    """The layers of ``policy.net`` (mean path of a ``GaussianActor``) and its head.

    Raises :class:`BoundError` (one line: what is unsupported and what to do) for TorchScript
    modules, non-MLP networks and activations other than tanh / ReLU / ELU (``alpha <= 1``) /
    LeakyReLU / sigmoid / Hardtanh, and for continuous policies whose action bounds are not
    known yet.
    """
    if not isinstance(policy, Policy):
        raise BoundError(f"expected a certrl Policy, got {type(policy).__name__}")
    layers: list[Layer] = []
    _walk(policy.net, layers)
    d = policy.obs_dim
    for x in layers:
        if x.kind == "affine":
            assert x.weight is not None
            if x.weight.shape[1] != d:
                raise BoundError(
                    f"layer of {x.weight.shape[1]} inputs follows one of {d} outputs: the "
                    "network is not a plain chain of layers"
                )
            d = x.out_dim
    if not policy.discrete and not policy.bounds_known:
        raise BoundError(
            "this policy file does not record its action bounds: check it against the "
            "environment first (validate_spaces / --env), or call with_action_bounds"
        )
    low = high = mean = scale = None
    clip = math.inf
    if not policy.discrete:
        low = policy._low.detach().double()
        high = policy._high.detach().double()
        if d != policy.act_dim:
            raise BoundError(f"the network gives {d} outputs, the policy has {policy.act_dim}")
    elif d != policy.n_actions:
        raise BoundError(f"the network gives {d} outputs, the policy has {policy.n_actions}")
    if policy.obs_norm is not None:
        mean = policy._mu.detach().double()
        scale = policy._scale.detach().double()
        clip = float(policy._clip)
    return MLPSpec(tuple(layers), policy.obs_dim, d, policy.head, policy.squash,
                   policy.discrete, low, high, mean, scale, clip)


@dataclass
class _Canon:
    """``A_0, s_0, A_1, s_1, ..., A_{K-1}`` then ``trailing`` activations."""

    affines: list[Layer]
    acts: list[Layer]
    trailing: list[Layer]


def _canonical(layers: tuple[Layer, ...] | list[Layer], in_dim: int, keep_trailing: bool = True
               ) -> _Canon:
    layers = list(layers)
    last = max((i for i, x in enumerate(layers) if x.kind == "affine"), default=-1)
    body, trailing = (layers[: last + 1], layers[last + 1 :]) if keep_trailing else (layers, [])
    affines: list[Layer] = []
    acts: list[Layer] = []
    d = in_dim
    expect_affine = True
    for x in body:
        if x.kind == "affine":
            if not expect_affine:
                acts.append(Layer("identity"))
            affines.append(x)
            d = x.out_dim
            expect_affine = False
        else:
            if expect_affine:
                affines.append(_identity_affine(d))
            acts.append(x)
            expect_affine = True
    if expect_affine:
        affines.append(_identity_affine(d))
    return _Canon(affines, acts, trailing)


# ------------------------------------------------------------------------- activation maths
def _f(layer: Layer, z: Tensor) -> Tensor:
    k = layer.kind
    if k == "tanh":
        return torch.tanh(z)
    if k == "sigmoid":
        return torch.sigmoid(z)
    if k == "relu":
        return torch.clamp(z, min=0.0)
    if k == "leaky_relu":
        return torch.where(z >= 0, z, layer.alpha * z)
    if k == "elu":
        return torch.where(z > 0, z, layer.alpha * torch.expm1(torch.clamp(z, max=0.0)))
    if k == "clamp":
        return torch.clamp(z, layer.lo, layer.hi)
    return z


def _df(layer: Layer, z: Tensor) -> Tensor:
    k = layer.kind
    if k == "tanh":
        return 1.0 - torch.tanh(z) ** 2
    if k == "sigmoid":
        s = torch.sigmoid(z)
        return s * (1.0 - s)
    if k == "relu":
        return (z > 0).to(z.dtype)
    if k == "leaky_relu":
        return torch.where(z >= 0, torch.ones_like(z), torch.full_like(z, layer.alpha))
    if k == "elu":
        grad = layer.alpha * torch.exp(torch.clamp(z, max=0.0))
        return torch.where(z > 0, torch.ones_like(z), grad)
    if k == "clamp":
        return ((z > layer.lo) & (z < layer.hi)).to(z.dtype)
    return torch.ones_like(z)


def _candidates(layer: Layer, l: Tensor, u: Tensor, k: Tensor) -> Tensor:
    """Points of ``[l, u]`` (stacked on a last axis) that include every maximiser and
    minimiser of ``sigma(z) - k z`` over ``[l, u]``: the ends, the kinks and the stationary
    points ``sigma'(z) = k``. Extra points inside ``[l, u]`` do no harm."""
    pts = [l, u]
    kind = layer.kind
    if kind in ("tanh", "sigmoid"):
        kk = torch.clamp(k, min=0.0)
        if kind == "tanh":  # sech^2(z) = k  <=>  cosh(z) = 1 / sqrt(k)
            xp = torch.acosh(torch.clamp(1.0 / torch.sqrt(kk), min=1.0))
        else:  # sigmoid'(z) = 1 / (4 cosh^2(z / 2)) = k
            xp = 2.0 * torch.acosh(torch.clamp(0.5 / torch.sqrt(kk), min=1.0))
        pts += [torch.minimum(torch.maximum(xp, l), u), torch.minimum(torch.maximum(-xp, l), u)]
    elif kind in ("relu", "leaky_relu"):
        pts.append(torch.minimum(torch.maximum(torch.zeros_like(l), l), u))
    elif kind == "elu":
        zero = torch.zeros_like(l)
        pts.append(torch.minimum(torch.maximum(zero, l), u))
        if layer.alpha > 0:  # alpha e^z = k
            st = torch.log(torch.clamp(k, min=1e-300) / layer.alpha)
            st = torch.where(k > 0, st, torch.full_like(st, -math.inf))
            pts.append(torch.minimum(torch.maximum(torch.clamp(st, max=0.0), l), u))
    elif kind == "clamp":
        pts.append(torch.minimum(torch.maximum(torch.full_like(l, layer.lo), l), u))
        pts.append(torch.minimum(torch.maximum(torch.full_like(l, layer.hi), l), u))
    return torch.stack(pts, -1)


def _s_intercept(layer: Layer, l: Tensor, u: Tensor, fl: Tensor, fu: Tensor, k: Tensor,
                 upper: bool) -> Tensor:
    """:func:`_intercept` for tanh / sigmoid with fewer evaluations: ``sigma(z) - k z`` has
    its critical points at ``+-x_k`` (``sigma'(x_k) = k``); ``+x_k`` (concave side) can only be a
    local maximum and ``-x_k`` only a local minimum, so the max is over ``{l, u, +x_k}`` and the
    min over ``{l, u, -x_k}`` (clipped into ``[l, u]``)."""
    kk = torch.clamp(k, min=0.0)
    if layer.kind == "tanh":
        xp = torch.acosh(torch.clamp(1.0 / torch.sqrt(kk), min=1.0))
    else:
        xp = 2.0 * torch.acosh(torch.clamp(0.5 / torch.sqrt(kk), min=1.0))
    p = torch.minimum(torch.maximum(xp if upper else -xp, l), u)
    ends = (torch.maximum if upper else torch.minimum)(fl - k * l, fu - k * u)
    return (torch.maximum if upper else torch.minimum)(ends, _f(layer, p) - k * p)


def _intercept(layer: Layer, l: Tensor, u: Tensor, k: Tensor, upper: bool) -> Tensor:
    p = _candidates(layer, l, u, k)
    v = _f(layer, p) - k[..., None] * p
    return v.amax(-1) if upper else v.amin(-1)


def _f_df(layer: Layer, z: Tensor) -> tuple[Tensor, Tensor]:
    """``(sigma(z), sigma'(z))`` for tanh / sigmoid with one transcendental evaluation."""
    if layer.kind == "tanh":
        t = torch.tanh(z)
        return t, 1.0 - t * t
    s = torch.sigmoid(z)
    return s, s * (1.0 - s)


def _slope_from_value(layer: Layer, f: Tensor) -> Tensor:
    """``sigma'`` from ``sigma``: ``1 - t^2`` (tanh), ``s (1 - s)`` (sigmoid)."""
    return 1.0 - f * f if layer.kind == "tanh" else f * (1.0 - f)


def _tangent_slope(layer: Layer, l: Tensor, u: Tensor, fp: Tensor, upper: bool) -> Tensor:
    """Tanh / sigmoid, ``l < 0 < u``: the slope ``sigma'(d)`` of the tangent through ``(l,
    sigma(l))`` (``upper``, ``d in [0, u]``; ``fp = sigma(l)``) or through ``(u, sigma(u))``
    (lower, ``d in [l, 0]``; ``fp = sigma(u)``). ``tangent(p) - sigma(p)`` is increasing in
    ``d`` on both sides; bisection keeps the side where the tangent is valid (only tightness
    depends on it: intercepts are recomputed exactly for whatever slope this returns)."""
    if upper:
        a, b, p = torch.zeros_like(l), torch.clamp(u, min=0.0), l
        f_end = _f(layer, b)
    else:
        a, b, p = torch.clamp(l, max=0.0), torch.zeros_like(l), u
        f_end = _f(layer, a)
    for _ in range(_BISECT):
        m = 0.5 * (a + b)
        fm, dm = _f_df(layer, m)
        pos = fm + dm * (p - m) >= fp
        b = torch.where(pos, m, b)
        a = torch.where(pos, a, m)
        keep = pos if upper else ~pos  # the end that moved to m is the one returned
        f_end = torch.where(keep, fm, f_end)
    return _slope_from_value(layer, f_end)


def relaxation(layer: Layer, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Linear bounds ``(a_L, c_L, a_U, c_U)`` of an activation on ``[l, u]`` (elementwise).

    Guarantee: for every ``z`` in ``[l, u]``, ``a_L z + c_L <= sigma(z) <= a_U z + c_U``
    (exact arithmetic; the intercepts are further widened by ``1e-14`` relative to cover their
    float64 evaluation). See the module docstring for the slope choices; the intercepts are the
    tightest for the chosen slopes."""
    kind = layer.kind
    if kind == "identity":
        one, zero = torch.ones_like(l), torch.zeros_like(l)
        return one, zero, one, zero
    width = u - l
    mid = 0.5 * (l + u)
    fl, fu = _f(layer, l), _f(layer, u)
    small = width <= 1e-9 * (1.0 + l.abs() + u.abs())
    gm = _df(layer, mid)
    chord = torch.where(small, gm, (fu - fl) / torch.where(small, 1.0, width))
    chord = torch.clamp(chord, min=0.0)  # every supported activation is non-decreasing
    if kind in ("tanh", "sigmoid"):
        convex, concave = u <= 0, l >= 0
        ku = torch.where(convex, chord, gm)
        kl = torch.where(convex, gm, chord)
        mixed = ~(convex | concave)
        if bool(mixed.any()):
            lm, um, cm, flm, fum = l[mixed], u[mixed], chord[mixed], fl[mixed], fu[mixed]
            k_up, k_lo = cm.clone(), cm.clone()
            tan_up = _slope_from_value(layer, fum) < cm  # else the chord is above sigma
            tan_lo = _slope_from_value(layer, flm) < cm  # else the chord is below sigma
            if bool(tan_up.any()):
                k_up[tan_up] = _tangent_slope(layer, lm[tan_up], um[tan_up], flm[tan_up], True)
            if bool(tan_lo.any()):
                k_lo[tan_lo] = _tangent_slope(layer, lm[tan_lo], um[tan_lo], fum[tan_lo], False)
            ku[mixed] = k_up
            kl[mixed] = k_lo
    elif kind in ("relu", "leaky_relu"):
        a = layer.alpha if kind == "leaky_relu" else 0.0
        ku = chord
        kl = torch.where(u >= -l, torch.ones_like(l), torch.full_like(l, a))
    elif kind == "elu":
        ku = chord
        kl = _df(layer, mid)
    elif kind == "clamp":
        left = (l < layer.lo) & (u > layer.lo)
        right = (l < layer.hi) & (u > layer.hi)
        one, zero = torch.ones_like(l), torch.zeros_like(l)
        ku = torch.where(right & ~left, torch.where(layer.hi - l >= u - layer.hi, one, zero), chord)
        kl = torch.where(left & ~right, torch.where(u - layer.lo >= layer.lo - l, one, zero), chord)
    else:  # pragma: no cover - extract_mlp only produces the kinds above
        raise BoundError(f"no relaxation for {kind}")
    if kind in ("tanh", "sigmoid"):
        cu = _s_intercept(layer, l, u, fl, fu, ku, True)
        cl = _s_intercept(layer, l, u, fl, fu, kl, False)
    else:
        cu = _intercept(layer, l, u, ku, True)
        cl = _intercept(layer, l, u, kl, False)
    tol = 1e-14 * (1.0 + fl.abs() + fu.abs() + (ku.abs() + kl.abs()) * (l.abs() + u.abs()))
    return kl, cl - tol, ku, cu + tol


def _act_interval(layer: Layer, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    return _f(layer, l), _f(layer, u)  # every supported activation is non-decreasing


def _rounding_step(layer: Layer, l: Tensor, u: Tensor, e: Tensor, mag: Tensor | None = None
                   ) -> Tensor:
    """Bound on |float32 sigma(z_hat) - sigma(z)| for exact ``z in [l, u]`` and float32
    ``|z_hat - z| <= e``: ``L e + rho (|sigma| + L e)`` with ``L`` the largest slope of
    ``sigma`` on ``[l - e, u + e]`` (so inactive ReLUs and saturated tanh stop the error) and
    ``rho`` the kernel's relative rounding (4 ulp tanh / sigmoid / ELU, 1/2 ulp LeakyReLU)."""
    kind = layer.kind
    lo, hi = l - e, u + e
    if kind in ("tanh", "sigmoid"):
        dist = torch.clamp(torch.maximum(lo, -hi), min=0.0)  # distance of [lo, hi] from 0
        lip, rho = _df(layer, dist), _ULP4
    elif kind == "relu":
        lip, rho = (hi > 0).to(l.dtype), 0.0
    elif kind == "leaky_relu":
        lip = torch.where(hi > 0, torch.ones_like(l), torch.full_like(l, layer.alpha))
        rho = _U32
    elif kind == "elu":
        lip = torch.where(hi > 0, torch.ones_like(l),
                          layer.alpha * torch.exp(torch.clamp(hi, max=0.0)))
        rho = _ULP4
    elif kind == "clamp":
        lip, rho = ((hi > layer.lo) & (lo < layer.hi)).to(l.dtype), 0.0
    else:
        lip, rho = torch.ones_like(l), 0.0
    if rho == 0.0:
        return lip * e
    if mag is None:  # |sigma| on [l, u]
        mag = torch.maximum(_f(layer, l).abs(), _f(layer, u).abs())
    return lip * e + rho * (mag + lip * e) + 1e-30


def _gamma(n: int) -> float:
    return n * _U32 / (1.0 - n * _U32)


# ------------------------------------------------------------------------------ propagation
def _ibp_affine(w: Tensor, b: Tensor, l: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    c = 0.5 * (l + u)
    r = 0.5 * (u - l)
    if w.ndim == 2:
        mid = torch.addmm(b, c, w.t())
        rad = r @ w.abs().t()
    else:
        mid = torch.einsum("cmn,cn->cm", w, c) + b
        rad = torch.einsum("cmn,cn->cm", w.abs(), r)
    return mid - rad, mid + rad


def _concretize(lam: Tensor, beta: Tensor, x0: Tensor, eps: float, norm: str, upper: bool
                ) -> Tensor:
    """``max`` (``upper``) or ``min`` of ``lam x + beta`` over the ``norm`` ball around x0."""
    if lam.ndim == 2:
        center = x0 @ lam.t()
        dual = lam.abs().sum(-1) if norm == "linf" else lam.norm(dim=-1)
        dual = dual.expand_as(center)
    else:
        center = torch.einsum("cmn,cn->cm", lam, x0)
        dual = lam.abs().sum(-1) if norm == "linf" else lam.norm(dim=-1)
    if eps == 0:
        return center + beta
    return center + beta + (eps * dual if upper else -eps * dual)


def _back_act(lam: Tensor, beta: Tensor, a_pos: Tensor, c_pos: Tensor, a_neg: Tensor,
              c_neg: Tensor) -> tuple[Tensor, Tensor]:
    """Substitute ``h <= / >= a z + c`` into ``lam h + beta`` (positive coefficients take the
    ``pos`` relaxation)."""
    pos = torch.clamp(lam, min=0.0)
    neg = lam - pos
    if lam.ndim == 2:
        beta = beta + c_pos @ pos.t() + c_neg @ neg.t()
        lam3 = pos[None] * a_pos[:, None, :] + neg[None] * a_neg[:, None, :]
    else:
        beta = (beta + torch.einsum("cmn,cn->cm", pos, c_pos)
                + torch.einsum("cmn,cn->cm", neg, c_neg))
        lam3 = pos * a_pos[:, None, :] + neg * a_neg[:, None, :]
    return lam3, beta


def _back_affine(lam: Tensor, beta: Tensor, layer: Layer) -> tuple[Tensor, Tensor]:
    w, b = layer.weight, layer.bias
    assert w is not None and b is not None
    if layer.exact:  # identity
        return lam, beta
    return lam @ w, beta + lam @ b


def _back_act_affine_shared(w: Tensor, beta_u: Tensor, beta_l: Tensor, relax_j: tuple,
                            layer: Layer) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """First back-substitution step from a shared ``w [m, n]`` through activation ``j`` and
    affine ``j`` (``[n, d]``) without forming ``[c, m, n]`` tensors: ``(W+ diag(a_U) + W-
    diag(a_L)) A_j = W+ (a_U * A_j) + W- (a_L * A_j)`` -- cheaper when ``d`` is small."""
    al, cl, au, cu = relax_j
    pos = torch.clamp(w, min=0.0)
    neg = w - pos
    aw, ab = layer.weight, layer.bias
    assert aw is not None and ab is not None
    beta_u = beta_u + cu @ pos.t() + cl @ neg.t()
    beta_l = beta_l + cl @ pos.t() + cu @ neg.t()
    # with W+- = (W +- |W|) / 2: lam_U = (W S + |W| D) / 2, lam_L = (W S - |W| D) / 2 where
    # S = (a_U + a_L) * A_j and D = (a_U - a_L) * A_j: two GEMMs instead of four
    sa, da = au + al, au - al
    if layer.exact:
        ps, pd = torch.diag_embed(sa), torch.diag_embed(da)
    else:
        ps, pd = sa[:, :, None] * aw, da[:, :, None] * aw  # [c, n, d]
        beta_u = beta_u + (au * ab) @ pos.t() + (al * ab) @ neg.t()
        beta_l = beta_l + (al * ab) @ pos.t() + (au * ab) @ neg.t()
    c, n, d = ps.shape

    def mm(m: Tensor, p: Tensor) -> Tensor:  # [m, n] @ [c, n, d] as one GEMM -> [c, m, d]
        return (p.transpose(1, 2).reshape(c * d, n) @ m.t()).reshape(c, d, -1).transpose(1, 2)

    ws, wd = mm(w, ps), mm(w.abs(), pd)
    return 0.5 * (ws + wd), beta_u, 0.5 * (ws - wd), beta_l


def _crown_layer(net: _Canon, k: int, w: Tensor, b: Tensor, relax: list, x0: Tensor, eps: float,
                 norm: str) -> tuple[Tensor, Tensor]:
    """CROWN bounds on ``A_k(h_{k-1})`` (weight ``w`` [m, n] or [c, m, n])."""
    c = x0.shape[0]
    beta = b.expand(c, -1) if b.ndim == 1 else b
    lam_u, beta_u, lam_l, beta_l = w, beta, w, beta
    start = k - 1
    first = net.affines[start]
    assert first.weight is not None
    if w.ndim == 2 and 2 * int(first.weight.shape[1]) <= int(w.shape[0]):
        lam_u, beta_u, lam_l, beta_l = _back_act_affine_shared(w, beta, beta, relax[start], first)
        start -= 1
    for j in range(start, -1, -1):
        al, cl, au, cu = relax[j]
        lam_u, beta_u = _back_act(lam_u, beta_u, au, cu, al, cl)
        lam_l, beta_l = _back_act(lam_l, beta_l, al, cl, au, cu)
        lam_u, beta_u = _back_affine(lam_u, beta_u, net.affines[j])
        lam_l, beta_l = _back_affine(lam_l, beta_l, net.affines[j])
    up = _concretize(lam_u, beta_u, x0, eps, norm, True)
    lo = _concretize(lam_l, beta_l, x0, eps, norm, False)
    return lo, up


def _order(lo: Tensor, up: Tensor) -> tuple[Tensor, Tensor]:
    # intersecting two sound bounds can cross by a rounding error when both are tight
    return torch.minimum(lo, up), torch.maximum(lo, up)


def _propagate(net: _Canon, x0: Tensor, eps: float, norm: str, method: str,
               spec: tuple[Tensor, Tensor] | None = None):
    """Bounds of one chunk. Returns (pre-activation bounds of every affine output, the
    post-activation intervals, the final spec bounds or None)."""
    lo_in, up_in = x0 - eps, x0 + eps
    hl, hu = lo_in, up_in
    pre: list[tuple[Tensor, Tensor]] = []
    post: list[tuple[Tensor, Tensor]] = [(hl, hu)]
    relax: list = []
    kk = len(net.affines)
    spec_bounds = None
    for k in range(kk):
        layer = net.affines[k]
        assert layer.weight is not None and layer.bias is not None
        w, b = layer.weight, layer.bias
        lo, up = (hl, hu) if layer.exact else _ibp_affine(w, b, hl, hu)
        if method == "crown":
            if k == 0:
                lc = _concretize(w, b.expand(x0.shape[0], -1), x0, eps, norm, False)
                uc = _concretize(w, b.expand(x0.shape[0], -1), x0, eps, norm, True)
            else:
                lc, uc = _crown_layer(net, k, w, b, relax, x0, eps, norm)
            lo, up = _order(torch.maximum(lo, lc), torch.minimum(up, uc))
        pre.append((lo, up))
        if k == kk - 1 and spec is not None:
            cw, cb = spec  # [c, s, m], [c, s] applied to the output of A_{K-1}
            sw = torch.einsum("csm,mn->csn", cw, w)
            sb = torch.einsum("csm,m->cs", cw, b) + cb
            if method == "crown":
                if k == 0:
                    sl = _concretize(sw, sb, x0, eps, norm, False)
                else:
                    sl, _ = _crown_layer(net, k, sw, sb, relax, x0, eps, norm)
            else:
                sl = torch.full_like(sb, -math.inf)
            spec_bounds = sl
        if k < kk - 1:
            act = net.acts[k]
            hl, hu = _act_interval(act, lo, up)
            post.append((hl, hu))
            if method == "crown":
                relax.append(relaxation(act, lo, up))
    return pre, post, spec_bounds


def _float32_error(net: _Canon, x0: Tensor, eps: float, pre, post) -> Tensor:
    """Bound on |float32 forward - exact forward| of the final affine output (and trailing
    activations are handled by the caller)."""
    e = _U32 * (x0.abs() + eps)
    m = x0.abs() + eps + e
    for k, layer in enumerate(net.affines):
        assert layer.weight is not None and layer.bias is not None
        if not layer.exact:
            wa = layer.weight.abs()
            e = e @ wa.t() + _gamma(layer.fan_in + 1) * (m @ wa.t() + layer.bias.abs())
        if k < len(net.acts):
            lo, up = pre[k]
            hl, hu = post[k + 1]
            mag = torch.maximum(hl.abs(), hu.abs())
            e = _rounding_step(net.acts[k], lo, up, e, mag)
            m = mag + e
    return e


def _as_tensor(obs: ArrayLike | Tensor, in_dim: int) -> Tensor:
    x = torch.as_tensor(np.asarray(obs) if not isinstance(obs, Tensor) else obs)
    x = x.detach().to(torch.float64)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != in_dim:
        raise BoundError(f"obs must have shape [N, {in_dim}], got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise BoundError("obs must be finite")
    return x


def _check(eps: float, norm: str, space: str, method: str) -> float:
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise BoundError(f"eps must be a finite number >= 0, got {eps}")
    if norm not in NORMS:
        raise BoundError(f"norm must be linf or l2, got {norm!r}")
    if space not in SPACES:
        raise BoundError(f"space must be normalized or raw, got {space!r}")
    if method not in METHODS:
        raise BoundError(f"method must be ibp or crown, got {method!r}")
    return eps


def _crown_row_elems(net: _Canon, spec_rows: int = 0) -> int:
    """Elements per state of the largest back-substitution tensor ``[m, n]`` CROWN forms."""
    ins = [int(a.weight.shape[1]) for a in net.affines if a.weight is not None]
    outs = [int(a.weight.shape[0]) for a in net.affines if a.weight is not None]
    big = 1
    for k in range(1, len(net.affines)):
        for m in (outs[k], spec_rows) if k == len(net.affines) - 1 else (outs[k],):
            fused = 2 * ins[k - 1] <= m
            sizes = [m * ins[j] for j in range(k)]
            sizes += [m * outs[j] for j in range(k - 1 if fused else k)]
            big = max([big, *sizes])
    return big


def _chunk(net: _Canon, method: str, chunk_size: int | None, spec_rows: int = 0) -> int:
    if chunk_size is not None:
        return max(1, int(chunk_size))
    if method == "ibp":  # [chunk, width] tensors: stay in cache
        return 2048
    return int(min(512, max(16, _CHUNK_ELEMS // _crown_row_elems(net, spec_rows))))


@torch.no_grad()
def _nominal_head(policy: Policy, x: Tensor, space: str) -> Tensor:
    xf = x.to(torch.float32)
    z = policy.normalize(xf) if space == "raw" else xf
    return policy.head_output(z).double()


@dataclass
class OutputBounds:
    """Bounds on the head output (``[N, out]`` float64 tensors) over each state's threat ball.

    ``lower`` / ``upper``: the bounds (float32 rounding margin included unless requested
    otherwise); ``nominal``: the float32 policy's head output at the state; ``margin``: the
    rounding widening included in the bounds (float32 model + float64 slack)."""

    lower: Tensor
    upper: Tensor
    nominal: Tensor
    margin: Tensor
    method: str
    eps: float
    norm: str
    space: str

    @property
    def width(self) -> Tensor:
        return self.upper - self.lower


def _run(policy: Policy, obs, eps: float, norm: str, space: str, method: str,
         float32_margin: bool, chunk_size: int | None, want_spec: bool = False):
    eps = _check(eps, norm, space, method)
    spec = extract_mlp(policy)
    x = _as_tensor(obs, spec.in_dim)
    layers = list(spec.input_layers(space)) + list(spec.layers)
    if want_spec and layers and layers[-1].kind != "affine":
        # the difference specification must follow the trailing activation
        layers.append(_identity_affine(spec.out_dim))
    net = _canonical(layers, spec.in_dim)
    nominal = _nominal_head(policy, x, space)
    step = _chunk(net, method, chunk_size, spec.out_dim - 1 if want_spec else 0)
    los, ups, errs, specs = [], [], [], []
    n_out = spec.out_dim
    for s in range(0, x.shape[0], step):
        xc = x[s : s + step]
        cspec = None
        if want_spec:
            act = nominal[s : s + step].argmax(-1)
            cspec = _margin_spec(act, n_out)
        pre, post, sb = _propagate(net, xc, eps, norm, method, cspec)
        lo, up = pre[-1]
        err = (_float32_error(net, xc, eps, pre, post) if float32_margin
               else torch.zeros_like(lo))
        for t in net.trailing:  # monotone elementwise: the interval image is exact
            if float32_margin:
                err = _rounding_step(t, lo, up, err)
            lo, up = _act_interval(t, lo, up)
        los.append(lo)
        ups.append(up)
        errs.append(err)
        specs.append(sb)
    lo, up, err = torch.cat(los), torch.cat(ups), torch.cat(errs)
    slack = _F64_SLACK * (1.0 + torch.maximum(lo.abs(), up.abs()))
    margin = err + slack
    ob = OutputBounds(lo - margin, up + margin, nominal, margin, method, eps, norm, space)
    return ob, spec, (torch.cat(specs) if want_spec and method == "crown" else None)


@torch.no_grad()
def output_bounds(
    policy: Policy,
    obs: ArrayLike | Tensor,
    eps: float,
    norm: str = "linf",
    space: str = "normalized",
    method: str = "crown",
    *,
    float32_margin: bool = True,
    chunk_size: int | None = None,
) -> OutputBounds:
    """Sound elementwise bounds on the policy's head output over each state's threat ball.

    Args:
        policy: an MLP :class:`~certrl.policies.base.Policy` (see :func:`extract_mlp`).
        obs: ``[N, obs_dim]`` states in the threat space (normalized observations for
            ``space="normalized"``, raw ones for ``"raw"``: the attacks' convention).
        eps: ball radius ``>= 0``; ``norm``: ``"linf"`` or ``"l2"``.
        method: ``"ibp"`` (Gowal et al. 2018) or ``"crown"`` (Zhang et al. 2018, full CROWN,
            intersected with IBP).
        float32_margin: widen by the float32 rounding bound of the module docstring (default);
            ``False`` bounds the exact-arithmetic network (only the float64 slack is added).
        chunk_size: rows per chunk (default: CROWN tensors of at most 2^22 elements).

    Guarantee: for every state ``x`` (row ``i``) and every ``x'`` with ``||x' - x|| <= eps``,
    ``lower[i] <= f(x') <= upper[i]`` elementwise, where ``f`` is the head output the policy
    computes (``policy.head_output(x')`` in ``normalized`` space, ``head_output(normalize(x'))``
    in ``raw`` space): the action mean before clipping / squashing (gaussian heads), the
    tanh-bounded output (deterministic heads), the output before clamping (linear heads), the
    logits or Q-values (discrete heads). Each row is bounded independently of the others.

    Assumptions: exact arithmetic up to the documented float32 / float64 margins (module
    docstring); the network is the MLP :func:`extract_mlp` reads. Threat model: single-step,
    static ``norm`` perturbation of one observation in ``space``.
    """
    ob, _, _ = _run(policy, obs, eps, norm, space, method, float32_margin, chunk_size)
    return ob


# ----------------------------------------------------------------------- continuous actions
@dataclass
class ActionBounds:
    """Bounds on the deterministic action (``[N, act_dim]`` float64 tensors).

    ``deviation``: certified per-dimension deviation ``max(upper - nominal, nominal - lower)``;
    ``linf``: its max over dimensions (exact for the box of bounds); ``l2``: ``sqrt(sum
    deviation^2)`` -- a sound upper bound on ``||a(x') - a(x)||_2`` that may be loose, since the
    per-dimension worst cases need not happen at the same ``x'``."""

    lower: Tensor
    upper: Tensor
    nominal: Tensor
    deviation: Tensor
    linf: Tensor
    l2: Tensor
    output: OutputBounds


def _rescale(a: Tensor, low: Tensor, high: Tensor) -> Tensor:
    return low + (a + 1.0) * 0.5 * (high - low)


@torch.no_grad()
def action_deviation_bounds(
    policy: Policy,
    obs: ArrayLike | Tensor,
    eps: float,
    norm: str = "linf",
    space: str = "normalized",
    method: str = "crown",
    *,
    float32_margin: bool = True,
    chunk_size: int | None = None,
) -> ActionBounds:
    """Certified bounds on the deterministic action and on its deviation from ``a(x)``.

    The head output bounds of :func:`output_bounds` are mapped through the head's
    post-processing, which is monotone elementwise and hence exact on intervals:
    ``clip(mean, low, high)`` (gaussian, linear heads), ``rescale(tanh(mean))`` (squashed
    gaussian: SAC), ``rescale(net(x))`` (deterministic: TD3), plus the float32 rounding of
    ``tanh`` and ``rescale`` (unless ``float32_margin=False``).

    Guarantee: for every state ``x`` (row ``i``) and every ``x'`` in its ``norm`` ball of radius
    ``eps`` in ``space``, the action the policy takes, ``a(x')`` (``act_normalized(x')`` or
    ``act(x')``, deterministic), satisfies ``lower[i] <= a(x') <= upper[i]`` and
    ``|a(x') - a(x)| <= deviation[i]`` elementwise, ``||a(x') - a(x)||_inf <= linf[i]`` and
    ``||a(x') - a(x)||_2 <= l2[i]`` (the last one possibly loose). ``nominal`` is ``a(x)`` as
    the float32 policy computes it.

    Assumptions and threat model: those of :func:`output_bounds`; a continuous policy with
    known action bounds. Raises :class:`BoundError` for discrete policies (use
    :func:`greedy_action_certified`).
    """
    if policy.discrete:
        raise BoundError("action_deviation_bounds is for continuous policies; use "
                         "greedy_action_certified for discrete ones")
    ob, spec, _ = _run(policy, obs, eps, norm, space, method, float32_margin, chunk_size)
    assert spec.action_low is not None and spec.action_high is not None
    low, high = spec.action_low, spec.action_high
    lo, up = ob.lower, ob.upper
    if spec.head == "gaussian" and spec.squash:
        t = _U32 * 8 if float32_margin else 0.0
        tl, tu = torch.tanh(lo) - t, torch.tanh(up) + t
        err = _gamma(4) * (low.abs() + (high - low).abs()) if float32_margin else 0.0
        a_lo, a_up = _rescale(tl, low, high) - err, _rescale(tu, low, high) + err
    elif spec.head == "deterministic":
        mag = torch.maximum(lo.abs(), up.abs())
        err = (_gamma(4) * (low.abs() + (mag + 1.0) * 0.5 * (high - low).abs())
               if float32_margin else 0.0)
        a_lo, a_up = _rescale(lo, low, high) - err, _rescale(up, low, high) + err
    else:  # gaussian (SB3 PPO/A2C) and linear heads: clip, exact in float32
        a_lo = torch.minimum(torch.maximum(lo, low), high)
        a_up = torch.minimum(torch.maximum(up, low), high)
    x = _as_tensor(obs, spec.in_dim).to(torch.float32)
    a0 = (policy.act(x) if space == "raw" else policy.act_normalized(x)).double()
    dev = torch.clamp(torch.maximum(a_up - a0, a0 - a_lo), min=0.0)
    return ActionBounds(a_lo, a_up, a0, dev, dev.amax(-1), dev.norm(dim=-1), ob)


# ------------------------------------------------------------------------- discrete actions
def _margin_spec(action: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``C [c, n-1, n]`` with rows ``e_a - e_j`` for ``j != a`` (ascending ``j``)."""
    c = action.shape[0]
    others = torch.arange(n).expand(c, n)
    others = others[others != action[:, None]].reshape(c, n - 1)
    cm = torch.zeros(c, n - 1, n, dtype=torch.float64)
    cm.scatter_(2, action[:, None, None].expand(c, n - 1, 1), 1.0)
    cm.scatter_(2, others[:, :, None], -1.0)
    return cm, torch.zeros(c, n - 1, dtype=torch.float64)


@dataclass
class GreedyCertificate:
    """``certified [N]`` bool; ``action [N]`` the nominal greedy action; ``margins [N, n]``
    lower bounds on ``y_a(x') - y_j(x')`` (``+inf`` at ``j = a``); ``margin [N]`` their min
    (``> 0`` iff certified)."""

    certified: Tensor
    action: Tensor
    margin: Tensor
    margins: Tensor
    method: str


@torch.no_grad()
def greedy_action_certified(
    policy: Policy,
    obs: ArrayLike | Tensor,
    eps: float,
    norm: str = "linf",
    space: str = "normalized",
    method: str = "crown",
    *,
    float32_margin: bool = True,
    chunk_size: int | None = None,
) -> GreedyCertificate:
    """Certify that the greedy (argmax) action of a discrete policy cannot change.

    ``"crown"`` bounds the differences ``y_a - y_j`` directly (the specification matrix
    ``C = e_a - e_j`` folded into the last layer, Zhang et al. 2018), which is much tighter
    than differencing output intervals; the result is intersected with the interval
    difference ``lower_a - upper_j`` (the ``"ibp"`` certificate). Float32 rounding widens each
    difference by the sum of the two outputs' rounding bounds.

    Guarantee: if ``certified[i]``, then for every ``x'`` in the ``norm`` ball of radius ``eps``
    around state ``i`` (in ``space``), ``argmax y(x') = action[i]``, i.e. the policy's
    deterministic action is unchanged; and ``y_a(x') - y_j(x') >= margins[i, j]`` for all
    ``j``. Assumptions and threat model: those of :func:`output_bounds` (categorical or
    qvalues head). Not certified means only that this relaxation could not prove it.
    """
    if not policy.discrete:
        raise BoundError("greedy_action_certified is for discrete policies; use "
                         "action_deviation_bounds for continuous ones")
    ob, spec, crown = _run(policy, obs, eps, norm, space, method, float32_margin, chunk_size,
                           want_spec=policy.n_actions > 1)
    n = spec.out_dim
    action = ob.nominal.argmax(-1)
    margins = torch.full((action.shape[0], n), math.inf, dtype=torch.float64)
    if n > 1:
        cm, _ = _margin_spec(action, n)
        others = (cm < 0).to(torch.int8).argmax(-1)  # [N, n-1]: the j of each row
        ibp = ob.lower.gather(1, action[:, None]) - ob.upper.gather(1, others)
        best = ibp
        if crown is not None:
            # rounding of the two outputs (float32 model + their float64 slack) and the
            # float64 slack of the difference bound itself
            wid = ob.margin.gather(1, action[:, None]) + ob.margin.gather(1, others)
            best = torch.maximum(best, crown - wid - _F64_SLACK * (1.0 + crown.abs()))
        margins.scatter_(1, others, best)
    margin = margins.amin(-1)
    return GreedyCertificate(margin > 0, action, margin, margins, method)


# ------------------------------------------------------------------------------ PGD twin
@dataclass
class PGDResult:
    """Largest deviation PGD found (continuous: ``deviation [N, act_dim]``, ``linf [N]``,
    ``l2 [N]``), or for discrete policies ``changed [N]`` (an input changing the greedy action
    was found) and ``margin [N]`` (smallest ``y_a - max_{j != a} y_j`` seen)."""

    deviation: Tensor | None
    linf: Tensor | None
    l2: Tensor | None
    changed: Tensor | None
    margin: Tensor | None


def _project(delta: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "linf":
        return torch.clamp(delta, -eps, eps)
    n = delta.norm(dim=1, keepdim=True)
    return delta * torch.where(n > eps, eps / n.clamp_min(1e-30), torch.ones_like(n))


def _start(shape: tuple[int, int], eps: float, norm: str, gen: torch.Generator) -> Tensor:
    if norm == "linf":
        return (torch.rand(shape, generator=gen) * 2 - 1) * eps
    z = torch.randn(shape, generator=gen)
    r = torch.rand((shape[0], 1), generator=gen) ** (1.0 / shape[1])
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12) * r * eps


def pgd_max_deviation(
    policy: Policy,
    obs: ArrayLike | Tensor,
    eps: float,
    norm: str = "linf",
    space: str = "normalized",
    *,
    steps: int = 50,
    restarts: int = 10,
    seed: int = 0,
    step_size: float | None = None,
    max_rows: int = 1 << 16,
) -> PGDResult:
    """Empirical twin of the certificates: projected gradient ascent inside each state's ball.

    Continuous policies: ``2 act_dim + 1`` objectives per state (``+-`` each head output
    coordinate, whose clip / squash is monotone, and ``||a(x') - a(x)||^2`` with a
    straight-through clip), each from ``restarts`` starts (the first at ``x``, the others
    uniform in the ball), ``steps`` steps of size ``step_size`` (default ``2.5 eps / steps``):
    sign steps (``linf``) or normalized gradient steps (``l2``), projected on the ball. Every
    iterate's deterministic action is measured; the largest deviations seen are returned.
    Discrete policies: the objective ``max_{j != a} y_j - y_a``; ``changed`` if any iterate
    changes the greedy action.

    Guarantee: a *lower* bound -- every reported deviation (or change) is attained at a point
    of the ball (up to float32 rounding of ``x + delta``), so a sound certificate is never
    smaller. Deterministic given ``seed`` (a private ``torch.Generator``). Threat model: that
    of :func:`output_bounds`.
    """
    eps = _check(eps, norm, space, "ibp")
    x_all = _as_tensor(obs, policy.obs_dim).to(torch.float32)
    gen = torch.Generator().manual_seed(int(seed))
    n_obj = 1 if policy.discrete else 2 * policy.act_dim + 1
    restarts = max(1, int(restarts))
    per = max(1, max_rows // (n_obj * restarts))
    alpha = 2.5 * eps / max(steps, 1) if step_size is None else float(step_size)

    def head(inp: Tensor) -> Tensor:
        z = policy.normalize(inp) if space == "raw" else inp
        return policy.head_output(z)

    def action(y: Tensor) -> Tensor:  # deterministic action from the head output
        if policy.head == "gaussian" and policy.squash:
            return policy._rescale(torch.tanh(y))
        if policy.head == "deterministic":
            return policy._rescale(y)
        return torch.minimum(torch.maximum(y, policy._low), policy._high)

    outs: dict[str, list[Tensor]] = {"dev": [], "l2": [], "changed": [], "margin": []}
    for s in range(0, x_all.shape[0], per):
        x = x_all[s : s + per]
        nb, d = x.shape
        with torch.no_grad():
            y0 = head(x)
        rows = nb * n_obj * restarts
        xr = x.repeat(n_obj * restarts, 1)  # row r = (restart, objective, state)
        obj = torch.arange(n_obj).repeat_interleave(nb).repeat(restarts)
        delta = _start((rows, d), eps, norm, gen)
        delta[: nb * n_obj] = 0.0  # the first restart starts at x
        if policy.discrete:
            a0 = y0.argmax(-1)
            a0r = a0.repeat(restarts)
            best_margin = torch.full((nb,), math.inf)
            changed = torch.zeros(nb, dtype=torch.bool)
        else:
            act0 = action(y0)
            act0r = act0.repeat(n_obj * restarts, 1)
            k = policy.act_dim
            sel = torch.zeros(rows, k)
            sign = torch.zeros(rows)
            dims = obj < 2 * k
            sel[dims, (obj[dims] // 2)] = 1.0
            sign[dims] = torch.where(obj[dims] % 2 == 0, 1.0, -1.0)
            best_dev = torch.zeros(nb, k, dtype=torch.float64)
            best_l2 = torch.zeros(nb, dtype=torch.float64)
        for it in range(steps + 1):
            dv = delta.detach().requires_grad_(it < steps)
            with torch.enable_grad():
                y = head(xr + dv)
                if policy.discrete:
                    ya = y.gather(1, a0r[:, None])[:, 0]
                    other = y.scatter(1, a0r[:, None], -math.inf).amax(-1)
                    value = other - ya
                else:
                    a = action(y)
                    clipped = policy.head == "linear" or (
                        policy.head == "gaussian" and not policy.squash)
                    st = y + (a - y).detach() if clipped else a  # straight-through clip
                    l2obj = ((st - act0r) ** 2).sum(-1)
                    value = torch.where(obj < 2 * k, sign * (y * sel).sum(-1), l2obj)
            with torch.no_grad():
                if policy.discrete:
                    m = (-value).detach().reshape(restarts, nb).amin(0)
                    best_margin = torch.minimum(best_margin, m)
                    ch = (y.argmax(-1) != a0r).reshape(restarts, nb).any(0)
                    changed |= ch
                else:
                    dev = (a.detach().double() - act0r.double()).abs()  # exact difference
                    best_dev = torch.maximum(best_dev, dev.reshape(-1, nb, k).amax(0))
                    best_l2 = torch.maximum(best_l2, dev.norm(dim=-1).reshape(-1, nb).amax(0))
            if it == steps or eps == 0:
                break
            (g,) = torch.autograd.grad(value.sum(), dv)
            step = g.sign() if norm == "linf" else g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
            delta = _project(delta + alpha * step, eps, norm)
        if policy.discrete:
            outs["changed"].append(changed)
            outs["margin"].append(best_margin)
        else:
            outs["dev"].append(best_dev)
            outs["l2"].append(best_l2)
    if policy.discrete:
        return PGDResult(None, None, None, torch.cat(outs["changed"]),
                         torch.cat(outs["margin"]).double())
    dev = torch.cat(outs["dev"]).double()
    return PGDResult(dev, dev.amax(-1), torch.cat(outs["l2"]).double(), None, None)
