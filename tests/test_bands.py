"""Survival bands (DKW, order-statistic, hybrid) and the certificates built on them.

Coverage is checked by Monte Carlo on synthetic problems where the truth is known in closed
form: the band against the true survival function, and the expected-return certificate against
the exact worst case of a one-dimensional Gaussian smoothing problem (a monotone reward of one
Gaussian coordinate, where the adaptive Neyman-Pearson bound is attained by a mean shift).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.special import ndtr, ndtri
from scipy.stats import beta as beta_dist

from certrl.certificates.bands import survival_band, tail_ranks
from certrl.certificates.returns import (
    expected_return_certificate,
    expected_return_from_band,
    survival_certificate,
)

SIGMA = 0.2


def _band_fails(r: np.ndarray, band, true_sf) -> bool:
    """Whether the band claims more than the truth at some sample value."""
    return bool(np.any(band.lower > true_sf(band.values) + 1e-12))


def _rate_bound(alpha: float, trials: int) -> float:
    return alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def test_tail_ranks_fixed_design() -> None:
    j = tail_ranks(10_000, ratio=1.5, upto=0.5)
    assert j[0] == 1 and j[-1] == 10_000
    assert list(j[:7]) == [1, 2, 3, 4, 6, 10, 15]  # consecutive until the ratio takes over
    assert np.all(np.diff(j) > 0) and set(10_001 - j) == set(j)  # mirrored
    assert tail_ranks(1).tolist() == [1]


@pytest.mark.parametrize("method", ["dkw", "order", "hybrid"])
def test_band_coverage_continuous(method: str) -> None:
    """P(band above the true survival somewhere) <= alpha, Uniform(0, 1) returns."""
    rng = np.random.default_rng(3)
    m, alpha, trials = 200, 0.2, 1500
    fails = sum(
        _band_fails(r, survival_band(r, alpha, method), lambda v: 1.0 - v)
        for r in rng.random((trials, m))
    )
    assert fails / trials <= _rate_bound(alpha, trials)


@pytest.mark.parametrize("method", ["dkw", "order", "hybrid"])
def test_band_coverage_with_atoms(method: str) -> None:
    """Valid with ties and atoms: a lattice distribution with a big atom at its maximum."""
    rng = np.random.default_rng(4)
    m, alpha, trials = 150, 0.2, 1500
    support = np.arange(1, 21, dtype=float)
    probs = np.r_[np.full(19, 0.02), 0.62]
    sf = np.cumsum(probs[::-1])[::-1]  # P(R >= support[k])

    def true_sf(v: np.ndarray) -> np.ndarray:
        return sf[np.searchsorted(support, v)]

    fails = 0
    for _ in range(trials):
        r = rng.choice(support, size=m, p=probs)
        fails += _band_fails(r, survival_band(r, alpha, method), true_sf)
    assert fails / trials <= _rate_bound(alpha, trials)


def test_order_band_single_rank_is_exact() -> None:
    """One rank, continuous returns: the beta bound fails with probability exactly alpha (so
    it is neither anti-conservative nor slack), and is wrong by a mile with the ppf's tail
    flipped."""
    rng = np.random.default_rng(5)
    m, alpha, trials, j = 100, 0.2, 6000, 7
    fails = 0
    for r in rng.random((trials, m)):
        band = survival_band(r, alpha, "order", ranks=[j])
        x_j = np.sort(r)[j - 1]
        fails += band.at(np.array([x_j]))[0] > 1.0 - x_j
    sd = math.sqrt(alpha * (1 - alpha) / trials)
    assert abs(fails / trials - alpha) < 4 * sd
    # closed form of the bound at rank j
    band = survival_band(np.linspace(0, 1, m), alpha, "order", ranks=[j])
    assert band.lower[0] == pytest.approx(1 - beta_dist.ppf(1 - alpha, j, m - j + 1), rel=1e-12)


def test_order_band_at_minimum_closed_form() -> None:
    """Below the smallest sample the bound is (alpha/|J|)^(1/m) (all m samples >= v)."""
    m = 1000
    r = np.arange(m, dtype=float)
    band = survival_band(r, 0.05, "order", ranks=[1, 500])
    assert band.lower[0] == pytest.approx((0.05 / 2) ** (1 / m), rel=1e-12)
    assert band.at(np.array([-1e9]))[0] == band.lower[0]
    assert band.at(np.array([1e9]))[0] == 0.0


def test_hybrid_is_max_of_its_parts() -> None:
    r = np.random.default_rng(6).normal(size=5000)
    h = survival_band(r, 0.05, "hybrid", tail_share=0.5)
    d = survival_band(r, 0.025, "dkw")
    o = survival_band(r, 0.025, "order", ranks=tail_ranks(5000))
    np.testing.assert_allclose(h.lower, np.maximum(d.lower, o.lower), atol=1e-15)
    # tails: far above DKW; middle: equal to the DKW part
    nj = tail_ranks(5000).size
    assert h.lower[0] == pytest.approx((0.025 / nj) ** (1 / 5000), rel=1e-12)
    assert h.lower[0] > 0.998 > survival_band(r, 0.05, "dkw").lower[0] + 0.01
    mid = np.searchsorted(h.values, 0.0)
    assert h.lower[mid] == pytest.approx(d.lower[mid])


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    m=st.integers(1, 300),
    method=st.sampled_from(["dkw", "order", "hybrid"]),
    atoms=st.booleans(),
)
def test_band_shape_properties(seed: int, m: int, method: str, atoms: bool) -> None:
    rng = np.random.default_rng(seed)
    r = rng.integers(0, 5, m).astype(float) if atoms else rng.normal(size=m)
    band = survival_band(r, 0.05, method)
    assert np.all((band.lower >= 0) & (band.lower <= 1))
    assert np.all(np.diff(band.lower) <= 0)
    # never above the empirical survival by more than the slack the truth could have
    assert np.all(band.lower <= band.counts_ge / m + 1e-12)


# ------------------------------------------------------------------ certificates on the band
def _shift_problem(mu: float) -> tuple[callable, float]:
    """R = h(Z), Z ~ N(0, 1), h(z) = 100 * Phi(z) + 20 * z clipped to [-50, 150] (monotone).

    Smoothing with noise sigma on a 1-D observation o = 0 gives Z = delta / sigma; an
    adversary with budget B shifts it by -B/sigma, and for a monotone h that shift attains the
    adaptive Neyman-Pearson bound for every event {R >= v}, so the worst attacked mean is
    E[h(Z - mu)], mu = B / sigma, exactly."""

    def h(z: np.ndarray) -> np.ndarray:
        return np.clip(100 * ndtr(z) + 20 * z, -50, 150)

    worst = integrate.quad(lambda z: h(np.array([z - mu]))[0] * math.exp(-z * z / 2)
                           / math.sqrt(2 * math.pi), -12, 12, limit=200)[0]
    return h, worst


@pytest.mark.parametrize("method", ["dkw", "order", "hybrid"])
def test_expected_certificate_coverage_and_tightness(method: str) -> None:
    rng = np.random.default_rng(7)
    m, alpha, trials = 400, 0.2, 400
    budgets = np.array([0.0, 0.1, 0.2, 0.4])
    worst = np.array([_shift_problem(b / SIGMA)[1] for b in budgets])
    h = _shift_problem(0.0)[0]
    certs = np.array([
        expected_return_certificate(h(rng.standard_normal(m)), SIGMA, budgets, alpha, -50.0,
                                    band=method)
        for _ in range(trials)
    ])
    # the whole curve holds at once in >= 1 - alpha of the trials
    fails = np.mean(np.any(certs > worst + 1e-9, axis=1))
    assert fails <= _rate_bound(alpha, trials)
    # and it is not vacuous: the median certificate is within 12% of the range of the truth
    gap = worst - np.median(certs, axis=0)
    assert np.all(gap >= 0) and np.all(gap < 0.12 * 200)


def test_hybrid_tighter_than_dkw_with_a_far_lower_bound() -> None:
    """The Hopper situation: a = -5000 far below every sample. Numbers pinned."""
    r = np.random.default_rng(0).normal(1000, 300, 10_000).clip(0)
    b = [0.0, 0.2, 0.4]
    dkw = expected_return_certificate(r, SIGMA, b, 0.05, -5000.0)
    hyb = expected_return_certificate(r, SIGMA, b, 0.05, -5000.0, band="hybrid")
    np.testing.assert_allclose(dkw, [919.2, 127.3, -1684.0], atol=0.1)
    assert np.all(hyb > dkw + 50)
    assert hyb[1] > 590  # B = 0.2: from 127 to ~600


def test_band_certificate_equals_dkw_formula() -> None:
    r = np.random.default_rng(8).integers(0, 50, 777).astype(float)
    b = np.array([0.0, 0.3, 1.0])
    np.testing.assert_allclose(
        expected_return_from_band(survival_band(r, 0.05, "dkw"), SIGMA, b, -1.0),
        expected_return_certificate(r, SIGMA, b, 0.05, -1.0), rtol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 400),
       method=st.sampled_from(["dkw", "order", "hybrid"]))
def test_band_certificates_monotone_and_in_range(seed: int, m: int, method: str) -> None:
    r = np.random.default_rng(seed).exponential(10.0, m)
    band = survival_band(r, 0.05, method)
    b = np.linspace(0, 2, 9)
    c = expected_return_from_band(band, SIGMA, b, 0.0)
    assert np.all(np.diff(c) <= 1e-9) and np.all(c >= -1e-9) and np.all(c <= r.max() + 1e-9)
    v, p = survival_certificate(band, SIGMA, b)
    assert p.shape == (b.size, v.size)
    assert np.all(np.diff(p, axis=0) <= 1e-12) and np.all(np.diff(p, axis=1) <= 1e-12)
    np.testing.assert_allclose(p[0], band.lower)


def test_survival_certificate_coverage() -> None:
    """P_adv(R >= v) >= p(B, v) for all v and B at once, on the shift problem (closed form
    attacked survival: Phi(h^-1(v) - mu) -> computed by bisection on a grid)."""
    rng = np.random.default_rng(9)
    h = _shift_problem(0.0)[0]
    z = np.linspace(-8, 8, 20001)
    hz = h(z)
    m, alpha, trials, budgets = 300, 0.2, 400, np.array([0.0, 0.1, 0.3])
    fails = 0
    for _ in range(trials):
        band = survival_band(h(rng.standard_normal(m)), alpha, "hybrid")
        v, p = survival_certificate(band, SIGMA, budgets)
        # true attacked survival: P(h(Z - mu) >= v) = P(Z >= z_v + mu), z_v = min{z: h(z) >= v}
        zv = z[np.minimum(np.searchsorted(hz, v, side="left"), z.size - 1)]
        truth = ndtr(-(zv[None, :] + budgets[:, None] / SIGMA)) + 1e-3  # grid slack
        fails += bool(np.any(p > truth))
    assert fails / trials <= _rate_bound(alpha, trials)
    # the certified curve is informative: at B = 0.1 the median survival at the clean median
    band = survival_band(h(rng.standard_normal(10_000)), 0.05, "hybrid")
    _, p = survival_certificate(band, SIGMA, [0.1], thresholds=[h(np.array([0.0]))[0]])
    assert p[0, 0] == pytest.approx(ndtr(ndtri(0.5) - 0.5), abs=0.03)
