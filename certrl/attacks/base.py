"""Threat models, projections, budget audits and the attack registry.

An observation attack is an :class:`~certrl.evaluator.ObservationHook` with
``adversarial = True``: at every step it receives the batch of live episodes' observations
(in its :class:`ThreatModel`'s space: ``normalized`` = the policy's ``(o - mu)/sqrt(var+eps)``,
the space SA-PPO / ATLA / PA-AD budgets are defined in; or ``raw``) and returns the perturbed
batch. It must keep every perturbation inside the threat model (use :meth:`ThreatModel.project`);
the evaluator records the norms of what was actually applied and :meth:`ThreatModel.audit`
checks them after every episode (+1e-6 slack): a violation raises :class:`BudgetViolation`
(an attack bug, never silently tolerated).

Threat models:

* ``linf`` / ``l2`` per step: ``||delta_t|| <= eps``.
* episode l2 budget ``B`` (the threat model of policy-smoothing certificates):
  ``sqrt(sum_t ||delta_t||_2^2) <= B`` — attacks track the budget spent per episode.
* temporally coupled (GRAD, Liang et al.): additionally ``||delta_t - delta_{t-1}|| <= eps_bar``.

Action attacks are :class:`~certrl.evaluator.ActionHook` s with their own budgets
(``alpha`` mixing / replacement probability, or an l1/l2 radius).

Registry: ``@register_attack("name", kind="obs"|"action", strength_rank=k)`` on a factory
``f(threat: ThreatModel, policy: Policy, spec: EnvSpec, **options) -> Hook``; the CLI's
``--attack all`` runs every registered attack.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from certrl.evaluator import EpisodeResult

AUDIT_SLACK = 1e-6


class BudgetViolation(AssertionError):
    """An attack applied a perturbation outside its threat model (a bug in the attack)."""


class AttackError(ValueError):
    """Bad attack configuration from the user (exit code 2)."""


@dataclass(frozen=True)
class ThreatModel:
    """Where and how much an observation adversary may perturb.

    Args:
        eps: per-step radius (``norm`` ball), ``>= 0``.
        norm: ``"linf"`` or ``"l2"``.
        space: ``"normalized"`` or ``"raw"``.
        episode_budget: total l2 budget over the episode (``None``: unlimited).
        eps_bar: temporal-coupling radius on ``delta_t - delta_{t-1}`` (``None``: none).
    """

    eps: float
    norm: str = "linf"
    space: str = "normalized"
    episode_budget: float | None = None
    eps_bar: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise AttackError(f"--eps must be a finite number >= 0, got {self.eps}")
        if self.norm not in ("linf", "l2"):
            raise AttackError(f"--norm must be linf or l2, got {self.norm!r}")
        if self.space not in ("normalized", "raw"):
            raise AttackError(f"--space must be normalized or raw, got {self.space!r}")
        if self.episode_budget is not None and not self.episode_budget >= 0:
            raise AttackError(f"episode budget must be >= 0, got {self.episode_budget}")
        if self.eps_bar is not None and not self.eps_bar >= 0:
            raise AttackError(f"--eps-bar must be >= 0, got {self.eps_bar}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        s = f"{'l_inf' if self.norm == 'linf' else 'l2'} <= {self.eps:g} per step"
        if self.episode_budget is not None:
            s += f", episode l2 budget {self.episode_budget:g}"
        if self.eps_bar is not None:
            s += f", ||delta_t - delta_(t-1)|| <= {self.eps_bar:g}"
        return f"{s} ({self.space} observations)"

    # ------------------------------------------------------------------ projections
    def project_step(self, delta: Tensor, eps: float | Tensor | None = None) -> Tensor:
        """Project rows of ``delta [B, d]`` onto the per-step ball (radius ``eps`` or a
        per-row tensor of radii)."""
        r = self.eps if eps is None else eps
        return project_ball(delta, r, self.norm)

    def project(
        self,
        delta: Tensor,
        prev: Tensor | None = None,
        spent_sq: Tensor | None = None,
    ) -> Tensor:
        """Project onto every constraint of the threat model.

        ``prev``: the previous step's perturbation ``[B, d]`` (temporal coupling);
        ``spent_sq``: l2 budget already spent this episode, squared, ``[B]``.
        Order: temporal coupling, then the per-step ball, then the remaining episode budget.
        The last two only shrink the vector towards 0; if that breaks the coupling
        constraint, the result is moved back along the segment towards ``prev`` (which is
        feasible for the ball and the budget when it was applied last step).

        Caveat: with *both* an episode budget and ``eps_bar`` the set can become empty (a
        perturbation cannot drop to 0 faster than ``eps_bar`` per step, and that ramp spends
        budget); hooks that allow this combination must keep a reserve for the ramp, as
        :func:`certrl.attacks.gradient.keep_wind_down` does. The audit catches any violation.
        """
        out = delta
        if self.eps_bar is not None and prev is not None:
            out = prev + project_ball(out - prev, self.eps_bar, self.norm)
        out = project_ball(out, self.eps, self.norm)
        if self.episode_budget is not None:
            spent = spent_sq if spent_sq is not None else torch.zeros(out.shape[0])
            remaining = torch.sqrt(torch.clamp(self.episode_budget**2 - spent, min=0.0))
            out = project_ball(out, remaining.to(out), "l2")
        if self.eps_bar is not None and prev is not None:
            # shrinking towards 0 can break coupling; the largest t in [0, 1] with
            # ||t * out - prev|| <= eps_bar is found by bisection per row (cheap, 30 steps)
            out = _couple(out, prev, self.eps_bar, self.norm)
        return out

    # ------------------------------------------------------------------ audit
    def audit(self, r: EpisodeResult) -> None:
        """Raise :class:`BudgetViolation` if episode ``r`` exceeded this threat model."""
        per_step = r.obs_linf_max if self.norm == "linf" else r.obs_l2_max
        if per_step > self.eps + AUDIT_SLACK:
            raise BudgetViolation(
                f"episode {r.index}: per-step {self.norm} perturbation {per_step:.8g} exceeds "
                f"eps={self.eps:g}"
            )
        if self.episode_budget is not None and r.obs_l2_total > self.episode_budget + AUDIT_SLACK:
            raise BudgetViolation(
                f"episode {r.index}: episode l2 budget {r.obs_l2_total:.8g} exceeds "
                f"B={self.episode_budget:g}"
            )
        coupled = r.extras.get("max_step_change")
        # float32 rounding of the observation (see ThreatState): never more than that
        rounding = float(r.extras.get("coupling_rounding", 0.0))
        if (self.eps_bar is not None and coupled is not None
                and coupled > self.eps_bar + AUDIT_SLACK + rounding):
            raise BudgetViolation(
                f"episode {r.index}: ||delta_t - delta_(t-1)|| = {coupled:.8g} exceeds "
                f"eps_bar={self.eps_bar:g}"
            )


def project_ball(delta: Tensor, radius: float | Tensor, norm: str) -> Tensor:
    """Euclidean projection of each row onto the ``norm`` ball of ``radius`` (float or [B])."""
    if norm == "linf":
        if isinstance(radius, Tensor):
            r = radius.reshape(-1, *([1] * (delta.ndim - 1)))
            return torch.maximum(torch.minimum(delta, r), -r)
        return torch.clamp(delta, -radius, radius)
    n = delta.flatten(1).norm(dim=1)
    r = radius if isinstance(radius, Tensor) else torch.full_like(n, float(radius))
    scale = torch.where(n > r, r / n.clamp_min(1e-30), torch.ones_like(n))
    return delta * scale.reshape(-1, *([1] * (delta.ndim - 1)))


def _couple(out: Tensor, prev: Tensor, eps_bar: float, norm: str) -> Tensor:
    def dist(x: Tensor) -> Tensor:
        d = (x - prev).flatten(1)
        return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)

    ok = dist(out) <= eps_bar
    if bool(ok.all()):
        return out
    lo = torch.zeros(out.shape[0], dtype=out.dtype)
    hi = torch.ones(out.shape[0], dtype=out.dtype)
    for _ in range(40):  # bisection on t in out_t = prev + t (out - prev)... towards prev
        mid = (lo + hi) / 2
        cand = prev + (out - prev) * mid[:, None]
        good = dist(cand) <= eps_bar
        lo = torch.where(good, mid, lo)
        hi = torch.where(good, hi, mid)
    fixed = prev + (out - prev) * lo[:, None]
    return torch.where(ok[:, None], out, fixed)


# ---------------------------------------------------------------------- registry
@dataclass
class AttackEntry:
    name: str
    factory: Callable[..., Any]
    kind: str  # "obs" | "action"
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)


ATTACKS: dict[str, AttackEntry] = {}


def register_attack(
    name: str, kind: str = "obs", description: str = "", **options: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        doc = (f.__doc__ or "").strip()
        summary = description or (doc.splitlines()[0] if doc else name)
        ATTACKS[name] = AttackEntry(name, f, kind, summary, options)
        return f

    return deco
