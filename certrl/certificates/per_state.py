"""Per-state (single-step) randomized-smoothing certificates.

Threat model: one observation ``x`` is perturbed to ``x + eps`` with ``||eps||_2 <= r`` (or
``< r`` where stated); the smoothed policy acts on ``x + eps + delta`` with
``delta ~ N(0, sigma^2 I)``. These are the static certificates of Cohen, Rosenfeld & Kolter,
"Certified Adversarial Robustness via Randomized Smoothing" (ICML 2019) and of Salman et al.
(NeurIPS 2019, Lemma 2) for bounded outputs; Kumar et al. (2022) show that applying them step
by step does *not* certify the episode against an adaptive adversary, for that use
:mod:`certrl.certificates.returns`.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri
from scipy.stats import beta

from certrl.certificates.neyman_pearson import _check_budgets, _check_sigma

__all__ = [
    "bounded_output_certificate",
    "certified_radii",
    "certified_radius",
    "clopper_pearson_lower",
    "fraction_certified",
]


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    return alpha


def clopper_pearson_lower(k: ArrayLike, n: ArrayLike, alpha: float) -> float | np.ndarray:
    """One-sided Clopper-Pearson lower confidence bound on a binomial proportion.

    Guarantee: if ``k ~ Binomial(n, p)``, then ``P(clopper_pearson_lower(k, n, alpha) <= p) >=
    1 - alpha`` for every ``p``. Equals ``Beta(alpha; k, n - k + 1)`` quantile (0 when
    ``k = 0``), i.e. ``statsmodels.stats.proportion.proportion_confint(k, n, alpha=2 * alpha,
    method="beta")[0]`` as used by Cohen et al. (2019) ``_lower_confidence_bound``.

    Vectorized over ``k`` and ``n`` (broadcast); returns a float for scalar inputs.
    """
    alpha = _check_alpha(alpha)
    k_arr = np.asarray(k)
    n_arr = np.asarray(n)
    if not (np.all(k_arr == np.round(k_arr)) and np.all(n_arr == np.round(n_arr))):
        raise ValueError("k and n must be integers")
    if np.any(n_arr < 1) or np.any(k_arr < 0) or np.any(k_arr > n_arr):
        raise ValueError("need 0 <= k <= n and n >= 1")
    k_f = k_arr.astype(float)
    n_f = n_arr.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = beta.ppf(alpha, np.maximum(k_f, 1.0), n_f - k_f + 1.0)
    lo = np.where(k_f == 0, 0.0, lo)
    return float(lo) if lo.ndim == 0 else lo


def certified_radii(counts_top: ArrayLike, n: ArrayLike, sigma: float, alpha: float) -> np.ndarray:
    """Vectorized :func:`certified_radius` over many states (``counts_top`` and ``n`` broadcast).

    Each entry carries the guarantee of :func:`certified_radius` at level ``1 - alpha``
    (individually; use ``alpha / num_states`` for all states simultaneously).
    """
    sigma = _check_sigma(sigma)
    p_lo = np.asarray(clopper_pearson_lower(counts_top, n, alpha), dtype=float)
    with np.errstate(invalid="ignore"):
        radii = sigma * ndtri(p_lo)
    return np.where(p_lo > 0.5, radii, 0.0)


def certified_radius(counts_top: int, n: int, sigma: float, alpha: float) -> float:
    """Cohen et al. (2019) certified l2 radius of the smoothed action at one state.

    ``p_A_lower = clopper_pearson_lower(counts_top, n, alpha)``; the radius is
    ``sigma * Phi^{-1}(p_A_lower)`` if ``p_A_lower > 1/2`` and ``0.0`` (abstain) otherwise.

    Guarantee (Cohen et al. 2019, Theorem 1 and Proposition 2 / ``Smooth.certify``): with
    probability at least ``1 - alpha`` over the ``n`` noise draws, if the returned radius ``R``
    is positive, the smoothed policy's most likely action at ``x + eps`` equals the top action
    ``c_A`` for every ``||eps||_2 < R``.

    Assumptions: ``counts_top`` is the number of the ``n`` i.i.d. noisy evaluations
    ``f(x + delta)``, ``delta ~ N(0, sigma^2 I)``, that chose ``c_A``, and ``c_A`` was selected
    *independently* of these ``n`` draws (e.g. from a separate ``n0`` selection sample).
    Threat model: single-step, static l2 perturbation of one observation.
    """
    return float(certified_radii(counts_top, n, sigma, alpha))


def fraction_certified(radii: ArrayLike, r: float, correct: ArrayLike | None = None) -> float:
    """Fraction of states whose certified radius exceeds ``r`` (strictly).

    Cohen's guarantee covers the open ball ``||eps||_2 < R``, so a state is certified against
    perturbations of norm ``r`` iff ``R > r``; abstentions (``R = 0``) are therefore never
    counted, even at ``r = 0``. If ``correct`` (boolean, same shape) is given, only states whose
    certified action is also correct count (certified accuracy).

    Inherits the per-state guarantees of the radii; it is an empirical fraction over states,
    not itself a confidence bound on a population quantity.
    """
    rad = np.asarray(radii, dtype=float)
    if rad.size == 0:
        raise ValueError("radii must be non-empty")
    ok = rad > float(r)
    if correct is not None:
        c = np.asarray(correct, dtype=bool)
        if c.shape != rad.shape:
            raise ValueError("correct must have the same shape as radii")
        ok &= c
    return float(np.mean(ok))


def bounded_output_certificate(
    samples: ArrayLike,
    low: float,
    high: float,
    sigma: float,
    radius: ArrayLike,
    alpha: float,
) -> np.ndarray:
    """Lower bound on the smoothed expectation of a bounded output under an l2 perturbation.

    For ``f: R^d -> [low, high]`` (e.g. one coordinate of a continuous action) and
    ``g(x) = E[f(x + delta)]``, ``delta ~ N(0, sigma^2 I)``, ``x -> Phi^{-1}((g(x) - low) /
    (high - low))`` is ``1/sigma``-Lipschitz (Salman et al. 2019, Lemma 2; the Neyman-Pearson
    argument of Cohen et al. 2019 applied to ``[0, 1]``-valued functions), hence::

        g(x + eps) >= low + (high - low) * Phi(Phi^{-1}(p) - ||eps||_2 / sigma)

    for any ``p <= (g(x) - low) / (high - low)``. Here ``p`` is the Hoeffding lower confidence
    bound ``(mean(samples) - low) / (high - low) - sqrt(ln(1/alpha) / (2 m))`` clipped to
    ``[0, 1]``.

    Guarantee: with probability at least ``1 - alpha`` over the ``m`` i.i.d. noisy evaluations
    ``samples = f(x + delta_i)``, simultaneously for every radius in ``radius``,
    ``g(x + eps) >=`` the returned value for all ``||eps||_2 <= radius``. The upper side follows
    by applying this to ``-f``. Single-step, static threat model.

    Returns:
        Array with the shape of ``radius``.
    """
    sigma = _check_sigma(sigma)
    alpha = _check_alpha(alpha)
    rad = _check_budgets(radius)
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError("need finite low < high")
    s = np.asarray(samples, dtype=float).ravel()
    if s.size == 0 or not np.all(np.isfinite(s)):
        raise ValueError("samples must be non-empty and finite")
    if s.min() < low or s.max() > high:
        raise ValueError("samples must lie in [low, high]")
    span = high - low
    p = (float(s.mean()) - low) / span - math.sqrt(math.log(1.0 / alpha) / (2.0 * s.size))
    p = min(max(p, 0.0), 1.0)
    return low + span * ndtr(ndtri(p) - rad / sigma)
