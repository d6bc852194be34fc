"""Gaussian Neyman-Pearson transforms and the DKW/Massart band.

Threat model shared by every certificate in :mod:`certrl.certificates` (Kumar, Levine & Feizi,
"Policy Smoothing for Provably Robust Reinforcement Learning", ICLR 2022):

* the *smoothed* policy acts, at every step ``t``, on ``o_t + eps_t + delta_t`` with
  ``delta_t ~ N(0, sigma^2 I)`` drawn fresh and independently of everything else;
* the adversary chooses ``eps_t`` *adaptively* (as a possibly randomised function of all past
  observations, states, actions and perturbations) under the **total episode budget**
  ``sqrt(sum_t ||eps_t||_2^2) <= B``;
* the adaptive Neyman-Pearson lemma (Kumar et al. 2022, Theorem 1 / Lemma 2) gives, for any
  event ``E`` of the episode (e.g. ``{R >= v}``)::

      P_adv(E) >= Phi(Phi^{-1}(P_clean(E)) - B / sigma).

The functions here are the deterministic (no sampling) part of that statement and the uniform
confidence band used to estimate ``P_clean`` from samples.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri

__all__ = ["dkw_epsilon", "np_lower_probability", "np_required_probability"]


def _check_sigma(sigma: float) -> float:
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite positive number, got {sigma!r}")
    return sigma


def _check_budgets(budgets: ArrayLike) -> np.ndarray:
    b = np.asarray(budgets, dtype=float)
    if b.size and not (np.all(np.isfinite(b)) and np.all(b >= 0)):
        raise ValueError("budgets must be finite and non-negative")
    return b


def dkw_epsilon(m: int, alpha: float, one_sided: bool = True) -> float:
    """Half-width ``eps`` of the Dvoretzky-Kiefer-Wolfowitz band for ``m`` i.i.d. samples.

    Guarantee: for i.i.d. samples from *any* distribution (atoms allowed) with CDF ``F`` and
    empirical CDF ``F_m``,

    * ``one_sided=True`` (default): ``P(sup_x (F(x) - F_m(x)) > eps) <= alpha`` with
      ``eps = sqrt(ln(1/alpha) / (2m))`` (Massart 1990, valid when ``alpha <= 1/2``). The same
      holds for the mirrored side and for left limits, so the empirical *survival*
      ``S_m(v) = #{R_i >= v}/m`` satisfies ``P(R >= v) >= S_m(v) - eps`` for all ``v``
      simultaneously with probability at least ``1 - alpha``.
    * ``one_sided=False``: ``P(sup_x |F(x) - F_m(x)| > eps) <= alpha`` with
      ``eps = sqrt(ln(2/alpha) / (2m))`` (Massart's tight constant 2). This is the band used in
      the reference code of Kumar et al. (``dkw_cohen``: ``sqrt(log(2/alpha)/(2n))``).

    Args:
        m: number of i.i.d. samples (``>= 1``).
        alpha: failure probability, ``0 < alpha < 1`` (``<= 1/2`` when one-sided).
        one_sided: one- or two-sided band.

    Returns:
        ``eps > 0``.
    """
    if int(m) != m or m < 1:
        raise ValueError(f"m must be a positive integer, got {m!r}")
    alpha = float(alpha)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if one_sided:
        if alpha > 0.5:
            raise ValueError("the one-sided Massart bound requires alpha <= 1/2")
        return math.sqrt(math.log(1.0 / alpha) / (2.0 * m))
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * m))


def np_lower_probability(p_clean: ArrayLike, budget: ArrayLike, sigma: float) -> np.ndarray:
    """Worst-case attacked probability ``Phi(Phi^{-1}(p_clean) - budget / sigma)``.

    Guarantee (deterministic, Kumar et al. 2022, adaptive Neyman-Pearson lemma, Theorem 1): if
    ``p_clean`` is a lower bound on the probability of an episode event under the smoothed
    policy without attack, the returned value lower-bounds the probability of the same event
    against every adaptive adversary with total budget ``sqrt(sum_t ||eps_t||^2) <= budget``.
    For a single step this is Cohen et al. (2019), Theorem 1. ``p_clean`` is clipped to
    ``[0, 1]``; ``p_clean = 0`` maps to 0 and ``p_clean = 1`` to 1 for finite budgets.
    ``p_clean`` and ``budget`` broadcast against each other.
    """
    sigma = _check_sigma(sigma)
    p = np.clip(np.asarray(p_clean, dtype=float), 0.0, 1.0)
    b = _check_budgets(budget)
    return ndtr(ndtri(p) - b / sigma)


def np_required_probability(p_target: ArrayLike, budget: ArrayLike, sigma: float) -> np.ndarray:
    """Smallest clean probability that certifies ``p_target`` under attack.

    Inverse of :func:`np_lower_probability` in its first argument:
    ``Phi(Phi^{-1}(p_target) + budget / sigma)``. If ``P_clean(E) >= `` the returned value,
    then ``P_adv(E) >= p_target`` for every adaptive adversary of total budget ``budget``
    (same threat model and theorem as :func:`np_lower_probability`).
    """
    sigma = _check_sigma(sigma)
    p = np.clip(np.asarray(p_target, dtype=float), 0.0, 1.0)
    b = _check_budgets(budget)
    return ndtr(ndtri(p) + b / sigma)
