"""Simultaneous lower confidence bands on the survival function of the return.

Every episode certificate of :mod:`certrl.certificates.returns` needs, from ``m`` i.i.d. clean
returns of the smoothed policy, lower bounds ``L_i`` on ``P_clean(R >= v_i)`` at the distinct
sample values ``v_1 < ... < v_K`` that hold *simultaneously* with probability ``>= 1 - alpha``.
Then ``P_clean(R >= v) >= L_i`` for every ``v <= v_i`` (the survival function is
non-increasing), and the adaptive Neyman-Pearson lemma (Kumar, Levine & Feizi, ICLR 2022,
Theorem 1) turns the band into certificates on the attacked return.

Three bands, all exact in finite samples (no asymptotics) and valid for *any* return
distribution (atoms and ties included):

``dkw``
    ``L = S_m(v) - eps``, ``eps = sqrt(ln(1/alpha) / 2m)`` (one-sided DKW/Massart), the band of
    Kumar et al.'s experiments. Uniform width: tight in the middle of the distribution, loose in
    the tails, where ``S_m`` is near 1 and the truth may be ``1 - 1/m``.
``order``
    Order-statistic (beta) band: for a fixed set ``J`` of ranks, ``U_(j) ~ Beta(j, m - j + 1)``
    gives ``P(R >= X_(j)) >= 1 - Beta(j, m - j + 1).ppf(1 - alpha / |J|)`` for all ``j in J``
    at once (Bonferroni). Width ``~ sqrt(j)/m`` at rank ``j``: far tighter than DKW in the tails
    (at the sample minimum ``1 - ln(|J|/alpha)/m`` instead of ``1 - eps``), looser in the middle.
``hybrid`` (default for continuous returns)
    The pointwise maximum of a DKW band at ``alpha (1 - tail_share)`` and an order band at
    ``alpha tail_share`` over tail ranks (geometric from both ends): both events hold together
    with probability ``>= 1 - alpha`` (union bound), so the maximum is a valid band that is
    close to DKW in the middle and close to the order band in the tails.

Why the tails matter: the expected-return certificate charges every unit of missing
probability below the smallest sample at the return's lower bound ``a`` (``-5000`` on Hopper
with its clip bounds), and the Neyman-Pearson shift amplifies a gap ``1 - L`` near 1 the most.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import beta as beta_dist

from certrl.certificates.neyman_pearson import dkw_epsilon

__all__ = ["BANDS", "SurvivalBand", "survival_band", "tail_ranks"]

BANDS: tuple[str, ...] = ("dkw", "order", "hybrid")

#: Default share of alpha given to the order-statistic tails of the ``hybrid`` band.
TAIL_SHARE = 0.5
#: Ratio between consecutive tail ranks of :func:`tail_ranks`.
TAIL_RATIO = 1.5


@dataclass(frozen=True)
class SurvivalBand:
    """Lower confidence bounds ``lower[i]`` on ``P(R >= values[i])``, all at once.

    ``values`` are the distinct sample values, increasing; ``counts_ge[i] = #{R_j >=
    values[i]}``. On the band's event (probability ``>= 1 - alpha`` over the sample),
    ``P(R >= v) >= lower[i]`` for every ``v <= values[i]`` and every ``i``. ``lower`` is
    non-increasing and in ``[0, 1]``.
    """

    method: str
    alpha: float
    m: int
    values: np.ndarray
    counts_ge: np.ndarray
    lower: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)

    def at(self, v: ArrayLike) -> np.ndarray:
        """The band's bound on ``P(R >= v)`` at arbitrary thresholds ``v``: ``lower[i]`` for the
        first sample value ``values[i] >= v`` (``lower[0]`` below the smallest sample, 0 above
        the largest)."""
        v = np.asarray(v, dtype=float)
        idx = np.searchsorted(self.values, v, side="left")  # first value >= v
        out = np.zeros(v.shape)
        inside = idx < self.values.size
        out[inside] = self.lower[idx[inside]]
        return out

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "alpha": self.alpha, "m": self.m, **self.details}


def tail_ranks(m: int, ratio: float = TAIL_RATIO, upto: float = 0.5) -> np.ndarray:
    """The ranks ``J`` of the ``order`` part of the ``hybrid`` band.

    Geometric from both ends of the sample: ``1, 2, 3, 4, 5, 7, 9, ...`` (consecutive ranks
    until the ratio takes over) up to ``upto * m`` from the bottom, and the mirrored ranks
    ``m + 1 - k`` from the top. Depends on ``m`` only, never on the data, as the Bonferroni
    correction requires.
    """
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    ks: list[int] = []
    k = 1.0
    limit = max(1, int(upto * m))
    while int(k) <= limit:
        ks.append(int(k))
        k = max(k * ratio, int(k) + 1.0)
    low = np.asarray(ks, dtype=int)
    return np.unique(np.concatenate([low, m + 1 - low]))


def _order_lower(sorted_r: np.ndarray, ranks: np.ndarray, level: float) -> np.ndarray:
    """``1 - Beta(j, m - j + 1).ppf(1 - level)`` for each rank ``j`` (1-based, ascending)."""
    m = sorted_r.size
    c = beta_dist.ppf(1.0 - level, ranks, m - ranks + 1)
    return np.clip(1.0 - c, 0.0, 1.0)


def survival_band(
    returns: ArrayLike,
    alpha: float,
    method: str = "hybrid",
    *,
    tail_share: float = TAIL_SHARE,
    ranks: ArrayLike | None = None,
) -> SurvivalBand:
    """A simultaneous lower confidence band on ``P(R >= v)`` from i.i.d. returns.

    Guarantee: with probability at least ``1 - alpha`` over the ``m`` i.i.d. samples (from any
    distribution: no continuity needed), ``P(R >= v) >= band.lower[i]`` for every
    ``v <= band.values[i]``, simultaneously for all ``i``.

    Proof (``order``): let ``Q`` be the quantile function of ``R`` and ``G(x) = P(R < x)``.
    Realise ``R_i = Q(U_i)`` with ``U_i`` i.i.d. uniform; then ``X_(j) = Q(U_(j))`` and
    ``G(Q(u)) <= u``, so ``G(X_(j)) <= U_(j) ~ Beta(j, m - j + 1)``. Hence
    ``P(R >= X_(j)) = 1 - G(X_(j)) >= 1 - c_j`` except with probability ``<= alpha / |J|``
    per rank, where ``c_j`` is the ``1 - alpha/|J|`` quantile of that beta law; Bonferroni over
    ``J``. For a value ``v_i``, any rank ``j`` with ``X_(j) >= v_i`` gives a bound, and the
    best one is kept. (``dkw``): one-sided Massart inequality, see
    :func:`~certrl.certificates.neyman_pearson.dkw_epsilon`. (``hybrid``): union bound over
    the two events, at ``alpha (1 - tail_share)`` and ``alpha tail_share``.

    Args:
        returns: shape ``(m,)`` i.i.d. returns.
        alpha: failure probability of the whole band (``<= 1/2``).
        method: ``"dkw"``, ``"order"`` (Bonferroni over ``ranks``; default every rank of
            :func:`tail_ranks` with ``upto = 1``) or ``"hybrid"``.
        tail_share: ``hybrid``: share of ``alpha`` spent on the order-statistic tails.
        ranks: ranks ``J`` (1-based) of the order part; fixed before seeing the data.

    Returns:
        A :class:`SurvivalBand`.
    """
    alpha = float(alpha)
    if not 0 < alpha <= 0.5:
        raise ValueError(f"alpha must lie in (0, 1/2], got {alpha!r}")
    if method not in BANDS:
        raise ValueError(f"unknown band {method!r}; expected one of {BANDS}")
    if not 0 < tail_share < 1:
        raise ValueError(f"tail_share must lie in (0, 1), got {tail_share!r}")
    r = np.sort(np.asarray(returns, dtype=float).ravel())
    if r.size == 0 or not np.all(np.isfinite(r)):
        raise ValueError("returns must be a non-empty array of finite numbers")
    m = r.size
    values, counts = np.unique(r, return_counts=True)
    n_ge = m - np.concatenate(([0], np.cumsum(counts)[:-1]))
    details: dict[str, Any] = {}

    lower = np.zeros(values.size)
    a_dkw = alpha if method == "dkw" else alpha * (1.0 - tail_share)
    if method in ("dkw", "hybrid"):
        eps = dkw_epsilon(m, a_dkw, one_sided=True)
        lower = np.maximum(lower, n_ge / m - eps)
        details["epsilon"] = eps
        details["alpha_dkw"] = a_dkw
    if method in ("order", "hybrid"):
        if ranks is None:
            j = tail_ranks(m, upto=1.0 if method == "order" else 0.5)
        else:
            j = np.unique(np.asarray(ranks, dtype=int))
            if j.size == 0 or j[0] < 1 or j[-1] > m:
                raise ValueError(f"ranks must lie in 1..{m}")
        a_ord = alpha if method == "order" else alpha * tail_share
        bound_j = _order_lower(r, j, a_ord / j.size)
        # value index of X_(j): the distinct value equal to r[j - 1]
        vidx = np.searchsorted(values, r[j - 1], side="left")
        best = np.zeros(values.size)
        np.maximum.at(best, vidx, bound_j)
        # a bound at X_(j) holds for every v <= X_(j): running max from the top
        best = np.maximum.accumulate(best[::-1])[::-1]
        lower = np.maximum(lower, best)
        details["ranks"] = int(j.size)
        details["alpha_order"] = a_ord
        details["alpha_per_rank"] = a_ord / j.size
    lower = np.clip(lower, 0.0, 1.0)
    lower = np.minimum.accumulate(lower)  # non-increasing (it already is; guards rounding)
    names = {"dkw": "dkw-massart-one-sided", "order": "order-statistic-bonferroni",
             "hybrid": "hybrid-dkw-order-statistic-tails"}
    if method == "hybrid":
        details["tail_share"] = tail_share
    return SurvivalBand(names[method], alpha, m, values, n_ge, lower, details)


def band_short(method: str) -> str:
    """Short CLI name for a band's results-file ``method`` string."""
    for k, v in {"dkw-massart-one-sided": "dkw", "order-statistic-bonferroni": "order",
                 "hybrid-dkw-order-statistic-tails": "hybrid",
                 "clopper-pearson-grid-bonferroni": "cp-grid"}.items():
        if method == v:
            return k
    return method
