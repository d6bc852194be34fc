"""Episode-return certificates for policy smoothing (Kumar, Levine & Feizi, ICLR 2022).

Setting (common to every function in this module):

* ``returns`` are the total rewards of ``m`` **clean** (unattacked) episodes of the *smoothed*
  policy (Gaussian noise ``N(0, sigma^2 I)`` added to every observation), i.i.d. across
  episodes and independent of any choice made in the call (budgets, quantiles, thresholds);
* every return, clean or attacked, is ``>= lower`` (a known lower bound on the return, e.g. 0
  for CartPole, ``horizon * min_reward`` in general). A sample below ``lower`` is a caller bug
  and raises :class:`ValueError`;
* threat model: an adaptive adversary perturbs the observations before the smoothing noise is
  added, ``o_t + eps_t``, with total budget ``sqrt(sum_t ||eps_t||_2^2) <= B`` over the episode
  (see :mod:`certrl.certificates.neyman_pearson`).

All of them apply the adaptive Neyman-Pearson lemma (Kumar et al. 2022, Theorem 1) to the events
``{R >= v}`` and turn sample frequencies into confidence bounds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri
from scipy.stats import binom

from certrl.certificates.bands import SurvivalBand, survival_band
from certrl.certificates.neyman_pearson import (
    _check_budgets,
    _check_sigma,
    dkw_epsilon,
    np_required_probability,
)
from certrl.certificates.per_state import clopper_pearson_lower

__all__ = [
    "expected_return_certificate",
    "expected_return_certificate_cp",
    "expected_return_from_band",
    "percentile_certificate",
    "survival_certificate",
]

# Number of (distinct value x budget) Gaussian-CDF evaluations done at once.
_CHUNK = 1 << 21


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    return alpha


def _check_returns(returns: ArrayLike, lower: float, upper: float | None) -> np.ndarray:
    r = np.asarray(returns, dtype=float)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"returns must be a non-empty 1-D array, got shape {r.shape}")
    if not np.all(np.isfinite(r)):
        raise ValueError("returns must be finite")
    lower = float(lower)
    if not math.isfinite(lower):
        raise ValueError(f"lower must be finite, got {lower!r}")
    r_min = float(r.min())
    if r_min < lower:
        raise ValueError(
            f"a return ({r_min!r}) is below the declared lower bound {lower!r}; "
            "the certificate requires every return to be >= lower"
        )
    if upper is not None:
        upper = float(upper)
        if not upper >= lower:
            raise ValueError(f"upper ({upper!r}) must be >= lower ({lower!r})")
        r_max = float(r.max())
        if r_max > upper:
            raise ValueError(f"a return ({r_max!r}) is above the declared upper bound {upper!r}")
    return r


def _weighted_np_sum(
    widths: np.ndarray, p: np.ndarray, budgets: np.ndarray, sigma: float
) -> np.ndarray:
    """``sum_i widths_i * Phi(Phi^{-1}(p_i) - B / sigma)`` for every ``B`` in ``budgets``."""
    keep = (widths > 0) & (p > 0)
    w, z = widths[keep], ndtri(p[keep])
    shifts = budgets.ravel() / sigma
    out = np.zeros(shifts.size)
    if w.size and shifts.size:
        step = max(1, _CHUNK // w.size)
        for start in range(0, shifts.size, step):
            block = shifts[start : start + step]
            out[start : start + step] = w @ ndtr(z[:, None] - block[None, :])
    return out.reshape(budgets.shape)


def expected_return_certificate(
    returns: ArrayLike,
    sigma: float,
    budgets: ArrayLike,
    alpha: float,
    lower: float,
    upper: float | None = None,
    *,
    one_sided: bool = True,
    band: str = "dkw",
) -> np.ndarray:
    """Certified lower bounds on the expected return under attack, one per budget.

    Implements Kumar et al. (2022), Section 5 / Theorem 2 (expected-reward certificate built from
    the CDF of the return) with the Dvoretzky-Kiefer-Wolfowitz band of their experiments.
    With ``v_1 < ... < v_K`` the distinct sample values, ``v_0 = lower``, the empirical survival
    ``S_m(v) = #{R_i >= v} / m`` and ``eps = dkw_epsilon(m, alpha, one_sided)``::

        bound(B) = lower + sum_i (v_i - v_{i-1}) * Phi(Phi^{-1}(max(S_m(v_i) - eps, 0)) - B/sigma)

    Guarantee: with probability at least ``1 - alpha`` over the ``m`` sampled clean episodes,
    **simultaneously for every budget** in ``budgets`` (indeed for every ``B >= 0``: a single
    band is used and the map is monotone), ``E[R_adv] >= bound(B)`` for every adaptive adversary
    with total budget ``sqrt(sum_t ||eps_t||_2^2) <= B`` against the smoothed policy with noise
    level ``sigma``.

    Proof sketch: on the band event ``P_clean(R >= v) >= S_m(v) - eps`` for all ``v``. For
    ``v in (v_{i-1}, v_i]`` ``P_adv(R >= v) >= P_adv(R >= v_i) >= Phi(Phi^{-1}(P_clean(R >= v_i))
    - B/sigma)`` (adaptive NP lemma), and ``E[R_adv] = lower + int_lower^inf P_adv(R >= v) dv``;
    dropping the (non-negative) mass above ``v_K`` only lowers the bound.

    Assumptions: returns i.i.d. from clean episodes of the smoothed policy, every return
    ``>= lower`` (clean and attacked), noise and budget measured in the same observation space.
    Ties are handled exactly (``S_m`` counts ``>=``), so a sample that is all 500 gives
    ``500 * Phi(Phi^{-1}(1 - eps) - B/sigma)`` when ``lower = 0``.

    Properties: non-increasing in ``B``; always in ``[lower, max(returns)]``; at ``B = 0`` it is
    the band-lowered empirical mean ``lower + sum_i (v_i - v_{i-1}) max(S_m(v_i) - eps, 0)``,
    which is ``<=`` the empirical mean.

    Args:
        returns: shape ``(m,)`` clean episode returns of the smoothed policy.
        sigma: smoothing noise standard deviation (``> 0``).
        budgets: total-episode l2 budgets ``B >= 0`` (scalar or array).
        alpha: failure probability of the whole curve (``<= 1/2`` when ``one_sided``).
        lower: known lower bound on every return.
        upper: optional known upper bound; only used to validate ``returns`` (mass above the
            largest sample contributes nothing to a lower bound).
        one_sided: ``True`` (default) uses the one-sided Massart band
            ``sqrt(ln(1/alpha)/(2m))`` (all that a lower bound needs); ``False`` reproduces the
            two-sided ``sqrt(ln(2/alpha)/(2m))`` band of the reference code.
        band: ``"dkw"`` (default, the formula above), or ``"order"`` / ``"hybrid"``: the
            same integral with ``S_m(v_i) - eps`` replaced by the lower bound of that
            :func:`~certrl.certificates.bands.survival_band` (tight in the tails; same
            guarantee, with the band's event in place of the DKW event). ``one_sided`` only
            applies to ``"dkw"``.

    Returns:
        Array with the shape of ``budgets`` of certified lower bounds on ``E[R_adv]``.
    """
    sigma = _check_sigma(sigma)
    alpha = _check_alpha(alpha)
    b = _check_budgets(budgets)
    r = _check_returns(returns, lower, upper)
    m = r.size
    if band != "dkw":
        return expected_return_from_band(survival_band(r, alpha, band), sigma, b, lower)
    eps = dkw_epsilon(m, alpha, one_sided=one_sided)

    values, counts = np.unique(r, return_counts=True)
    n_ge = m - np.concatenate(([0], np.cumsum(counts)[:-1]))  # #{R_i >= values[i]}
    widths = np.diff(np.concatenate(([float(lower)], values)))
    p = np.maximum(n_ge / m - eps, 0.0)
    return float(lower) + _weighted_np_sum(widths, p, b, sigma)


def expected_return_from_band(
    band: SurvivalBand, sigma: float, budgets: ArrayLike, lower: float
) -> np.ndarray:
    """Certified lower bounds on the attacked expected return from a survival band.

    Kumar et al. (2022), Section 5 (expected reward from the CDF), with any simultaneous band
    ``L_i <= P_clean(R >= v_i)`` (:func:`~certrl.certificates.bands.survival_band`)::

        bound(B) = lower + sum_i (v_i - v_{i-1}) * Phi(Phi^{-1}(L_i) - B/sigma),  v_0 = lower.

    Guarantee: on the band's event (probability ``>= 1 - band.alpha`` over the sampled clean
    episodes), simultaneously for every ``B >= 0``, ``E[R_adv] >= bound(B)`` for every adaptive
    adversary with total budget ``sqrt(sum_t ||eps_t||_2^2) <= B`` against the smoothed policy
    with noise ``sigma``. Same threat model and assumptions as
    :func:`expected_return_certificate` (returns ``>= lower``, clean and attacked).

    Returns:
        Array with the shape of ``budgets``.
    """
    sigma = _check_sigma(sigma)
    b = _check_budgets(budgets)
    lower = float(lower)
    if band.values.size and band.values[0] < lower:
        raise ValueError(f"a return ({band.values[0]!r}) is below the lower bound {lower!r}")
    widths = np.diff(np.concatenate(([lower], band.values)))
    return lower + _weighted_np_sum(widths, band.lower, b, sigma)


def survival_certificate(
    band: SurvivalBand, sigma: float, budgets: ArrayLike, thresholds: ArrayLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Certified survival function of the attacked return: ``P_adv(R >= v) >= p(B, v)``.

    Adaptive Neyman-Pearson lemma (Kumar et al. 2022, Theorem 1) applied to every event
    ``{R >= v}`` of the band: ``p(B, v) = Phi(Phi^{-1}(L(v)) - B/sigma)`` with ``L(v)`` the
    band's bound at ``v`` (:meth:`SurvivalBand.at`). No lower bound on the return is needed.

    Guarantee: on the band's event (probability ``>= 1 - band.alpha`` over the sampled clean
    episodes), simultaneously for every threshold ``v`` and every budget ``B >= 0``,
    ``P_adv(R >= v) >= p(B, v)`` for every adaptive adversary with total l2 budget ``B`` over
    the episode. Non-increasing in ``B`` and in ``v``.

    Args:
        band: a :class:`~certrl.certificates.bands.SurvivalBand` of clean smoothed returns.
        sigma: smoothing noise standard deviation.
        budgets: shape ``(nb,)`` budgets.
        thresholds: shape ``(nv,)`` thresholds (default: the band's sample values).

    Returns:
        ``(thresholds, p)`` with ``p`` of shape ``(nb, nv)``.
    """
    sigma = _check_sigma(sigma)
    b = np.atleast_1d(_check_budgets(budgets)).ravel()
    v = band.values if thresholds is None else np.asarray(thresholds, dtype=float).ravel()
    lo = band.at(v)
    p = ndtr(ndtri(lo)[None, :] - b[:, None] / sigma)
    return v, p


def expected_return_certificate_cp(
    returns: ArrayLike,
    sigma: float,
    budgets: ArrayLike,
    alpha: float,
    lower: float,
    thresholds: ArrayLike,
) -> np.ndarray:
    """Expected-return certificate on a fixed threshold grid with Bonferroni Clopper-Pearson.

    This is the variant the reference code of Kumar et al. (2022) uses for CartPole (integer
    returns): for fixed thresholds ``lower < t_1 < ... < t_K`` (e.g. ``1, ..., 200`` for
    CartPole-v0), ``p_i`` is the one-sided Clopper-Pearson lower bound on ``P_clean(R >= t_i)``
    at level ``alpha / K`` and::

        bound(B) = lower + sum_i (t_i - t_{i-1}) * Phi(Phi^{-1}(p_i) - B/sigma),  t_0 = lower.

    Guarantee: with probability at least ``1 - alpha`` over the ``m`` sampled clean episodes
    (union bound over the ``K`` thresholds), simultaneously for every budget ``B >= 0``,
    ``E[R_adv] >= bound(B)`` for every adaptive adversary of total budget
    ``sqrt(sum_t ||eps_t||_2^2) <= B``. Same assumptions and threat model as
    :func:`expected_return_certificate`; in addition ``thresholds`` must be fixed before seeing
    ``returns`` (choosing them from the sample invalidates the Bonferroni correction). For
    integer returns the grid of all integers in ``(lower, max possible return]`` loses nothing.

    Returns:
        Array with the shape of ``budgets``.
    """
    sigma = _check_sigma(sigma)
    alpha = _check_alpha(alpha)
    b = _check_budgets(budgets)
    r = _check_returns(returns, lower, None)
    t = np.asarray(thresholds, dtype=float)
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)):
        raise ValueError("thresholds must be a non-empty finite 1-D array")
    if np.any(np.diff(t) <= 0) or t[0] <= lower:
        raise ValueError("thresholds must be strictly increasing and > lower")
    m = r.size
    k = m - np.searchsorted(np.sort(r), t, side="left")  # #{R_i >= t_i}
    p = np.asarray(clopper_pearson_lower(k, m, alpha / t.size), dtype=float)
    widths = np.diff(np.concatenate(([float(lower)], t)))
    return float(lower) + _weighted_np_sum(widths, p, b, sigma)


def _min_top_count(m: int, p: float, level: float) -> int:
    """Smallest ``k`` with ``P(Binomial(m, p) >= k) <= level`` (``m + 1`` if none)."""
    k = int(binom.ppf(1.0 - level, m, p)) + 1
    # guard against floating-point slack in ppf: make k exactly minimal
    while k > 1 and binom.sf(k - 2, m, p) <= level:
        k -= 1
    while k <= m and binom.sf(k - 1, m, p) > level:
        k += 1
    return k


def percentile_certificate(
    returns: ArrayLike,
    sigma: float,
    budget: float,
    quantiles: Sequence[float] = (0.1, 0.25, 0.5),
    alpha: float = 0.05,
    *,
    lower: float,
    simultaneous: bool = True,
) -> dict[float, float]:
    """Certified lower bounds on quantiles of the attacked return distribution.

    Implements the percentile form of Kumar et al. (2022) (Section 5, certificate on the
    return CDF): by the adaptive Neyman-Pearson lemma,
    ``P_adv(R >= v) >= Phi(Phi^{-1}(P_clean(R >= v)) - B/sigma)``, so
    ``P_adv(R >= v) >= 1 - q`` whenever ``P_clean(R >= v) >= p_q := Phi(Phi^{-1}(1-q) + B/sigma)``.
    The certified value for ``q`` is the largest order statistic ``v = x_(j)`` for which the
    exact binomial (order-statistic) test gives, at confidence ``1 - alpha_q``,
    ``P_clean(R >= x_(j)) >= p_q``: ``j = m - k + 1`` with ``k`` the smallest count such that
    ``P(Binomial(m, p_q) >= k) <= alpha_q``. If no order statistic qualifies, ``lower`` (always
    valid) is returned.

    Guarantee: with probability at least ``1 - alpha`` over the ``m`` sampled clean episodes,
    simultaneously for all requested quantiles when ``simultaneous=True`` (Bonferroni,
    ``alpha_q = alpha / len(quantiles)``; otherwise ``alpha_q = alpha`` and each quantile is
    separately valid at ``1 - alpha``), every adaptive adversary with total budget
    ``sqrt(sum_t ||eps_t||_2^2) <= budget`` satisfies ``P_adv(R < v_q) <= q``, i.e. ``v_q`` lower
    bounds the attacked ``q``-quantile (at most a fraction ``q`` of attacked episodes return less
    than ``v_q``). Valid for any return distribution (ties and atoms included).

    Assumptions: returns i.i.d. from clean episodes of the smoothed policy; every return
    ``>= lower``.

    Properties: non-increasing in ``budget``; at any budget ``v_q`` is ``<=`` the empirical
    ``q``-quantile ``x_(ceil(q m))`` (``numpy.quantile(..., method="inverted_cdf")``) when
    ``alpha_q <= 1/2``.

    Returns:
        ``{q: certified lower bound}`` for every ``q`` in ``quantiles``.
    """
    sigma = _check_sigma(sigma)
    alpha = _check_alpha(alpha)
    b = float(_check_budgets(budget))
    r = np.sort(_check_returns(returns, lower, None))
    qs = [float(q) for q in quantiles]
    if not qs or not all(0 < q < 1 for q in qs):
        raise ValueError("quantiles must be a non-empty sequence of numbers in (0, 1)")
    level = alpha / len(qs) if simultaneous else alpha
    m = r.size
    out: dict[float, float] = {}
    for q in qs:
        p_req = float(np_required_probability(1.0 - q, b, sigma))
        if p_req >= 1.0:
            out[q] = float(lower)
            continue
        k = _min_top_count(m, p_req, level)
        out[q] = float(r[m - k]) if k <= m else float(lower)
    return out
