"""Random and gradient observation attacks (random, gaussian, FGSM, PGD, MAD) and the adaptive
episode-budget attack on smoothed policies used by ``certrl certify``.

Threat model (:class:`~certrl.attacks.base.ThreatModel`): at step ``t`` the adversary sees the
true observation (in the threat model's space: the policy's normalized observation by default,
where SA-PPO / ATLA / PA-AD budgets are defined) and adds ``delta_t`` with

* ``||delta_t|| <= eps`` (``linf`` or ``l2``);
* optionally ``sqrt(sum_t ||delta_t||_2^2) <= B`` (``episode_budget``, the threat model of the
  policy-smoothing certificates of Kumar, Levine & Feizi, ICLR 2022);
* optionally ``||delta_t - delta_(t-1)|| <= eps_bar`` (temporal coupling, GRAD: Liang et al.,
  "Game-Theoretic Robust RL Handles Temporally-Coupled Perturbations", ICLR 2024).

Every candidate goes through :meth:`ThreatModel.project` with the slot's previous perturbation
and spent budget (:class:`~certrl.attacks.learned.ThreatState`), *inside* the optimization loop
(so PGD searches the feasible set, not the ball) and once more on the result. What is committed
to the budget is the perturbation the evaluator actually records, ``(x + delta) - x`` in float32,
and the projections use limits shrunk by :data:`SAFETY` (5e-7) so float32 rounding of
``x + delta`` can never push a recorded norm past the audit (``+1e-6`` slack).

Attacks (all batched: one forward / backward over every live episode per iteration):

``random``
    ``delta`` uniform in the ball (``linf``: uniform in the cube, as SA-PPO's "random" attack;
    ``l2``: uniform in the l2 ball, direction ``N(0, I) / ||.||``, radius ``eps * U^(1/d)``).
``gaussian``
    ``delta ~ N(0, std^2 I)`` (``std`` defaults to ``eps``), projected onto the threat model.
``fgsm``
    One signed (``linf``) or normalized (``l2``) gradient step of size ``eps`` (Goodfellow et
    al. 2015; Huang et al. 2017 for RL). The action-deviation loss of a continuous policy has a
    zero gradient at ``delta = 0``, so continuous policies use R+FGSM (Tramer et al., ICLR 2018):
    a random step of ``eps / 2`` (sign of a Gaussian) then a gradient step of ``eps / 2``.
``pgd``
    ``steps`` (10) projected steps of size ``step_frac * eps`` (``2.5 / steps``, Madry et al.
    2018) from a uniform random start, ``restarts`` (1) restarts; the best iterate per episode
    (largest objective) is kept.
``mad``
    Maximal Action Difference (Zhang et al., NeurIPS 2020, SA-PPO): maximize
    ``KL(pi(.|s) || pi(.|s_hat))`` by SGLD as in SA-PPO's ``action`` attack: start at
    ``sign(N(0, I)) * step`` with ``step = eps / steps``, then ``steps`` updates
    ``sign(grad + sqrt(2 step) / (i + 2) * N(0, I)) * step`` (``l2``: the normalized vector),
    projected. Unlike SA-PPO (which returns the last iterate) the best iterate is kept.

Objectives (maximized; the reference is the policy's output on the *unperturbed* input; for
the per-frame adversary, ``frame_stack``, on the stack with the older frames as it already
perturbed them: the action the agent would take were the newest frame left alone):

* ``action`` (``fgsm`` / ``pgd`` default): continuous policies ``||a(s_hat) - a(s)||_2^2``
  with ``a`` the deterministic action in ``[-1, 1]`` coordinates per dimension
  (:func:`~certrl.attacks.learned.action_repr`: clipped mean with a straight-through gradient,
  ``tanh`` of SAC means); discrete policies the cross-entropy of ``softmax(logits(s_hat))``
  with respect to the clean argmax (untargeted; Q-values act as logits for DQN).
* ``kl`` (``mad``): Gaussian heads with a noise model the closed-form
  ``KL(N(m, S) || N(m_hat, S_hat))`` (state-independent std: half the Mahalanobis distance
  ``(m_hat - m)^T S^-1 (m_hat - m) / 2``; for SAC the KL of the pre-``tanh`` Gaussians, equal to
  the squashed one because ``tanh`` is a bijection); deterministic heads
  ``||a(s_hat) - a(s)||^2 / 2``; discrete heads the KL of the softmax distributions.

Attacks on a smoothed policy (option ``smoothing_sigma``; :func:`smoothed_attack_hooks`): the
objective is averaged over ``eot_samples`` Gaussian draws ``z_j`` (Expectation over
Transformation, Athalye et al. 2018), each paired with its own reference
(``L(s + delta + sigma z_j; s + sigma z_j)``), drawn once per step from the *attack's* RNG stream
(the adversary does not know the defender's noise; the defender's noise is applied afterwards by
:class:`~certrl.smoothing.GaussianSmoothing` in the same space).

Episode budgets: ``allocation = "greedy"`` (default for user attacks) lets every step use up to
``eps`` until the budget ``B`` is spent; ``"uniform"`` (default of the certify attack) caps step
``t`` at ``sqrt(remaining_t^2 / (T - t))`` with ``T`` the horizon, i.e. ``B / sqrt(T)`` per step
when every step spends its share, and budget a step leaves unspent (the best PGD iterate may lie
inside the ball) is spread over the remaining steps. Whether an episode will end before ``T``
cannot be known when the budget is allocated, so budget left at an early termination is lost.

Reproducibility: every random draw (starts, SGLD noise, EOT noise, random / gaussian
perturbations) comes from the episode's own generator of stream
:data:`~certrl.evaluator.STREAM_ATTACK`, row by row, and policy calls on fewer than
:data:`~certrl.policies.base.MIN_ROWS` rows are padded with zero rows as :class:`Policy` does
for inference: attacked returns are identical for every batch size and worker count.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from certrl.attacks.base import AttackError, ThreatModel, project_ball, register_attack
from certrl.attacks.learned import (
    ThreatState,
    ThreatStateHook,
    action_repr,
    as_bool,
    as_float,
    as_int,
    check_options,
)
from certrl.envs import EnvSpec
from certrl.evaluator import STREAM_ATTACK, ObservationHook, StepContext
from certrl.policies.base import MIN_ROWS, Policy

#: Absolute margin by which the projections undershoot every limit (float32 rounding headroom).
SAFETY = 5e-7
#: The margin on the temporal-coupling radius (differences of two rounded perturbations).
COUPLING_SAFETY = 2e-6

METHODS = ("random", "gaussian", "fgsm", "pgd", "mad")
OBJECTIVES = ("action", "kl")
ALLOCATIONS = ("greedy", "uniform")


# ====================================================================== policy calls
def _padded(fn: Callable[[Tensor], Any], x: Tensor) -> Any:
    """``fn(x)`` on ``x`` padded with zero rows to at least ``MIN_ROWS`` rows (batch-invariant
    rounding, also with gradients enabled, where :class:`Policy` does not pad)."""
    n = x.shape[0]
    if n >= MIN_ROWS:
        return fn(x)
    out = fn(torch.cat([x, x.new_zeros((MIN_ROWS - n, *x.shape[1:]))], 0))
    if isinstance(out, tuple):
        return tuple(None if o is None else o[:n] for o in out)
    return out[:n]


class FastActionGrad:
    """Closed-form value and input gradient of the ``action`` objective for plain MLP policies.

    ``||a(z) - a_ref||^2`` per row and its gradient w.r.t. ``z`` (the network input), computed
    with explicit matrix products instead of autograd: the same numbers up to float32 rounding
    (tested against autograd), at a fraction of autograd's fixed per-call overhead, which
    dominates PGD on the small networks of RL policies (~10 autograd graphs per env step).
    Applies when the policy's network is an ``nn.Sequential`` of ``Linear`` / ``Tanh`` /
    ``ReLU`` layers and its head is continuous (``gaussian``, ``linear`` or ``deterministic``);
    :meth:`build` returns ``None`` otherwise and the attack uses autograd. The action
    representation is :func:`~certrl.attacks.learned.action_repr`'s: ``tanh(mean)`` for
    squashed gaussian heads, the output for deterministic heads, else the mean clamped to the
    action box (straight-through gradient) and rescaled to ``[-1, 1]``.
    """

    def __init__(self, layers: list[tuple[str, Tensor | None, Tensor | None]], out: str,
                 scale: Tensor | None, low: Tensor, high: Tensor) -> None:
        self.layers = layers
        self.out = out  # "tanh" | "identity" | "unit"
        self.scale = scale  # 2 / (high - low) for "unit"
        self.low, self.high = low, high

    @staticmethod
    def build(policy: Policy, kind: str) -> FastActionGrad | None:
        if kind != "action" or policy.discrete or policy.head not in (
                "gaussian", "linear", "deterministic"):
            return None
        net = policy.net
        if not isinstance(net, torch.nn.Sequential):
            return None
        layers: list[tuple[str, Tensor | None, Tensor | None]] = []
        for m in net:
            if isinstance(m, torch.nn.Linear):
                b = None if m.bias is None else m.bias.detach()
                layers.append(("linear", m.weight.detach(), b))
            elif isinstance(m, torch.nn.Tanh):
                layers.append(("tanh", None, None))
            elif isinstance(m, torch.nn.ReLU):
                layers.append(("relu", None, None))
            else:
                return None
        low, high = policy._low, policy._high
        if policy.head == "gaussian" and policy.squash:
            return FastActionGrad(layers, "tanh", None, low, high)
        if policy.head == "deterministic":
            return FastActionGrad(layers, "identity", None, low, high)
        scale = 2.0 / torch.clamp(high - low, min=1e-12)
        return FastActionGrad(layers, "unit", scale, low, high)

    def _forward(self, z: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Output and, per layer, what its backward needs (tanh: its output; relu: its
        input; linear: nothing)."""
        saved: list[Tensor] = []
        h = z
        for kind, w, b in self.layers:
            if kind == "linear":
                assert w is not None
                saved.append(h)
                h = torch.addmm(b, h, w.t()) if b is not None else h @ w.t()
            elif kind == "tanh":
                h = torch.tanh(h)
                saved.append(h)
            else:
                saved.append(h)
                h = torch.relu(h)
        return h, saved

    def repr(self, z: Tensor) -> Tensor:
        """``action_repr`` of the policy on ``z`` (no gradient)."""
        out, _ = self._forward(_pad_rows(z))
        return self._out(out)[: z.shape[0]]

    def _out(self, out: Tensor) -> Tensor:
        if self.out == "tanh":
            return torch.tanh(out)
        if self.out == "identity":
            return out
        assert self.scale is not None
        return (torch.minimum(torch.maximum(out, self.low), self.high) - self.low) * self.scale - 1

    def value(self, z: Tensor, ref: Tensor) -> Tensor:
        """``||repr(z) - ref||^2`` per row."""
        diff = self.repr(z) - ref
        return (diff * diff).sum(-1)

    def value_grad(self, z: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        """``(||repr(z) - ref||^2 [B], d/dz [B, d])``."""
        n = z.shape[0]
        zp = _pad_rows(z)
        out, saved = self._forward(zp)
        a = self._out(out)[:n]
        diff = a - ref
        v = (diff * diff).sum(-1)
        g = 2.0 * diff
        if self.out == "tanh":
            g = g * (1.0 - a * a)
        elif self.out == "unit":
            g = g * self.scale
        if zp.shape[0] != n:
            g = torch.cat([g, g.new_zeros((zp.shape[0] - n, g.shape[1]))], 0)
        for (kind, w, _), s in zip(reversed(self.layers), reversed(saved), strict=True):
            if kind == "linear":
                assert w is not None
                g = g @ w
            elif kind == "tanh":  # s = tanh output
                g = g * (1.0 - s * s)
            else:  # s = relu input
                g = g * (s > 0).to(g.dtype)
        return v, g[:n]


def _draw_mean(t: Tensor) -> Tensor:
    """Mean over the EOT draws (dim 0 of ``[n, B, ...]``), summed draw by draw in a fixed
    order: a ``mean(0)`` over ``[n, B]`` adds in an order that depends on ``B``, so the
    objective (and PGD's choice of iterate) would depend on which episodes share the batch."""
    acc = t[0]
    for i in range(1, t.shape[0]):
        acc = acc + t[i]
    return acc / t.shape[0]


def _eot_inputs(x: Tensor, delta: Tensor, z: Tensor) -> Tensor:
    """``x + delta + z_j`` for every draw, ``[n * B, d]`` draw-major, built draw by draw (the
    gradient reaching ``delta`` then accumulates per draw, in a fixed order, whatever ``B``)."""
    xd = x + delta
    return torch.cat([xd + z[j] for j in range(z.shape[0])], 0)


def _pad_rows(x: Tensor) -> Tensor:
    n = x.shape[0]
    if n >= MIN_ROWS:
        return x
    return torch.cat([x, x.new_zeros((MIN_ROWS - n, *x.shape[1:]))], 0)


class Objective:
    """A per-row quantity the attack maximizes: ``value(nobs_hat, reference(nobs))``.

    ``kind``: ``"action"`` or ``"kl"`` (see the module docstring)."""

    def __init__(self, policy: Policy, kind: str) -> None:
        if kind not in OBJECTIVES:
            raise AttackError(f"objective must be one of {', '.join(OBJECTIVES)}, got {kind!r}")
        self.policy = policy
        self.kind = kind
        self.gaussian_kl = (
            kind == "kl" and not policy.discrete and policy.head == "gaussian"
            and (policy.log_std is not None or policy.state_dependent_std)
        )
        self.fast = FastActionGrad.build(policy, kind)

    def _params(self, nobs: Tensor) -> tuple[Tensor, Tensor | None]:
        return _padded(self.policy.distribution_params, nobs)  # type: ignore[no-any-return]

    def _repr(self, nobs: Tensor) -> Tensor:
        return _padded(lambda z: action_repr(self.policy, z), nobs)  # type: ignore[no-any-return]

    def reference(self, nobs: Tensor) -> Any:
        if self.fast is not None:
            with torch.no_grad():
                return self.fast.repr(nobs)
        with torch.no_grad():
            if self.policy.discrete:
                logits = self._params(nobs)[0]
                if self.kind == "action":
                    return logits.argmax(-1)
                return torch.log_softmax(logits, -1)
            if self.gaussian_kl:
                m, ls = self._params(nobs)
                if ls is not None:
                    return m, ls
            return self._repr(nobs)

    def value(self, nobs: Tensor, ref: Any) -> Tensor:
        if self.policy.discrete:
            logits = self._params(nobs)[0]
            if self.kind == "action":  # cross-entropy away from the clean argmax
                return torch.logsumexp(logits, -1) - logits.gather(-1, ref[:, None])[:, 0]
            lp = torch.log_softmax(logits, -1)
            return (ref.exp() * (ref - lp)).sum(-1)
        if isinstance(ref, tuple):  # KL(N(m0, s0) || N(m1, s1)), diagonal
            m0, ls0 = ref
            m1, ls1 = self._params(nobs)
            assert ls1 is not None
            v0, v1 = torch.exp(2 * ls0), torch.exp(2 * ls1)
            return (ls1 - ls0 + (v0 + (m1 - m0) ** 2) / (2 * v1) - 0.5).sum(-1)
        sq = ((self._repr(nobs) - ref) ** 2).sum(-1)
        return 0.5 * sq if self.kind == "kl" else sq


# ====================================================================== random draws
def _normal(rngs: list[np.random.Generator], shape: tuple[int, ...]) -> Tensor:
    return torch.as_tensor(np.stack([g.standard_normal(shape) for g in rngs]), dtype=torch.float32)


def _uniform(rngs: list[np.random.Generator], shape: tuple[int, ...]) -> Tensor:
    return torch.as_tensor(np.stack([g.random(shape) for g in rngs]), dtype=torch.float32)


def uniform_ball(rngs: list[np.random.Generator], d: int, radius: Tensor, norm: str) -> Tensor:
    """One point per row uniform in the ``norm`` ball of ``radius [B]`` (linf: the cube)."""
    r = radius[:, None]
    if norm == "linf":
        return (_uniform(rngs, (d,)) * 2 - 1) * r
    z = _normal(rngs, (d,))
    u = _uniform(rngs, (1,))
    return z / z.norm(dim=1, keepdim=True).clamp_min(1e-12) * u ** (1.0 / d) * r


def _direction(g: Tensor, norm: str) -> Tensor:
    """Steepest-ascent direction of unit ``norm`` size: ``sign`` (linf) or ``g / ||g||_2``."""
    if norm == "linf":
        return g.sign()
    return g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _safe(v: float | None, margin: float = SAFETY) -> float | None:
    return None if v is None else max(v - margin, 0.5 * v)


def round_towards(x: Tensor, delta: Tensor) -> Tensor:
    """``x + delta`` in float32 with every coordinate rounded towards ``x``, so that the
    perturbation the evaluator records, ``(x + delta) - x``, is no larger than ``delta`` in
    any coordinate: norm bounds and budgets that ``delta`` satisfies hold exactly for what is
    applied, whatever the magnitude of ``x``. (Temporal coupling compares two rounded
    perturbations: it holds up to one float32 ulp of ``x`` per coordinate, which the coupling
    margin :data:`COUPLING_SAFETY` covers for ``|x| < 16`` and up to 9 dimensions.)"""
    y = x + delta
    for _ in range(3):
        over = (y - x).abs() > delta.abs()
        if not bool(over.any()):
            break
        y = torch.where(over, torch.nextafter(y, x), y)
    return y


def _wind_down_factor(q: np.ndarray) -> np.ndarray:
    """``1 + sum_{k=1}^{ceil(q)-1} (1 - k/q)^2``: the squared l2 cost of ``delta`` plus the ramp
    ``delta (1 - k/q)`` back to 0 in steps of coupling size ``||delta|| / q``, per unit
    ``||delta||_2^2``."""
    q = np.maximum(q, 1e-12)
    k = np.maximum(np.ceil(q) - 1, 0)
    return 1.0 + k - k * (k + 1) / q + k * (k + 1) * (2 * k + 1) / (6 * q**2)


def keep_wind_down(
    delta: Tensor, prev: Tensor, started: Tensor, spent_sq: Tensor, threat: ThreatModel
) -> Tensor:
    """Keep an episode budget and temporal coupling jointly satisfiable in later steps.

    With both ``episode_budget`` ``B`` and ``eps_bar``, a perturbation cannot drop to 0 at once:
    going from ``delta`` back to 0 takes ``ceil(||delta|| / eps_bar)`` steps (coupling norm), and
    they spend budget. :meth:`ThreatModel.project` alone can therefore paint itself into a
    corner (no ``delta_t`` within ``eps_bar`` of ``delta_(t-1)`` fits the remaining budget).
    This keeps the invariant ``spent + cost(delta) <= B^2`` where ``cost`` counts ``delta`` and
    the radial ramp ``delta (1 - k eps_bar / ||delta||)`` to 0: rows that break it are moved
    along the segment towards the fallback ``prev (1 - eps_bar / ||prev||)_+`` (the ramp's next
    point, which satisfies the invariant whenever the previous step did; 0 on an episode's first
    step) as far as the invariant allows (three rounds of a 32-point grid search on the segment,
    resolution 3e-5). Every returned row satisfies every constraint and the invariant."""
    b, e = threat.episode_budget, threat.eps_bar
    if b is None or e is None:
        return delta
    e = max(e, 1e-12)  # eps_bar = 0: delta is constant for the whole episode, so only 0 is safe
    linf = threat.norm == "linf"
    rem = b**2 - spent_sq.detach().to(torch.float64).numpy()

    def ok(v: np.ndarray) -> np.ndarray:  # v [..., B, d]
        c = np.abs(v).max(-1) if linf else np.sqrt((v**2).sum(-1))
        return (v**2).sum(-1) * _wind_down_factor(c / e) <= rem

    dl = delta.detach().to(torch.float64).numpy()
    good = ok(dl)
    if good.all():
        return delta
    pv = prev.detach().to(torch.float64).numpy()
    mp = np.abs(pv).max(-1) if linf else np.sqrt((pv**2).sum(-1))
    fb = pv * np.clip(1.0 - e / np.maximum(mp, 1e-30), 0.0, None)[:, None]
    fb = np.where(started.numpy()[:, None], fb, 0.0)
    lo = np.zeros(dl.shape[0])
    width = 1.0
    grid = np.arange(1, 33) / 32.0
    for _ in range(3):
        ts = lo[None, :] + width * grid[:, None]  # [32, B]
        cand = fb[None] + (dl - fb)[None] * ts[..., None]
        g = ok(cand)
        last = np.where(g.any(0), 31 - np.argmax(g[::-1], axis=0), -1)
        lo = np.where(last >= 0, lo + width * grid[np.maximum(last, 0)], lo)
        width /= 32.0
    lo = np.minimum(lo, 1.0)
    fixed = fb + (dl - fb) * lo[:, None]
    out = torch.as_tensor(np.where(good[:, None], dl, fixed), dtype=delta.dtype)
    return torch.where(torch.as_tensor(good)[:, None], delta, out)


# ====================================================================== the hook
class GradientAttackHook(ThreatStateHook):
    """Observation attack hook of :data:`METHODS` (see the module docstring).

    Args:
        threat: the threat model (its space is the hook's space).
        method: ``random``, ``gaussian``, ``fgsm``, ``pgd`` or ``mad``.
        objective: ``action`` or ``kl`` (gradient methods).
        steps, step_frac, step_size: iterations; step size as a fraction of the step's radius,
            or absolute (``step_size`` wins when given).
        restarts: PGD restarts (best per episode kept).
        random_start: PGD uniform start in the ball; FGSM's R+FGSM random half step.
        sgld: MAD's Langevin noise.
        std: ``gaussian`` noise std (default: the step's radius).
        eot_sigma, eot_samples: attack a policy smoothed with ``N(0, eot_sigma^2 I)`` in the
            hook's space, averaging the objective over ``eot_samples`` draws.
        allocation: ``greedy`` or ``uniform`` use of an episode budget.
        horizon: ``T`` of the ``uniform`` allocation (default: the environment's horizon).
        name: the attack's name in results.
        frame_stack: ``k > 0``: a *per-frame* adversary on frame-stacked observations (Atari,
            the threat model of Kumar et al.'s per-frame smoothing): at each step it perturbs
            only the newest of the ``k`` frames and shows every older frame as it perturbed it
            when that frame was newest (zero padding frames untouched), so each frame is
            perturbed once and ``eps`` / ``B`` are per frame, summed over frames. The
            evaluator checks this and counts the newest frame only (``Hook.frame_stack``).
    """

    adversarial = True
    rng_stream = STREAM_ATTACK

    def __init__(
        self,
        threat: ThreatModel,
        method: str,
        *,
        objective: str = "action",
        steps: int = 10,
        step_frac: float | None = None,
        step_size: float | None = None,
        restarts: int = 1,
        random_start: bool = True,
        sgld: bool = True,
        std: float | None = None,
        eot_sigma: float | None = None,
        eot_samples: int = 1,
        allocation: str = "greedy",
        horizon: int | None = None,
        name: str | None = None,
        frame_stack: int = 0,
    ) -> None:
        if method not in METHODS:
            raise AttackError(f"unknown attack method {method!r}; expected {', '.join(METHODS)}")
        if objective not in OBJECTIVES:
            raise AttackError(
                f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if allocation not in ALLOCATIONS:
            raise AttackError(f"allocation must be greedy or uniform, got {allocation!r}")
        if steps < 1 or restarts < 1 or eot_samples < 1:
            raise AttackError("steps, restarts and eot_samples must be >= 1")
        for k, v in (("step_frac", step_frac), ("step_size", step_size), ("std", std)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise AttackError(f"{k} must be a finite number > 0, got {v}")
        if eot_sigma is not None and not (math.isfinite(eot_sigma) and eot_sigma > 0):
            raise AttackError(f"smoothing_sigma must be > 0, got {eot_sigma}")
        if horizon is not None and horizon < 1:
            raise AttackError(f"horizon must be >= 1, got {horizon}")
        if frame_stack < 0:
            raise AttackError(f"frame_stack must be >= 0, got {frame_stack}")
        self.frame_stack = int(frame_stack)
        self.threat = threat
        self.space = threat.space
        self.method = method
        self.name = name or method
        self.objective = objective
        self.steps = int(steps)
        if step_frac is None:
            step_frac = {"pgd": 2.5 / self.steps, "mad": 1.0 / self.steps}.get(method, 1.0)
        self.step_frac = float(step_frac)
        self.step_size = step_size
        self.restarts = int(restarts)
        self.random_start = bool(random_start)
        self.sgld = bool(sgld)
        self.std = std
        self.eot_sigma = eot_sigma
        self.eot_samples = int(eot_samples) if eot_sigma is not None else 1
        self.allocation = allocation
        self.horizon = horizon
        # the limits the projections aim at: SAFETY below the audited ones
        self._inner = dataclasses.replace(
            threat,
            eps=_safe(threat.eps) or 0.0,
            episode_budget=_safe(threat.episode_budget),
            eps_bar=_safe(threat.eps_bar, COUPLING_SAFETY),
        )
        self._policy: Policy | None = None
        self._state: ThreatState | None = None
        self._obj: Objective | None = None
        self._T: int = horizon or 1
        # per-frame mode: each slot's last k - 1 perturbed frames (newest last) and whether
        # they are frames of this episode (not the zero padding before its first frame)
        self._frames: Tensor | None = None
        self._valid: np.ndarray | None = None

    # ------------------------------------------------------------------ hook protocol
    def config(self) -> dict[str, Any]:
        c: dict[str, Any] = {
            "name": self.name,
            "method": self.method,
            "space": self.space,
            "threat": self.threat.to_json(),
        }
        if self.method in ("fgsm", "pgd", "mad"):
            c["objective"] = self.objective
            c["random_start"] = self.random_start
        if self.method in ("pgd", "mad"):
            c["steps"] = self.steps
            c["restarts"] = self.restarts
            if self.step_size is not None:
                c["step_size"] = self.step_size
            else:
                c["step_frac"] = self.step_frac
        if self.method == "mad":
            c["sgld"] = self.sgld
        if self.method == "gaussian":
            c["std"] = self.std if self.std is not None else "eps"
        if self.eot_sigma is not None:
            c["smoothing_sigma"] = self.eot_sigma
            c["eot_samples"] = self.eot_samples
        if self.threat.episode_budget is not None:
            c["allocation"] = self.allocation
            if self.allocation == "uniform":
                c["horizon"] = self.horizon
        if self.frame_stack:
            c["unit"] = "frame"
            c["frame_stack"] = self.frame_stack
        return c

    def bind(self, policy: Policy, spec: EnvSpec, n_slots: int) -> None:
        self._policy = policy
        self._state = ThreatState(self._inner, n_slots, policy.obs_dim)
        self._obj = Objective(policy, self.objective)
        self._T = int(self.horizon or spec.horizon)
        if self.frame_stack:
            k = self.frame_stack
            if policy.obs_dim % k:
                raise AttackError(f"observations of {policy.obs_dim} values are not a stack "
                                  f"of {k} frames")
            self._frames = torch.zeros(n_slots, k - 1, policy.obs_dim // k)
            self._valid = np.zeros((n_slots, k - 1), dtype=bool)

    def reset(self, slots: np.ndarray, rngs: list[np.random.Generator]) -> None:
        super().reset(slots, rngs)
        if self._valid is not None:
            self._valid[np.asarray(slots, dtype=np.int64)] = False

    def __getstate__(self) -> dict[str, Any]:
        d = super().__getstate__()
        d["_obj"] = None
        d["_frames"] = d["_valid"] = None
        return d

    def _with_past_frames(self, x: Tensor, slots: np.ndarray) -> Tensor:
        """``x`` with every older frame replaced by its perturbed version (per-frame mode)."""
        assert self._frames is not None and self._valid is not None
        k, b = self.frame_stack, x.shape[0]
        if k == 1:
            return x
        frames = x.reshape(b, k, -1).clone()
        valid = torch.as_tensor(self._valid[slots])[:, :, None]
        frames[:, :-1] = torch.where(valid, self._frames[slots], frames[:, :-1])
        return frames.reshape(b, -1)

    def _remember_frame(self, new: Tensor, slots: np.ndarray) -> None:
        assert self._frames is not None and self._valid is not None
        if self.frame_stack == 1:
            return
        newest = new.reshape(new.shape[0], self.frame_stack, -1)[:, -1]
        f = self._frames[slots]
        f[:, :-1] = f[:, 1:].clone()
        f[:, -1] = newest
        self._frames[slots] = f
        v = self._valid[slots]
        v[:, :-1] = v[:, 1:]
        v[:, -1] = True
        self._valid[slots] = v

    def __call__(self, x: Tensor, ctx: StepContext) -> Tensor:
        th = self.threat
        if th.eps == 0 or th.episode_budget == 0:
            return x
        assert self._state is not None
        x = x.detach()
        slots = np.asarray(ctx.slots)
        if self.frame_stack:
            x = self._with_past_frames(x, slots)
        radius = self._radius(ctx, slots)

        state = self._state
        started = torch.as_tensor(state.started[slots])
        prev = state.prev[slots]
        spent = state.spent[slots]

        def project(d: Tensor) -> Tensor:
            out = state.project(project_ball(d, radius, th.norm), slots)
            return keep_wind_down(out, prev, started, spent, self._inner)

        with torch.no_grad():
            delta = project(self.perturbation(x, ctx, radius, project).detach())
            new = round_towards(x, delta)
        self._state.commit(new - x, slots, x)  # exactly what the evaluator records
        if self.frame_stack:
            self._remember_frame(new, slots)
        return new

    # ------------------------------------------------------------------ pieces
    def _radius(self, ctx: StepContext, slots: np.ndarray) -> Tensor:
        """This step's radius per row: ``eps``, or the uniform share of the remaining budget."""
        assert self._state is not None
        r = torch.full((len(slots),), self._inner.eps, dtype=torch.float32)
        b = self._inner.episode_budget
        if b is not None and self.allocation == "uniform":
            rem_sq = torch.clamp(b**2 - self._state.spent[slots].to(torch.float64), min=0.0)
            left = torch.as_tensor(np.maximum(self._T - np.asarray(ctx.t), 1), dtype=torch.float64)
            r = torch.minimum(r, torch.sqrt(rem_sq / left).to(torch.float32))
        return r

    def to_policy_space(self, x: Tensor) -> Tensor:
        assert self._policy is not None
        return self._policy.normalize(x) if self.space == "raw" else x

    def perturbation(
        self, x: Tensor, ctx: StepContext, radius: Tensor, project: Callable[[Tensor], Tensor]
    ) -> Tensor:
        """The (feasible) perturbation of this step for every row of ``x``."""
        f = None if self.method in ("random", "gaussian") else self._objective_fn(x, ctx)
        if not self.frame_stack:
            return self._search(x, ctx, radius, project, f)
        # per-frame mode: search over the newest frame only, zeros on the older ones
        n = x.shape[1] // self.frame_stack

        def lift(dn: Tensor) -> Tensor:
            return torch.nn.functional.pad(dn, (x.shape[1] - n, 0))

        def project_n(dn: Tensor) -> Tensor:
            return project(lift(dn))[:, -n:]

        fn = None
        if f is not None:
            full = f

            def fn(dn: Tensor) -> Tensor:
                return full(lift(dn))

            vg = getattr(full, "value_grad", None)
            if vg is not None:
                def vg_n(dn: Tensor) -> tuple[Tensor, Tensor]:
                    v, g = vg(lift(dn))
                    return v, g[:, -n:]

                fn.value_grad = vg_n  # type: ignore[attr-defined]
        return lift(self._search(x[:, -n:], ctx, radius, project_n, fn))

    def _search(self, x: Tensor, ctx: StepContext, radius: Tensor,
                project: Callable[[Tensor], Tensor],
                f: Callable[[Tensor], Tensor] | None) -> Tensor:
        """The method's search over perturbations shaped like ``x`` (``f``: the objective)."""
        d = x.shape[1]
        norm = self.threat.norm
        if self.method == "random":
            return project(uniform_ball(ctx.rngs, d, radius, norm))
        if self.method == "gaussian":
            std = radius[:, None] if self.std is None else self.std
            return project(_normal(ctx.rngs, (d,)) * std)
        assert f is not None
        size = (
            torch.full_like(radius, self.step_size)
            if self.step_size is not None
            else self.step_frac * radius
        )[:, None]
        if self.method == "fgsm":
            return self._fgsm(f, x, ctx, radius, project)
        if self.method == "pgd":
            return self._pgd(f, x, ctx, radius, size, project)
        return self._mad(f, x, ctx, size, project)

    def _objective_fn(self, x: Tensor, ctx: StepContext) -> Callable[[Tensor], Tensor]:
        """``delta -> objective [B]`` with the references (and EOT draws) of this step."""
        assert self._obj is not None
        obj = self._obj
        b, d = x.shape
        assert self._policy is not None
        # closed-form gradients where the input map is the identity (normalized space, or a
        # policy without normalization); autograd otherwise
        fast = obj.fast if (self.space != "raw" or self._policy.obs_norm is None) else None
        if self.eot_sigma is None:
            ref = obj.reference(self.to_policy_space(x))
            if fast is not None:
                fa = fast

                def f_fast(delta: Tensor) -> Tensor:
                    return fa.value(x + delta, ref)

                f_fast.value_grad = lambda delta: fa.value_grad(x + delta, ref)  # type: ignore[attr-defined]
                return f_fast

            def f(delta: Tensor) -> Tensor:
                return obj.value(self.to_policy_space(x + delta), ref)

            return f
        n = self.eot_samples
        z = _normal(ctx.rngs, (n, d)).transpose(0, 1) * self.eot_sigma  # [n, B, d]
        ref = obj.reference(self.to_policy_space((x[None] + z).reshape(n * b, d)))
        if fast is not None:
            fe = fast

            def f_eot_fast(delta: Tensor) -> Tensor:
                return _draw_mean(fe.value(_eot_inputs(x, delta, z), ref).reshape(n, b))

            def vg_eot(delta: Tensor) -> tuple[Tensor, Tensor]:
                v, g = fe.value_grad(_eot_inputs(x, delta, z), ref)
                return _draw_mean(v.reshape(n, b)), _draw_mean(g.reshape(n, b, d))

            f_eot_fast.value_grad = vg_eot  # type: ignore[attr-defined]
            return f_eot_fast

        def f_eot(delta: Tensor) -> Tensor:
            xs = _eot_inputs(x, delta, z)
            return _draw_mean(obj.value(self.to_policy_space(xs), ref).reshape(n, b))

        return f_eot

    @staticmethod
    def _value_grad(f: Callable[[Tensor], Tensor], delta: Tensor) -> tuple[Tensor, Tensor]:
        fast = getattr(f, "value_grad", None)
        if fast is not None:
            with torch.no_grad():
                v, g = fast(delta.detach())
            return v, g
        dv = delta.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            v = f(dv)
            (g,) = torch.autograd.grad(v.sum(), dv)
        return v.detach(), g.detach()

    def _fgsm(self, f: Callable[[Tensor], Tensor], x: Tensor, ctx: StepContext, radius: Tensor,
              project: Callable[[Tensor], Tensor]) -> Tensor:
        assert self._policy is not None
        norm = self.threat.norm
        r = radius[:, None]
        start = torch.zeros_like(x)
        step = r
        if self.random_start and not self._policy.discrete:  # R+FGSM
            start = project(0.5 * r * _direction(_normal(ctx.rngs, (x.shape[1],)), norm))
            step = 0.5 * r
        _, g = self._value_grad(f, start)
        return project(start + step * _direction(g, norm))

    def _pgd(self, f: Callable[[Tensor], Tensor], x: Tensor, ctx: StepContext, radius: Tensor,
             size: Tensor, project: Callable[[Tensor], Tensor]) -> Tensor:
        norm = self.threat.norm
        best = torch.zeros_like(x)
        best_val = torch.full((x.shape[0],), -math.inf)
        for _ in range(self.restarts):
            delta = (
                project(uniform_ball(ctx.rngs, x.shape[1], radius, norm))
                if self.random_start else torch.zeros_like(x)
            )
            for _ in range(self.steps):
                v, g = self._value_grad(f, delta)
                better = v > best_val
                best_val = torch.where(better, v, best_val)
                best = torch.where(better[:, None], delta, best)
                delta = project(delta + size * _direction(g, norm))
            with torch.no_grad():
                v = f(delta)
            better = v > best_val
            best_val = torch.where(better, v, best_val)
            best = torch.where(better[:, None], delta, best)
        return best

    def _mad(self, f: Callable[[Tensor], Tensor], x: Tensor, ctx: StepContext, size: Tensor,
             project: Callable[[Tensor], Tensor]) -> Tensor:
        norm = self.threat.norm
        d = x.shape[1]
        best = torch.zeros_like(x)
        best_val = torch.full((x.shape[0],), -math.inf)
        for _ in range(self.restarts):
            # the gradient vanishes at delta = 0: SA-PPO starts one noisy step away
            delta = project(size * _direction(_normal(ctx.rngs, (d,)), norm))
            for i in range(self.steps):
                v, g = self._value_grad(f, delta)
                better = v > best_val
                best_val = torch.where(better, v, best_val)
                best = torch.where(better[:, None], delta, best)
                if self.sgld:
                    g = g + torch.sqrt(2 * size) / (i + 2) * _normal(ctx.rngs, (d,))
                delta = project(delta + size * _direction(g, norm))
            with torch.no_grad():
                v = f(delta)
            better = v > best_val
            best_val = torch.where(better, v, best_val)
            best = torch.where(better[:, None], delta, best)
        return best


# ====================================================================== options and factories
_COMMON_OPTS = {"smoothing_sigma", "eot_samples", "allocation", "horizon", "unit"}
_METHOD_OPTS: dict[str, set[str]] = {
    "random": set(),
    "gaussian": {"std"},
    "fgsm": {"objective", "random_start"},
    "pgd": {"objective", "steps", "step_frac", "step_size", "restarts", "random_start"},
    "mad": {"steps", "step_frac", "step_size", "restarts", "sgld"},
}


def _opt_float(options: dict[str, Any], key: str) -> float | None:
    v = options.get(key)
    if v is None or (isinstance(v, str) and v.strip().lower() in ("", "none")):
        return None
    return as_float(key, v)


def build_gradient_attack(
    method: str, threat: ThreatModel, policy: Policy, spec: EnvSpec, options: dict[str, Any]
) -> GradientAttackHook:
    """Parse ``options`` (values may be strings from ``--opt key=value``) and build the hook.

    Raises :class:`AttackError` for unknown options and bad values."""
    check_options(method, options, _METHOD_OPTS[method] | _COMMON_OPTS)
    kw: dict[str, Any] = {}
    if "objective" in options:
        kw["objective"] = str(options["objective"]).strip().lower()
    elif method == "mad":
        kw["objective"] = "kl"
    for k in ("steps", "restarts", "eot_samples", "horizon"):
        if k in options:
            kw[k] = as_int(k, options[k])
    for k in ("step_frac", "step_size", "std"):
        v = _opt_float(options, k)
        if v is not None:
            kw[k] = v
    for k in ("random_start", "sgld"):
        if k in options:
            kw[k] = as_bool(k, options[k])
    sigma = _opt_float(options, "smoothing_sigma")
    if sigma is not None:
        kw["eot_sigma"] = sigma
        kw.setdefault("eot_samples", 8)
    elif "eot_samples" in options:
        raise AttackError("eot_samples needs smoothing_sigma (the smoothing noise to average over)")
    if "allocation" in options:
        kw["allocation"] = str(options["allocation"]).strip().lower()
    unit = str(options.get("unit", "input")).strip().lower()
    if unit not in ("input", "frame"):
        raise AttackError(f"unit must be input or frame, got {unit!r}")
    if unit == "frame":  # the per-frame adversary (Atari: each new frame perturbed once)
        if not spec.frame_stack:
            raise AttackError(f"unit=frame needs frame-stacked observations (the Atari "
                              f"environments); {spec.gym_id} has none")
        kw["frame_stack"] = int(spec.frame_stack)
    return GradientAttackHook(threat, method, name=method, **kw)


@register_attack("random")
def random_attack(
    threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any
) -> GradientAttackHook:
    """Uniform random perturbation in the threat model's ball (SA-PPO's random attack)."""
    return build_gradient_attack("random", threat, policy, spec, options)


@register_attack("gaussian")
def gaussian_attack(
    threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any
) -> GradientAttackHook:
    """Gaussian noise N(0, std^2) per coordinate (std = eps), projected onto the threat model."""
    return build_gradient_attack("gaussian", threat, policy, spec, options)


@register_attack("fgsm")
def fgsm_attack(
    threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any
) -> GradientAttackHook:
    """FGSM (R+FGSM for continuous policies): one gradient step away from the clean action."""
    return build_gradient_attack("fgsm", threat, policy, spec, options)


@register_attack("pgd")
def pgd_attack(
    threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any
) -> GradientAttackHook:
    """PGD (10 steps of 2.5 eps / 10, random start): maximize the action's deviation."""
    return build_gradient_attack("pgd", threat, policy, spec, options)


@register_attack("mad")
def mad_attack(
    threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any
) -> GradientAttackHook:
    """MAD (SA-PPO): maximize KL(pi(.|s) || pi(.|s_hat)) by SGLD sign steps."""
    return build_gradient_attack("mad", threat, policy, spec, options)


# ====================================================================== certify
def smoothed_attack_hooks(
    policy: Policy,
    sigma: float,
    space: str,
    budget: float,
    horizon: int,
    *,
    steps: int = 10,
    eot_samples: int = 8,
    restarts: int = 1,
    frame_stack: int = 0,
) -> list[ObservationHook]:
    """The adaptive episode-budget attack on the smoothed policy, for ``certrl certify``.

    Returns ``[attack, smoothing]``: an l2 PGD hook (``steps`` steps, EOT over ``eot_samples``
    draws of the smoothing noise from the attack's stream, ``uniform`` budget allocation over
    ``horizon`` steps: ``B / sqrt(T)`` per step plus the unspent remainder) under
    ``ThreatModel(eps=B, norm="l2", space=space, episode_budget=B)``, followed by the
    defender's :class:`~certrl.smoothing.GaussianSmoothing` noise (same space, not adversarial).
    Both are observation hooks in ``space``, so the evaluator applies them in this order: the
    adversary perturbs the observation, then the smoothed policy adds its noise. Only the attack
    is ``adversarial``: the recorded (audited) norms are the adversary's alone and never exceed
    ``B`` over the episode.

    ``frame_stack = k > 0`` (Atari, per-frame smoothing): the adversary of the per-frame
    certificates instead. It perturbs each new frame once (the attack's per-frame mode, every
    older frame shown as it was perturbed), ``B`` is summed over frames, and the defender's
    noise is :class:`~certrl.smoothing.FrameSmoothing` (each frame's noise drawn once). The
    EOT draws are fresh on the whole stack: the adversary never sees the defender's noise,
    and on the real frames of each stack it has the same N(0, sigma^2 I) law (the zero padding
    of an episode's first stacks, which the defender leaves noiseless, aside).
    """
    from certrl.smoothing import FrameSmoothing, GaussianSmoothing

    if not (math.isfinite(budget) and budget >= 0):
        raise AttackError(f"budget must be finite and >= 0, got {budget}")
    threat = ThreatModel(eps=float(budget), norm="l2", space=space, episode_budget=float(budget))
    attack = GradientAttackHook(
        threat,
        "pgd",
        objective="action",
        steps=steps,
        restarts=restarts,
        eot_sigma=float(sigma),
        eot_samples=eot_samples,
        allocation="uniform",
        horizon=int(horizon),
        name="smoothed-pgd-frames" if frame_stack else "smoothed-pgd",
        frame_stack=frame_stack,
    )
    if frame_stack:
        return [attack, FrameSmoothing(sigma, space, frame_stack)]
    return [attack, GaussianSmoothing(sigma, space)]
