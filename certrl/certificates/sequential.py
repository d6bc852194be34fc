"""Anytime-valid early stopping for ``certrl certify --fail-under``: a sequential certificate gate.

Question decided: is the *certificate functional* at the gated budget ``B``

    C(B) = a + int_a^b Phi(Phi^{-1}(S(v)) - B/sigma) dv,        S(v) = P_clean(R >= v),

at least the threshold ``t``? ``C(B)`` is what the expected-return certificate of Kumar, Levine &
Feizi (ICLR 2022, Theorem 2) converges to as the number of clean smoothed episodes grows, and it
lower-bounds ``E[R_adv]`` for every adaptive adversary with total l2 budget ``B`` (adaptive
Neyman-Pearson lemma). ``a <= R <= b`` are the known return bounds (clipped returns).

Procedure. Episodes are sampled in rounds on a fixed (data-independent) schedule
``n_1 < n_2 < ... < n_K`` (default geometric: 100, 200, 400, ... up to ``--episodes``). At look
``k`` the first ``n_k`` returns give, with ``eps_k = sqrt(ln(1/alpha_k) / (2 n_k))`` (one-sided
DKW/Massart band at level ``alpha_k``):

* the lower certificate ``L_k`` = :func:`~certrl.certificates.expected_return_certificate` at
  level ``alpha_k``: the NP functional of the lowered survival ``max(S_m - eps_k, 0)``;
* the upper bound ``U_k`` = :func:`expected_return_upper_bound`: the NP functional of the raised
  survival ``min(S_m + eps_k, 1)``, including the mass between the largest sample and ``b``.

Decision: **PASS** as soon as ``L_k >= t``; **FAIL** as soon as ``U_k < t``; otherwise continue.
If the last look still straddles the threshold the result is **UNDECIDED** (the threshold is not
certified with ``n_K`` episodes, but more episodes could certify it): the gate fails (exit 1),
because PASS must be a certificate, and the message says to raise ``--episodes``. We do *not*
fall back to the fixed-``m`` rule at the full ``alpha``: that would spend ``alpha`` a second time
and break the guarantee below.

Error control: **alpha spending over a fixed geometric schedule, with a union bound over the
looks** (not a time-uniform band). The per-look levels ``alpha_k`` satisfy
``sum_k alpha_k <= alpha`` (:func:`alpha_spending`; default ``"uniform"``:
``alpha_k = alpha / K``, Bonferroni over the ``K`` looks, which is possible because ``K`` is known
in advance from ``--episodes``; ``"pi2"``, ``alpha_k = 6 alpha / (pi^2 k^2)``, is valid for an
unbounded number of looks and front-loads ``alpha``). With ``K = 8`` looks (10,000 episodes) the
Bonferroni price is a band ``sqrt(ln(8/alpha) / ln(1/alpha))`` ~ 1.3x wider than a single look
at ``alpha = 0.05``. A time-uniform confidence sequence for the CDF (Howard & Ramdas,
"Sequential estimation of quantiles with applications to A/B-testing and best-arm
identification", Bernoulli 2022; Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021) would allow looking
after every episode; with a handful of looks on a geometric grid the simple union bound is
enough and its validity argument is two lines (below). The one-sided DKW inequality with
Massart's constant (Massart, Ann. Probab. 1990: ``P(sup_v (S_n(v) - S(v)) > eps) <=
exp(-2 n eps^2)`` for ``exp(-2 n eps^2) <= 1/2``, any distribution, atoms included) gives
each look's band.

Guarantees (``R_1, R_2, ...`` i.i.d. clean returns of the smoothed policy in ``[a, b]``):

* P(wrong decision) <= alpha. If ``C(B) < t``, a PASS at look ``k`` needs ``L_k >= t > C(B)``,
  i.e. the lower band at look ``k`` failed (probability <= ``alpha_k``); summing over the looks,
  P(PASS) <= alpha. Symmetrically, if ``C(B) >= t``, a FAIL needs ``U_k < C(B)``, i.e. the upper
  band failed at some look, so P(FAIL) <= alpha. Only one of the two errors is possible for a
  given policy, so each band spends the whole ``alpha_k``.
* The certificate reported at the stopping look ``tau`` (computed at level ``alpha_tau``) is
  valid at ``1 - alpha`` *despite the data-dependent stopping*: the event "some lower band fails
  at some look" has probability <= ``sum_k alpha_k <= alpha``, and outside it every ``L_k``, in
  particular ``L_tau``, is <= ``C(B) <= E[R_adv]``. The same union bound covers the whole curve
  over budgets and the quantile certificates computed at ``alpha_tau``.
* A FAIL is a statement about the certificate, not the policy: "with probability >= 1 - alpha,
  no number of episodes would certify the threshold at this ``sigma`` and ``B``" (the NP bound
  may be loose, so the policy itself could still be robust).

Everything here is a pure function of the returns (numpy/scipy).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri

from certrl.certificates.neyman_pearson import _check_budgets, _check_sigma, dkw_epsilon

__all__ = [
    "ALPHA_SPENDING",
    "Decision",
    "Look",
    "SequentialCertifier",
    "alpha_spending",
    "certificate_functional",
    "expected_return_upper_bound",
    "geometric_schedule",
    "np_bounds_sorted",
]

ALPHA_SPENDING = ("pi2", "harmonic", "uniform")


class Decision(str, enum.Enum):
    """Outcome of a look. ``UNDECIDED`` is ``CONTINUE`` at the last look (the gate fails)."""

    PASS = "PASS"
    FAIL = "FAIL"
    CONTINUE = "CONTINUE"
    UNDECIDED = "UNDECIDED"


def geometric_schedule(max_episodes: int, first: int = 100, factor: float = 2.0) -> list[int]:
    """Look sizes ``first, first*factor, ...`` (rounded up), capped by and ending at
    ``max_episodes``. A single look ``[max_episodes]`` when ``max_episodes <= first``.

    The schedule depends only on its arguments, never on the data (required by the union
    bound in :class:`SequentialCertifier`)."""
    if int(max_episodes) != max_episodes or max_episodes < 1:
        raise ValueError(f"max_episodes must be a positive integer, got {max_episodes!r}")
    if first < 1 or not factor > 1:
        raise ValueError("need first >= 1 and factor > 1")
    out: list[int] = []
    n = float(first)
    while math.ceil(n) < max_episodes:
        k = int(math.ceil(n))
        if not out or k > out[-1]:
            out.append(k)
        n *= factor
    out.append(int(max_episodes))
    return out


def alpha_spending(alpha: float, looks: int, kind: str = "uniform") -> np.ndarray:
    """Per-look levels ``alpha_1..alpha_K`` with ``sum <= alpha``.

    * ``"pi2"``: ``alpha * 6 / (pi^2 k^2)`` (sums to ``alpha`` over infinitely many looks;
      front-loaded: early looks, where clear cases stop, get most of ``alpha``);
    * ``"harmonic"``: ``alpha / (k (k + 1))`` (also sums to ``alpha`` over infinitely many
      looks);
    * ``"uniform"``: ``alpha / K`` (Bonferroni over the ``K`` looks of a fixed schedule).
    """
    alpha = float(alpha)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if int(looks) != looks or looks < 1:
        raise ValueError(f"looks must be a positive integer, got {looks!r}")
    k = np.arange(1, int(looks) + 1, dtype=float)
    if kind == "pi2":
        return alpha * 6.0 / (math.pi**2 * k**2)
    if kind == "harmonic":
        return alpha / (k * (k + 1.0))
    if kind == "uniform":
        return np.full(k.size, alpha / k.size)
    raise ValueError(f"alpha spending must be one of {ALPHA_SPENDING}, got {kind!r}")


def np_bounds_sorted(
    x_sorted: ArrayLike,
    sigma: float,
    budget: float,
    eps: float,
    lower: float,
    upper: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper NP functionals of the DKW band around the empirical survival.

    ``x_sorted`` has shape ``(..., n)``, each row sorted ascending (any number of rows:
    vectorized simulation). With ``x_(0) <= ... <= x_(n-1)``, ``#{R_j >= x_(i)} = n - i`` for
    the first index ``i`` of a tie group and the width ``x_(i) - x_(i-1)`` is zero for the
    others, so ties are exact::

        L = a + sum_i (x_(i) - x_(i-1)) Phi(Phi^{-1}(max((n-i)/n - eps, 0)) - B/sigma)
        U = L with min((n-i)/n + eps, 1) + (b - x_(n-1)) Phi(Phi^{-1}(min(eps, 1)) - B/sigma)

    (``x_(-1) = a``). ``L`` equals :func:`~certrl.certificates.expected_return_certificate` at
    the level whose band half-width is ``eps``. Guarantee (deterministic): on the event
    ``|S(v) - S_n(v)| <= eps`` for all ``v`` (each side separately), ``L <= C(B)`` resp.
    ``C(B) <= U``, with ``C`` the functional of the true survival ``S`` (module docstring).
    ``upper=None`` gives ``U = inf``.
    """
    sigma = _check_sigma(sigma)
    b = float(_check_budgets(budget))
    x = np.asarray(x_sorted, dtype=float)
    n = x.shape[-1]
    if n == 0:
        raise ValueError("need at least one return")
    lower = float(lower)
    widths = np.diff(x, axis=-1, prepend=lower)
    frac = (n - np.arange(n)) / n
    shift = b / sigma
    g_lo = ndtr(ndtri(np.maximum(frac - eps, 0.0)) - shift)
    g_up = ndtr(ndtri(np.minimum(frac + eps, 1.0)) - shift)
    lo = lower + widths @ g_lo
    if upper is None:
        return np.asarray(lo), np.full(np.shape(lo), np.inf)
    tail = (float(upper) - x[..., -1]) * ndtr(ndtri(min(eps, 1.0)) - shift)
    return np.asarray(lo), np.asarray(lower + widths @ g_up + tail)


def expected_return_upper_bound(
    returns: ArrayLike,
    sigma: float,
    budget: float,
    alpha: float,
    lower: float,
    upper: float,
) -> float:
    """Upper confidence bound on the certificate functional ``C(B)`` (module docstring).

    ``U = a + int_a^b Phi(Phi^{-1}(min(S_m(v) + eps, 1)) - B/sigma) dv`` with the one-sided
    DKW/Massart ``eps = sqrt(ln(1/alpha)/(2m))`` and the known upper return bound ``b``
    bounding the mass above the largest sample.

    Guarantee: with probability at least ``1 - alpha`` over the ``m`` i.i.d. clean returns
    (all in ``[lower, upper]``), ``C(B) <= U``; i.e. no sample size can make the expected-return
    certificate at budget ``B`` exceed ``U`` (with that probability). Not a bound on
    ``E[R_adv]`` itself (the NP bound may be loose).
    """
    r = np.sort(np.asarray(returns, dtype=float))
    if r.ndim != 1 or r.size == 0 or not np.all(np.isfinite(r)):
        raise ValueError("returns must be a non-empty finite 1-D array")
    if r[0] < lower or r[-1] > upper:
        raise ValueError(f"returns must lie in [{lower!r}, {upper!r}]")
    eps = dkw_epsilon(r.size, alpha, one_sided=True)
    return float(np_bounds_sorted(r, sigma, budget, eps, lower, upper)[1])


def certificate_functional(
    values: ArrayLike,
    survival: ArrayLike,
    sigma: float,
    budget: float,
    lower: float,
) -> float:
    """The true ``C(B)`` of a distribution given on a grid (for tests and simulations).

    ``values`` ``v_1 < ... < v_K`` (all ``> lower``) and ``survival[i] = P(R >= v_i)`` for a
    distribution whose survival is constant on each ``(v_{i-1}, v_i]`` (discrete distributions
    with atoms at the ``v_i`` exactly; continuous ones approximately, from below, on a fine
    grid): ``C = a + sum_i (v_i - v_{i-1}) Phi(Phi^{-1}(S(v_i)) - B/sigma)``, ``v_0 = lower``.
    """
    v = np.asarray(values, dtype=float)
    s = np.clip(np.asarray(survival, dtype=float), 0.0, 1.0)
    widths = np.diff(v, prepend=float(lower))
    shift = float(budget) / _check_sigma(sigma)
    return float(lower + widths @ ndtr(ndtri(s) - shift))


@dataclass(frozen=True)
class Look:
    """One look of the sequential certifier (all bounds at the gated budget)."""

    k: int
    episodes: int
    alpha_k: float
    eps: float
    lower_bound: float
    upper_bound: float
    decision: Decision

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["decision"] = self.decision.value
        return d


@dataclass
class SequentialCertifier:
    """Anytime-valid PASS/FAIL decision of "certificate at ``budget`` >= ``threshold``".

    Call :meth:`update` with *all* returns so far, once per look, with exactly
    ``schedule[k]`` returns at look ``k`` (the first ``n_k`` episodes, in episode order). The
    guarantees (module docstring): P(wrong decision) <= ``alpha``; the certificate at the
    stopping look, at level :attr:`alpha_used`, is valid at ``1 - alpha``.

    Args:
        sigma: smoothing noise std.
        budget: the gated total-episode l2 budget ``B``.
        alpha: total error probability over all looks.
        lower, upper: known bounds ``a <= R <= b`` on every (clipped) return.
        threshold: the gate ``t``.
        schedule: increasing look sizes (fixed in advance; :func:`geometric_schedule`).
        spending: :func:`alpha_spending` kind.
    """

    sigma: float
    budget: float
    alpha: float
    lower: float
    upper: float
    threshold: float
    schedule: Sequence[int]
    spending: str = "uniform"
    looks: list[Look] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check_sigma(self.sigma)
        _check_budgets(self.budget)
        sched = [int(n) for n in self.schedule]
        if not sched or sched[0] < 1 or np.any(np.diff(sched) <= 0):
            raise ValueError(f"schedule must be strictly increasing positive sizes: {sched}")
        self.schedule = sched
        if not self.upper >= self.lower:
            raise ValueError("need upper >= lower")
        self.alphas = alpha_spending(self.alpha, len(sched), self.spending)

    @property
    def done(self) -> bool:
        return bool(self.looks) and self.looks[-1].decision is not Decision.CONTINUE

    @property
    def decision(self) -> Decision:
        return self.looks[-1].decision if self.looks else Decision.CONTINUE

    @property
    def next_episodes(self) -> int | None:
        """Returns needed for the next look (``None`` once decided)."""
        return None if self.done else self.schedule[len(self.looks)]

    @property
    def alpha_used(self) -> float:
        """Level of the band at the latest look (the certificate's computation level)."""
        return float(self.alphas[max(len(self.looks) - 1, 0)])

    @property
    def alpha_spent(self) -> float:
        """``sum_{j <= k} alpha_j`` over the looks taken (<= ``alpha``)."""
        return float(self.alphas[: len(self.looks)].sum())

    def update(self, returns_so_far: ArrayLike) -> Look:
        """Take the next look; returns it (its ``decision`` is PASS, FAIL, CONTINUE or, at the
        last look, UNDECIDED)."""
        if self.done:
            raise RuntimeError(f"already decided: {self.decision.value}")
        k = len(self.looks)
        r = np.asarray(returns_so_far, dtype=float)
        if r.ndim != 1 or r.size != self.schedule[k]:
            raise ValueError(f"look {k + 1} needs exactly {self.schedule[k]} returns, "
                             f"got {r.size}")
        # sums of clipped per-step rewards may overshoot the bounds by rounding only
        tol = 1e-9 * (abs(self.lower) + abs(self.upper) + 1.0)
        if (not np.all(np.isfinite(r)) or r.min() < self.lower - tol
                or r.max() > self.upper + tol):
            raise ValueError(f"returns must be finite and in [{self.lower}, {self.upper}]")
        r = np.clip(r, self.lower, self.upper)
        a_k = float(self.alphas[k])
        eps = dkw_epsilon(r.size, a_k, one_sided=True)
        lo, up = np_bounds_sorted(np.sort(r), self.sigma, self.budget, eps, self.lower,
                                  self.upper)
        lo_f, up_f = float(lo), float(up)
        if lo_f >= self.threshold:
            dec = Decision.PASS
        elif up_f < self.threshold:
            dec = Decision.FAIL
        elif k + 1 == len(self.schedule):
            dec = Decision.UNDECIDED
        else:
            dec = Decision.CONTINUE
        look = Look(k + 1, int(r.size), a_k, eps, lo_f, up_f, dec)
        self.looks.append(look)
        return look

    def summary(self, fixed_m: int | None = None) -> dict[str, Any]:
        """JSON for ``certificates.sequential``."""
        fixed = int(fixed_m if fixed_m is not None else self.schedule[-1])
        used = self.looks[-1].episodes if self.looks else 0
        return {
            "method": "alpha-spending over looks (union bound), one-sided DKW band per look",
            "decision": self.decision.value,
            "threshold": self.threshold,
            "budget": self.budget,
            "alpha": self.alpha,
            "alpha_spending": self.spending,
            "alpha_schedule": [float(a) for a in self.alphas],
            "alpha_spent": self.alpha_spent,
            "alpha_used": self.alpha_used,
            "schedule": list(self.schedule),
            "looks": [lk.to_json() for lk in self.looks],
            "episodes_used": used,
            "fixed_m": fixed,
            "savings": (1.0 - used / fixed) if fixed else 0.0,
        }
