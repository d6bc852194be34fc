"""Action attacks: noise, PR-MDP / NR-MDP adversaries (Tessler et al. 2019) and MAS (Lee et al.
2020), as evaluator :class:`~certrl.evaluator.ActionHook` s (``kind="action"`` in the registry).

Threat models. The adversary sees the true state and the agent's action ``a_t`` and changes the
executed action; perturbations are in *raw action units* (the units of the environment's action
space) and the executed action always stays inside the action space's bounds (a perturbed
action is clipped to ``[low, high]``; since ``a_t`` is inside the box this only shrinks every
coordinate of the perturbation, so every norm bound still holds for what is executed).

* ``action-gaussian`` / ``action-uniform`` / ``mas``: per-step ball ``||delta_t||_p <= radius``
  (``norm`` ``l1``, ``l2`` or ``linf``; ``radius`` defaults to the threat model's ``eps``) and,
  with ``eps_bar`` (default: the threat model's), GRAD-style temporal coupling
  ``||delta_t - delta_(t-1)||_p <= eps_bar`` on the adversary's chosen perturbation (before the
  clipping to the bounds, which is the environment's own action clipping; coupling the clipped
  perturbation is infeasible in general: when ``a_t`` sits on a bound the box alone can force
  ``delta_t`` far from ``delta_(t-1)``). ``action-gaussian`` draws ``N(0, std^2 I)`` (``std``
  defaults to ``radius``) and projects it onto the ball; ``action-uniform`` draws uniformly in
  the ball (``linf``: the cube; ``l2``: uniform in the ball; ``l1``: uniform in the cross-polytope,
  ``|E_i|`` normalized by a Gamma(d+1) radius law).
* ``mas`` — Myopic Action-Space attack (Lee, Mirsky et al., "Spatiotemporally constrained action
  space attacks on deep reinforcement learning agents", AAAI 2020): the perturbation in the ball
  that most hurts the agent *now*. Lee et al. minimize the agent's ``Q(s, a + delta)``; certrl
  does so when a critic is given (``critic=sarsa``: the Sarsa ``Q^pi`` of
  :mod:`certrl.attacks.critic`, trained and cached on first use; ``critic_steps`` projected
  gradient steps). Without a critic (default) the myopic objective is the distance from the
  agent's action ("push away"): ``delta`` is the Euclidean projection onto the ball of the
  direction ``v(a) - a`` to the box vertex ``v(a)`` furthest from ``a`` (coordinate ``i`` goes
  to ``low_i`` if ``a_i`` is above the middle of ``[low_i, high_i]``, else to ``high_i``).
* ``action-pr`` — Probabilistic Robust MDP (Tessler, Efroni & Mannor, ICML 2019): with
  probability ``alpha`` (default 0.1) the adversary's action replaces the agent's. Continuous
  actions: the adversary plays ``argmin_a Q(s, a)`` over the box by projected gradient when a
  critic is given, else the furthest vertex ``v(a)`` (push away). Discrete actions: with a
  critic ``argmin_a Q(s, a)``, else (``target=worst``, default) the action the agent likes least
  (lowest logit / Q-value of the agent's own head), or (``target=random``) an action drawn
  uniformly among the *other* actions.
* ``action-nr`` — Noisy Robust MDP (Tessler et al. 2019): ``a = (1 - alpha) a_agent + alpha
  a_adv`` with the same adversary; continuous actions only. ``||delta||_inf <= alpha (high -
  low)`` per coordinate, audited.

Budgets are audited by :meth:`ActionAttackHook.audit` from the per-episode extras these hooks
record (``act_norm_max`` in the attack's norm, ``act_max_step_change``, ``act_replaced``); the
evaluator itself records ``act_l2_total`` and ``act_linf_max`` of what was executed.

Randomness (noise, replacement coin flips) comes from each episode's generator of stream
:data:`STREAM_ACTION_ATTACK` (4), drawn row by row: results do not depend on the batch size.
Options arrive as keyword arguments, possibly as strings from ``--opt key=value``; unknown
options and bad values raise :class:`~certrl.attacks.base.AttackError`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from certrl.attacks.base import (
    AUDIT_SLACK,
    AttackError,
    BudgetViolation,
    ThreatModel,
    register_attack,
)
from certrl.attacks.learned import as_float, as_int, check_options
from certrl.envs import EnvSpec
from certrl.evaluator import ActionHook, EpisodeResult, StepContext
from certrl.policies.base import MIN_ROWS, Policy

STREAM_ACTION_ATTACK = 4
NORMS = ("l1", "l2", "linf")


# ====================================================================== geometry
def lp_norm(x: Tensor, norm: str) -> Tensor:
    """Row norms of ``x [B, d]``."""
    if norm == "linf":
        return x.abs().amax(1)
    if norm == "l1":
        return x.abs().sum(1)
    return x.norm(dim=1)


def project_l1(x: Tensor, radius: float | Tensor) -> Tensor:
    """Euclidean projection of each row onto the l1 ball of ``radius`` (Duchi, Shalev-Shwartz,
    Singer & Chandra, ICML 2008: soft-thresholding at the level found by sorting)."""
    b, d = x.shape
    r = radius if isinstance(radius, Tensor) else torch.full((b,), float(radius), dtype=x.dtype)
    r = r.to(x.dtype)
    a = x.abs()
    inside = a.sum(1) <= r
    u, _ = torch.sort(a, dim=1, descending=True)
    css = u.cumsum(1) - r[:, None]
    k = torch.arange(1, d + 1, dtype=x.dtype)
    cond = u - css / k > 0
    rho = (cond * torch.arange(1, d + 1)).amax(1).clamp_min(1)  # last index where cond holds
    theta = css.gather(1, (rho - 1)[:, None])[:, 0] / rho.to(x.dtype)
    out = torch.sign(x) * torch.clamp(a - theta.clamp_min(0)[:, None], min=0)
    return torch.where(inside[:, None], x, out)


def project_lp(x: Tensor, radius: float | Tensor, norm: str) -> Tensor:
    """Euclidean projection onto the ``norm`` ball (l1, l2, linf) of ``radius`` (float or [B])."""
    if norm == "l1":
        return project_l1(x, radius)
    from certrl.attacks.base import project_ball

    return project_ball(x, radius, norm)


def furthest_vertex(a: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """The vertex of the box ``[low, high]`` furthest from ``a`` (in every l_p norm): each
    coordinate at the bound further away (``high`` on ties)."""
    mid = 0.5 * (low + high)
    return torch.where(a > mid, low.expand_as(a), high.expand_as(a))


def _normal(rngs: list[np.random.Generator], d: int) -> Tensor:
    return torch.as_tensor(np.stack([g.standard_normal(d) for g in rngs]), dtype=torch.float32)


def uniform_lp_ball(rngs: list[np.random.Generator], d: int, radius: float, norm: str) -> Tensor:
    """One point per row uniform in the ``norm`` ball of ``radius``."""
    if norm == "linf":
        u = np.stack([g.random(d) for g in rngs])
        return torch.as_tensor((2 * u - 1) * radius, dtype=torch.float32)
    rows = []
    for g in rngs:
        if norm == "l2":
            z = g.standard_normal(d)
            rows.append(z / max(np.linalg.norm(z), 1e-12) * g.random() ** (1.0 / d) * radius)
        else:  # l1: Laplace direction normalized, radius with density ~ r^(d-1)
            e = g.laplace(size=d)
            rows.append(e / max(np.abs(e).sum(), 1e-12) * g.random() ** (1.0 / d) * radius)
    return torch.as_tensor(np.stack(rows), dtype=torch.float32)


# ====================================================================== hooks
class ActionAttackHook(ActionHook):
    """Common part of the action attacks: bounds, per-slot state, records, audit.

    Subclasses implement :meth:`attack` (the executed action before clipping)."""

    adversarial = True
    rng_stream = STREAM_ACTION_ATTACK
    space = "action"
    name = "action"

    def __init__(self, radius: float | None = None, norm: str = "l2",
                 eps_bar: float | None = None, critic: Any = None) -> None:
        if norm not in NORMS:
            raise AttackError(f"action attack norm must be one of {', '.join(NORMS)}, got {norm!r}")
        for k, v in (("radius", radius), ("eps_bar", eps_bar)):
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise AttackError(f"{k} must be a finite number >= 0, got {v}")
        self.radius = radius
        self.norm = norm
        self.eps_bar = eps_bar
        self.critic = critic  # a _Critic or None
        self._policy: Policy | None = None
        self._low: Tensor | None = None
        self._high: Tensor | None = None
        self._prev: Tensor | None = None
        self._started = np.zeros(0, dtype=bool)
        self._rec: dict[int, dict[str, float]] = {}

    def config(self) -> dict[str, Any]:
        c: dict[str, Any] = {"name": self.name, "space": "action", "units": "raw action units"}
        if self.radius is not None:
            c.update(radius=self.radius, norm=self.norm)
        if self.eps_bar is not None:
            c["eps_bar"] = self.eps_bar
        if self.critic is not None:
            c["critic"] = self.critic.describe()
        return c

    def bind(self, policy: Policy, spec: EnvSpec, n_slots: int) -> None:
        self._policy = policy
        if not policy.discrete:
            low = torch.as_tensor(policy.action_low, dtype=torch.float32)
            high = torch.as_tensor(policy.action_high, dtype=torch.float32)
            if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
                raise AttackError(f"{self.name} needs finite action bounds")
            self._low, self._high = low, high
            self._prev = torch.zeros(n_slots, policy.act_dim)
        self._started = np.zeros(n_slots, dtype=bool)
        self._rec = {}
        if self.critic is not None:
            self.critic.build()

    def reset(self, slots: np.ndarray, rngs: list[np.random.Generator]) -> None:
        for k in slots:
            self._started[int(k)] = False
            self._rec[int(k)] = {"act_norm_max": 0.0, "act_max_step_change": 0.0,
                                 "act_replaced": 0.0, "act_steps": 0.0}
            if self._prev is not None:
                self._prev[int(k)] = 0.0

    def episode_extras(self, slot: int) -> dict[str, Any]:
        rec = self._rec.pop(slot, None)
        if rec is None:
            return {}
        out: dict[str, Any] = {"act_norm_max": rec["act_norm_max"]}
        if self.eps_bar is not None:
            out["act_max_step_change"] = rec["act_max_step_change"]
        return out

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_policy"] = None
        d["_rec"] = {}
        return d

    def audit(self, r: EpisodeResult) -> None:
        """Raise :class:`BudgetViolation` if episode ``r`` broke this attack's budget."""
        m = r.extras.get("act_norm_max")
        if self.radius is not None and m is not None and m > self.radius + AUDIT_SLACK:
            raise BudgetViolation(f"episode {r.index}: action perturbation {self.norm} norm "
                                  f"{m:.8g} exceeds radius={self.radius:g}")
        ch = r.extras.get("act_max_step_change")
        if self.eps_bar is not None and ch is not None and ch > self.eps_bar + AUDIT_SLACK:
            raise BudgetViolation(f"episode {r.index}: ||delta_t - delta_(t-1)|| = {ch:.8g} "
                                  f"exceeds eps_bar={self.eps_bar:g}")

    # ------------------------------------------------------------------ helpers
    def _record(self, slots: np.ndarray, applied: Tensor | None, intended: Tensor | None,
                replaced: np.ndarray | None = None) -> None:
        norms = lp_norm(applied.to(torch.float64), self.norm).numpy() if applied is not None \
            else None
        ch = None
        if intended is not None and self.eps_bar is not None and self._prev is not None:
            ch = lp_norm((intended - self._prev[slots]).to(torch.float64), self.norm).numpy()
        for j, k in enumerate(slots):
            rec = self._rec.setdefault(int(k), {"act_norm_max": 0.0, "act_max_step_change": 0.0,
                                                "act_replaced": 0.0, "act_steps": 0.0})
            if norms is not None:
                rec["act_norm_max"] = max(rec["act_norm_max"], float(norms[j]))
            if ch is not None and self._started[int(k)]:
                rec["act_max_step_change"] = max(rec["act_max_step_change"], float(ch[j]))
            if replaced is not None:
                rec["act_replaced"] += float(replaced[j])
            rec["act_steps"] += 1.0
        if intended is not None and self._prev is not None:
            self._prev[slots] = intended.detach()
        self._started[slots] = True

    def _couple_and_project(self, delta: Tensor, slots: np.ndarray) -> Tensor:
        """Temporal coupling around the previous perturbation, then the ball; if the ball
        projection breaks the coupling, move back along the segment towards the previous
        perturbation (which is in the ball), so both constraints hold."""
        assert self.radius is not None and self._prev is not None
        out = delta
        prev = self._prev[slots]
        started = torch.as_tensor(self._started[slots])
        if self.eps_bar is not None:
            out = torch.where(started[:, None], prev + project_lp(out - prev, self.eps_bar,
                                                                  self.norm), out)
        out = project_lp(out, self.radius, self.norm)
        if self.eps_bar is not None:
            bad = started & (lp_norm(out - prev, self.norm) > self.eps_bar)
            if bool(bad.any()):
                lo = torch.zeros(out.shape[0])
                hi = torch.ones(out.shape[0])
                for _ in range(40):
                    mid = (lo + hi) / 2
                    cand = prev + (out - prev) * mid[:, None]
                    good = lp_norm(cand - prev, self.norm) <= self.eps_bar
                    lo = torch.where(good, mid, lo)
                    hi = torch.where(good, hi, mid)
                out = torch.where(bad[:, None], prev + (out - prev) * lo[:, None], out)
        return out

    def _perturb(self, action: Tensor, delta: Tensor, slots: np.ndarray) -> Tensor:
        """The executed action for a proposed perturbation ``delta``: coupled and projected
        (:meth:`_couple_and_project`), added, clipped to the action bounds, and recorded."""
        delta = self._couple_and_project(delta, slots)
        new = self._clip(action + delta)
        self._record(slots, new - action, delta)
        return new

    def _clip(self, a: Tensor) -> Tensor:
        assert self._low is not None and self._high is not None
        return torch.maximum(torch.minimum(a, self._high), self._low)

    def adversary_action(self, action: Tensor, ctx: StepContext) -> Tensor:
        """The adversary's action: ``argmin_a Q`` with a critic, else push away (continuous:
        the furthest vertex; discrete: the agent's least preferred action)."""
        assert self._policy is not None
        if self.critic is not None:
            return self.critic.argmin(self._policy, ctx.raw_obs, action)
        if self._policy.discrete:
            with torch.no_grad():
                nobs = self._policy.normalize(ctx.raw_obs)
                logits = self._policy.distribution_params(nobs)[0]
            return logits.argmin(-1)
        assert self._low is not None and self._high is not None
        return furthest_vertex(action, self._low, self._high)


class NoiseHook(ActionAttackHook):
    """``action-gaussian`` / ``action-uniform``: random perturbations in the ball."""

    def __init__(self, kind: str, radius: float, norm: str, eps_bar: float | None,
                 std: float | None = None) -> None:
        super().__init__(radius, norm, eps_bar)
        self.kind = kind
        self.name = f"action-{kind}"
        self.std = std

    def config(self) -> dict[str, Any]:
        c = super().config()
        if self.kind == "gaussian":
            c["std"] = self.std if self.std is not None else self.radius
        return c

    def __call__(self, action: Tensor, nobs: Tensor, ctx: StepContext) -> Tensor:
        assert self._policy is not None and self.radius is not None
        if self._policy.discrete:
            raise AttackError(f"{self.name} needs a continuous action space")
        slots = np.asarray(ctx.slots)
        d = action.shape[1]
        if self.kind == "gaussian":
            std = self.radius if self.std is None else self.std
            raw = _normal(ctx.rngs, d) * std
        else:
            raw = uniform_lp_ball(ctx.rngs, d, self.radius, self.norm)
        return self._perturb(action, raw, slots)


class MASHook(ActionAttackHook):
    """``mas``: the myopic worst perturbation in the ball (see the module docstring)."""

    name = "mas"

    def __init__(self, radius: float, norm: str, eps_bar: float | None, critic: Any = None,
                 critic_steps: int = 10) -> None:
        super().__init__(radius, norm, eps_bar, critic)
        self.critic_steps = critic_steps

    def __call__(self, action: Tensor, nobs: Tensor, ctx: StepContext) -> Tensor:
        assert self._policy is not None and self.radius is not None
        if self._policy.discrete:
            raise AttackError("mas needs a continuous action space; use action-pr")
        slots = np.asarray(ctx.slots)
        if self.critic is not None:
            delta = self.critic.descend(self._policy, ctx.raw_obs, action,
                                        lambda d: self._couple_and_project(d, slots),
                                        self.critic_steps, self.radius, self.norm)
        else:
            assert self._low is not None and self._high is not None
            delta = furthest_vertex(action, self._low, self._high) - action
        return self._perturb(action, delta, slots)


class PRHook(ActionAttackHook):
    """``action-pr``: with probability ``alpha`` the adversary's action is executed."""

    name = "action-pr"

    def __init__(self, alpha: float, target: str = "worst", critic: Any = None) -> None:
        super().__init__(None, "linf", None, critic)
        self.alpha = alpha
        self.target = target

    def config(self) -> dict[str, Any]:
        return {**super().config(), "alpha": self.alpha, "target": self.target}

    def episode_extras(self, slot: int) -> dict[str, Any]:
        rec = self._rec.get(slot)
        replaced = {} if rec is None else {"act_replaced": int(rec["act_replaced"]),
                                           "act_steps": int(rec["act_steps"])}
        return {**super().episode_extras(slot), **replaced}

    def __call__(self, action: Tensor, nobs: Tensor, ctx: StepContext) -> Tensor:
        assert self._policy is not None
        slots = np.asarray(ctx.slots)
        coin = np.array([g.random() for g in ctx.rngs]) < self.alpha
        pick = None
        if self._policy.discrete and self.target == "random" and self.critic is None:
            n = self._policy.n_actions
            pick = np.array([g.integers(n - 1) for g in ctx.rngs])  # among the other actions
        if not coin.any():
            self._record(slots, None, None, coin)
            return action
        if pick is not None:
            a = action.numpy()
            adv = torch.as_tensor(pick + (pick >= a), dtype=action.dtype)
        else:
            adv = self.adversary_action(action, ctx).to(action.dtype)
        mask = torch.as_tensor(coin)
        new = torch.where(mask[:, None], adv, action) if action.ndim == 2 else \
            torch.where(mask, adv, action)
        if not self._policy.discrete:
            new = self._clip(new)
            self._record(slots, new - action, None, coin)
        else:
            self._record(slots, None, None, coin)
        return new


class NRHook(ActionAttackHook):
    """``action-nr``: ``a = (1 - alpha) a_agent + alpha a_adv`` (continuous actions)."""

    name = "action-nr"

    def __init__(self, alpha: float, span: float, critic: Any = None) -> None:
        super().__init__(None, "linf", None, critic)
        self.alpha = alpha
        self.span = span  # max_i (high_i - low_i)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "alpha": self.alpha}

    def audit(self, r: EpisodeResult) -> None:
        super().audit(r)
        cap = self.alpha * self.span
        if r.act_linf_max > cap + AUDIT_SLACK:
            raise BudgetViolation(f"episode {r.index}: NR-MDP mixing moved an action by "
                                  f"{r.act_linf_max:.8g} > alpha * (high - low) = {cap:.8g}")

    def __call__(self, action: Tensor, nobs: Tensor, ctx: StepContext) -> Tensor:
        assert self._policy is not None
        if self._policy.discrete:
            raise AttackError("action-nr needs a continuous action space; use action-pr")
        adv = self.adversary_action(action, ctx)
        new = self._clip((1 - self.alpha) * action + self.alpha * adv)
        self._record(np.asarray(ctx.slots), new - action, None)
        return new


# ====================================================================== critic adversary
class _Critic:
    """``Q^pi(s, a)`` of the victim (plain Sarsa, :mod:`certrl.attacks.critic`), in its
    conventions: normalized true state, actions in ``[-1, 1]`` coordinates (one-hot for
    discrete victims). Holds the state dict; the network is rebuilt after unpickling."""

    def __init__(self, state: dict[str, Tensor], info: dict[str, Any]) -> None:
        self.state = state
        self.info = info
        self.q: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"state": self.state, "info": self.info, "q": None}

    def describe(self) -> dict[str, Any]:
        return {"kind": "sarsa", **{k: v for k, v in self.info.items() if k != "scan"}}

    def build(self) -> None:
        if self.q is None:
            from certrl.attacks.critic import load_qnet

            self.q = load_qnet(self.state)

    def _qvals(self, policy: Policy, raw_obs: Tensor, unit_a: Tensor) -> Tensor:
        s = policy.normalize(raw_obs.to(torch.float32))
        n = s.shape[0]
        if n < MIN_ROWS:  # batch-invariant rounding, as Policy does
            pad = MIN_ROWS - n
            s = torch.cat([s, s.new_zeros((pad, s.shape[1]))])
            unit_a = torch.cat([unit_a, unit_a.new_zeros((pad, unit_a.shape[1]))])
            return self.q(s, unit_a)[:n]
        return self.q(s, unit_a)

    @staticmethod
    def _unit(policy: Policy, a: Tensor) -> Tensor:
        return 2.0 * (a - policy._low) / torch.clamp(policy._high - policy._low, min=1e-12) - 1.0

    def argmin(self, policy: Policy, raw_obs: Tensor, action: Tensor, steps: int = 20) -> Tensor:
        """``argmin_a Q(s, a)``: exact over the actions of a discrete victim; for a continuous one
        projected sign descent in ``[-1, 1]^d`` (steps of 0.2) from three starts (the agent's
        action, the furthest vertex, the centre), keeping the best iterate seen per row (so the
        result is never worse than the agent's action or the push-away vertex)."""
        self.build()
        if policy.discrete:
            n = policy.n_actions
            with torch.no_grad():
                qs = torch.stack([
                    self._qvals(policy, raw_obs, torch.nn.functional.one_hot(
                        torch.full((raw_obs.shape[0],), k), n).to(torch.float32))
                    for k in range(n)], 1)
            return qs.argmin(1)
        u0 = self._unit(policy, action.to(torch.float32))
        best = u0
        with torch.no_grad():
            best_q = self._qvals(policy, raw_obs, u0)
        for u in (u0, torch.where(u0 > 0, -1.0, 1.0), torch.zeros_like(u0)):
            for i in range(steps + 1):
                with torch.no_grad():
                    q = self._qvals(policy, raw_obs, u)
                better = q < best_q
                best_q = torch.where(better, q, best_q)
                best = torch.where(better[:, None], u, best)
                if i == steps:
                    break
                v = u.clone().requires_grad_(True)
                with torch.enable_grad():
                    (g,) = torch.autograd.grad(self._qvals(policy, raw_obs, v).sum(), v)
                u = torch.clamp(u - 0.2 * g.sign(), -1.0, 1.0).detach()
        return policy._low + (best + 1.0) * 0.5 * (policy._high - policy._low)

    def descend(self, policy: Policy, raw_obs: Tensor, action: Tensor, project: Any,
                steps: int, radius: float, norm: str) -> Tensor:
        """MAS: minimize ``Q(s, clip(a + delta))`` over the feasible ``delta`` by projected
        gradient steps of size ``2.5 radius / steps`` (sign for linf, normalized otherwise);
        returns the best iterate."""
        self.build()
        low, high = policy._low, policy._high
        delta = torch.zeros_like(action, dtype=torch.float32)
        best = delta.clone()
        with torch.no_grad():
            best_q = self._qvals(policy, raw_obs, self._unit(policy, action))
        size = 2.5 * radius / max(1, steps)
        for _ in range(steps):
            v = delta.clone().requires_grad_(True)
            with torch.enable_grad():
                a = action + v
                a = a + (torch.maximum(torch.minimum(a, high), low) - a).detach()
                (g,) = torch.autograd.grad(
                    self._qvals(policy, raw_obs, self._unit(policy, a)).sum(), v)
            step = -g.sign() if norm == "linf" else -g / lp_norm(g, "l2").clamp_min(1e-12)[:, None]
            delta = project(delta + size * step).detach()
            with torch.no_grad():
                a = torch.maximum(torch.minimum(action + delta, high), low)
                q = self._qvals(policy, raw_obs, self._unit(policy, a))
            better = q < best_q
            best_q = torch.where(better, q, best_q)
            best = torch.where(better[:, None], delta, best)
        return best


def _make_critic(policy: Policy, spec: EnvSpec, options: dict[str, Any]) -> _Critic | None:
    kind = str(options.get("critic", "none")).strip().lower()
    if kind in ("", "none", "false", "0"):
        return None
    if kind != "sarsa":
        raise AttackError(f"critic must be none or sarsa, got {options['critic']!r}")
    from certrl.attacks.critic import build_q_attack

    sarsa_opts: dict[str, Any] = {}
    for k, v in options.items():
        if k.startswith("critic_") and k != "critic_steps":
            sarsa_opts[k[len("critic_"):]] = v
    if "cache_dir" in options:
        sarsa_opts["cache_dir"] = options["cache_dir"]
    # the Q of the victim does not depend on the threat: any eps > 0 trains it
    hook = build_q_attack("critic", ThreatModel(eps=1.0), policy, spec, sarsa_opts)
    assert hook.q_state is not None
    return _Critic(hook.q_state, dict(hook.info))


# ====================================================================== factories
_CRITIC_OPTS = {"critic", "critic_steps", "cache_dir", "critic_samples", "critic_train_steps",
                "critic_n_envs", "critic_seed", "critic_hidden", "critic_gamma", "critic_lr",
                "critic_batch", "critic_collect"}


def _norm(options: dict[str, Any], default: str) -> str:
    v = str(options.get("norm", default)).strip().lower()
    if v not in NORMS:
        raise AttackError(f"attack option norm={v!r}: expected one of {', '.join(NORMS)}")
    return v


def _nonneg(name: str, v: Any) -> float:
    f = as_float(name, v)
    if not (math.isfinite(f) and f >= 0):
        raise AttackError(f"attack option {name}={v!r} must be a finite number >= 0")
    return f


def _radius_opts(threat: ThreatModel, options: dict[str, Any]) -> tuple[float, str, float | None]:
    radius = _nonneg("radius", options.get("radius", threat.eps))
    norm = _norm(options, threat.norm)
    eb = options.get("eps_bar", threat.eps_bar)
    eps_bar = None if eb is None or str(eb).strip().lower() in ("", "none") else _nonneg(
        "eps_bar", eb)
    return radius, norm, eps_bar


def _alpha(options: dict[str, Any]) -> float:
    a = as_float("alpha", options.get("alpha", 0.1))
    if not 0 <= a <= 1:
        raise AttackError(f"attack option alpha={a:g} must be in [0, 1]")
    return a


def _continuous_only(name: str, policy: Policy) -> None:
    if policy.discrete:
        raise AttackError(f"attack {name!r} needs a continuous action space "
                          "(discrete policies: use action-pr)")


@register_attack("action-gaussian", kind="action", continuous_only=True)
def action_gaussian_attack(
    threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any
) -> NoiseHook:
    """Gaussian action noise N(0, std^2) (std = radius = eps), projected onto the ball."""
    check_options("action-gaussian", options, {"radius", "norm", "eps_bar", "std"})
    _continuous_only("action-gaussian", policy)
    radius, norm, eps_bar = _radius_opts(threat, options)
    std = None if options.get("std") is None else _nonneg("std", options["std"])
    return NoiseHook("gaussian", radius, norm, eps_bar, std)


@register_attack("action-uniform", kind="action", continuous_only=True)
def action_uniform_attack(
    threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any
) -> NoiseHook:
    """Uniform action noise in the ball of radius eps (raw action units)."""
    check_options("action-uniform", options, {"radius", "norm", "eps_bar"})
    _continuous_only("action-uniform", policy)
    radius, norm, eps_bar = _radius_opts(threat, options)
    return NoiseHook("uniform", radius, norm, eps_bar)


@register_attack("mas", kind="action", continuous_only=True)
def mas_attack(threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any) -> MASHook:
    """MAS (Lee et al. 2020): myopic worst action perturbation in an l1/l2/linf ball."""
    check_options("mas", options, {"radius", "norm", "eps_bar"} | _CRITIC_OPTS)
    _continuous_only("mas", policy)
    radius, norm, eps_bar = _radius_opts(threat, options)
    steps = as_int("critic_steps", options.get("critic_steps", 10))
    if steps < 1:
        raise AttackError("critic_steps must be >= 1")
    return MASHook(radius, norm, eps_bar, _make_critic(policy, spec, options), steps)


@register_attack("action-pr", kind="action")
def action_pr_attack(threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any) -> PRHook:
    """PR-MDP (Tessler et al. 2019): with probability alpha the adversary's action is taken."""
    check_options("action-pr", options, {"alpha", "target"} | _CRITIC_OPTS)
    target = str(options.get("target", "worst")).strip().lower()
    if target not in ("worst", "random"):
        raise AttackError(f"attack option target={target!r}: expected worst or random")
    if target == "random" and not policy.discrete:
        raise AttackError("target=random is for discrete actions (continuous: the adversary "
                          "plays the furthest action)")
    return PRHook(_alpha(options), target, _make_critic(policy, spec, options))


@register_attack("action-nr", kind="action", continuous_only=True)
def action_nr_attack(threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any) -> NRHook:
    """NR-MDP (Tessler et al. 2019): a = (1 - alpha) a_agent + alpha a_adv."""
    check_options("action-nr", options, {"alpha"} | _CRITIC_OPTS)
    _continuous_only("action-nr", policy)
    span = float(np.max(np.asarray(policy.action_high) - np.asarray(policy.action_low)))
    if not math.isfinite(span):
        raise AttackError("action-nr needs finite action bounds")
    return NRHook(_alpha(options), span, _make_critic(policy, spec, options))
