"""Tests for certrl.certificates (Kumar et al. 2022 policy-smoothing certificates)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate
from scipy.special import ndtr, ndtri
from scipy.stats import beta as beta_dist
from scipy.stats import binom, norm
from statsmodels.stats.proportion import proportion_confint

import certrl.certificates.returns as returns_mod
from certrl.certificates import (
    bounded_output_certificate,
    certified_radii,
    certified_radius,
    clopper_pearson_lower,
    dkw_epsilon,
    expected_return_certificate,
    expected_return_certificate_cp,
    fraction_certified,
    np_lower_probability,
    np_required_probability,
    percentile_certificate,
)

# --------------------------------------------------------------------------------------------
# DKW band and Neyman-Pearson transform
# --------------------------------------------------------------------------------------------


def test_dkw_epsilon_values() -> None:
    assert dkw_epsilon(1000, 0.05) == pytest.approx(math.sqrt(math.log(20) / 2000), rel=1e-15)
    assert dkw_epsilon(10000, 0.05, one_sided=False) == pytest.approx(
        math.sqrt(math.log(40) / 20000), rel=1e-15
    )
    assert dkw_epsilon(1000, 0.05) < dkw_epsilon(1000, 0.05, one_sided=False)
    for bad in [(0, 0.05), (10, 0.0), (10, 1.0), (10, 0.6)]:
        with pytest.raises(ValueError):
            dkw_epsilon(*bad)


def test_dkw_one_sided_band_coverage() -> None:
    """P(sup_v (S_m(v) - S(v)) > eps) <= alpha for Uniform(0,1) (near-tight case)."""
    rng = np.random.default_rng(1)
    m, alpha, trials = 50, 0.1, 4000
    eps = dkw_epsilon(m, alpha)
    x = np.sort(rng.random((trials, m)), axis=1)
    # survival S_m(x_(j)) = (m - j + 1)/m, true S(x_(j)) = 1 - x_(j); sup attained at atoms
    j = np.arange(1, m + 1)
    dev = np.max((m - j + 1) / m - (1 - x), axis=1)
    rate = np.mean(dev > eps)
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    # the band is not vacuous: with half the width it fails far more often than alpha
    assert np.mean(dev > eps / 2) > 3 * alpha


def test_np_transform_known_values() -> None:
    assert float(np_lower_probability(0.9, 0.5, 0.5)) == pytest.approx(
        norm.cdf(norm.ppf(0.9) - 1.0), abs=1e-15
    )
    assert float(np_lower_probability(0.0, 1.0, 1.0)) == 0.0
    assert float(np_lower_probability(1.0, 1.0, 1.0)) == 1.0
    p = np.linspace(0.01, 0.99, 9)
    req = np_required_probability(p, 0.3, 0.7)
    np.testing.assert_allclose(np_lower_probability(req, 0.3, 0.7), p, atol=1e-12)
    with pytest.raises(ValueError):
        np_lower_probability(0.5, -1.0, 1.0)
    with pytest.raises(ValueError):
        np_lower_probability(0.5, 1.0, 0.0)


# --------------------------------------------------------------------------------------------
# Expected-return certificate
# --------------------------------------------------------------------------------------------


def _band_lowered_mean(r: np.ndarray, lower: float, eps: float) -> float:
    """Closed form at B = 0, written independently (loop over distinct values)."""
    total, prev = lower, lower
    for v in sorted(set(r.tolist())):
        s = np.mean(r >= v)
        total += (v - prev) * max(s - eps, 0.0)
        prev = v
    return total


@pytest.mark.parametrize("k", [0, 1, 37, 300, 999, 1000])
def test_two_point_known_answer(k: int) -> None:
    a, b_val, m, sigma, alpha = 10.0, 510.0, 1000, 0.4, 0.05
    r = np.concatenate([np.full(m - k, a), np.full(k, b_val)])
    np.random.default_rng(k).shuffle(r)
    budgets = np.array([0.0, 0.05, 0.2, 0.4, 1.0, 3.0])
    got = expected_return_certificate(r, sigma, budgets, alpha, lower=a)
    eps = math.sqrt(math.log(1 / alpha) / (2 * m))
    p = max(k / m - eps, 0.0)
    want = [a + (b_val - a) * norm.cdf(norm.ppf(p) - bb / sigma) for bb in budgets]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_all_ties_cartpole_case() -> None:
    r = np.full(10000, 500.0)
    sigma, alpha = 0.2, 0.05
    eps = dkw_epsilon(10000, alpha)
    budgets = [0.0, 0.1, 0.5]
    got = expected_return_certificate(r, sigma, budgets, alpha, lower=0.0, upper=500.0)
    want = [500 * norm.cdf(norm.ppf(1 - eps) - bb / sigma) for bb in budgets]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    # lower below the smallest sample: the first interval (lower, min] is weighted by 1 - eps
    got = expected_return_certificate(r, sigma, budgets, alpha, lower=100.0)
    want = [100 + 400 * norm.cdf(norm.ppf(1 - eps) - bb / sigma) for bb in budgets]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    # two-sided band (reference-code setting) gives the ln(2/alpha) width
    eps2 = math.sqrt(math.log(2 / alpha) / (2 * 10000))
    got2 = expected_return_certificate(r, sigma, 0.0, alpha, 0.0, one_sided=False)
    assert float(got2) == pytest.approx(500 * (1 - eps2), abs=1e-9)


def test_b0_closed_form_and_mean() -> None:
    rng = np.random.default_rng(3)
    r = np.round(rng.gamma(2.0, 30.0, size=777), 0)  # many ties
    alpha = 0.1
    eps = dkw_epsilon(r.size, alpha)
    got = float(expected_return_certificate(r, 0.3, 0.0, alpha, lower=0.0))
    assert got == pytest.approx(_band_lowered_mean(r, 0.0, eps), rel=1e-12)
    assert got <= r.mean()


def test_returns_below_lower_is_error() -> None:
    with pytest.raises(ValueError, match="below"):
        expected_return_certificate(np.array([1.0, -0.5]), 0.2, [0.1], 0.05, lower=0.0)
    with pytest.raises(ValueError, match="above"):
        expected_return_certificate(np.array([1.0, 600.0]), 0.2, [0.1], 0.05, 0.0, upper=500.0)
    with pytest.raises(ValueError):
        expected_return_certificate(np.array([]), 0.2, [0.1], 0.05, 0.0)
    with pytest.raises(ValueError):
        expected_return_certificate(np.array([1.0, np.nan]), 0.2, [0.1], 0.05, 0.0)
    with pytest.raises(ValueError):
        expected_return_certificate(np.array([1.0]), 0.2, [-0.1], 0.05, 0.0)


def test_single_band_for_all_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    r = rng.beta(2, 5, size=2000) * 500
    budgets = np.linspace(0, 1.5, 31)
    joint = expected_return_certificate(r, 0.5, budgets, 0.05, 0.0)
    separate = np.array(
        [float(expected_return_certificate(r, 0.5, bb, 0.05, 0.0)) for bb in budgets]
    )
    np.testing.assert_allclose(joint, separate, rtol=0, atol=1e-12)
    # the joint curve uses eps(m, alpha) itself, not a Bonferroni-split alpha / len(budgets)
    eps = dkw_epsilon(r.size, 0.05)
    assert joint[0] == pytest.approx(_band_lowered_mean(r, 0.0, eps), rel=1e-12)
    # chunked evaluation gives the same numbers
    monkeypatch.setattr(returns_mod, "_CHUNK", 7)
    chunked = expected_return_certificate(r, 0.5, budgets, 0.05, 0.0)
    np.testing.assert_allclose(chunked, joint, rtol=0, atol=1e-9)
    # shape follows budgets
    assert expected_return_certificate(r, 0.5, budgets.reshape(1, -1), 0.05, 0.0).shape == (1, 31)


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.integers(0, 50), min_size=1, max_size=200),
    scale=st.floats(0.1, 20.0),
    lower_gap=st.floats(0.0, 10.0),
    sigma=st.floats(0.05, 5.0),
    budgets=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=12),
    alpha=st.floats(0.001, 0.5),
)
def test_expected_return_properties(
    data: list[int],
    scale: float,
    lower_gap: float,
    sigma: float,
    budgets: list[float],
    alpha: float,
) -> None:
    r = np.asarray(data, dtype=float) * scale
    lower = float(r.min()) - lower_gap
    b = np.sort(np.asarray(budgets))
    cert = expected_return_certificate(r, sigma, b, alpha, lower)
    tol = 1e-9 * (1 + abs(lower) + r.max())
    assert np.all(np.diff(cert) <= tol)  # non-increasing in B
    assert np.all(cert >= lower - tol)
    assert np.all(cert <= r.max() + tol)
    b0 = float(expected_return_certificate(r, sigma, 0.0, alpha, lower))
    eps = dkw_epsilon(r.size, alpha)
    assert b0 == pytest.approx(_band_lowered_mean(r, lower, eps), rel=1e-9, abs=tol)
    assert b0 <= r.mean() + tol
    assert np.all(cert <= b0 + tol)


def _true_np_bound_continuous(sf, lo: float, hi: float, sigma: float, budget: float) -> float:
    """lower + int P_adv(R >= v) dv with the exact NP transform of the true survival."""
    val, _ = integrate.quad(
        lambda v: ndtr(ndtri(min(max(sf(v), 0.0), 1.0)) - budget / sigma),
        lo,
        hi,
        limit=200,
        epsabs=1e-10,
    )
    return lo + val


def test_coverage_b0_against_true_mean() -> None:
    rng = np.random.default_rng(5)
    a, b_par, scale, m, alpha, trials = 2.0, 5.0, 500.0, 200, 0.1, 2000
    true_mean = scale * a / (a + b_par)
    fails = 0
    fails_no_band = 0
    for _ in range(trials):
        r = rng.beta(a, b_par, size=m) * scale
        c = float(expected_return_certificate(r, 0.2, 0.0, alpha, 0.0))
        fails += c > true_mean
        fails_no_band += r.mean() > true_mean
    rate = fails / trials
    assert rate <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)
    # sanity: the naive empirical mean violates about half the time
    assert fails_no_band / trials > 0.3


def test_coverage_positive_budgets_continuous() -> None:
    rng = np.random.default_rng(6)
    a, b_par, scale, m, alpha, sigma, trials = 2.0, 5.0, 500.0, 100, 0.2, 0.5, 1500
    budgets = np.array([0.0, 0.1, 0.5, 1.0])

    def sf(v: float) -> float:
        return float(beta_dist.sf(v / scale, a, b_par))

    truth = np.array([_true_np_bound_continuous(sf, 0.0, scale, sigma, bb) for bb in budgets])
    assert np.all(np.diff(truth) < 0)
    fails = 0
    for _ in range(trials):
        r = rng.beta(a, b_par, size=m) * scale
        c = expected_return_certificate(r, sigma, budgets, alpha, 0.0)
        fails += bool(np.any(c > truth))  # simultaneous over budgets
    assert fails / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def test_coverage_positive_budgets_discrete_ties() -> None:
    rng = np.random.default_rng(7)
    support = np.array([0.0, 100.0, 200.0, 300.0, 400.0, 500.0])
    probs = np.array([0.05, 0.05, 0.1, 0.1, 0.2, 0.5])
    m, alpha, sigma, trials = 60, 0.2, 0.3, 2000
    budgets = np.array([0.0, 0.05, 0.3, 0.9])
    surv = probs[::-1].cumsum()[::-1]  # P(R >= support_i)
    widths = np.diff(np.concatenate(([0.0], support)))
    truth = np.array([np.sum(widths * ndtr(ndtri(surv) - bb / sigma)) for bb in budgets])
    assert truth[0] == pytest.approx(np.dot(support, probs))  # B = 0: the true mean
    fails = 0
    for _ in range(trials):
        r = rng.choice(support, size=m, p=probs)
        c = expected_return_certificate(r, sigma, budgets, alpha, 0.0, upper=500.0)
        fails += bool(np.any(c > truth + 1e-12))
    assert fails / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


def test_speed_large_sample() -> None:
    rng = np.random.default_rng(8)
    r = rng.random(100_000) * 500
    budgets = np.linspace(0, 2, 50)
    t0 = time.perf_counter()
    c = expected_return_certificate(r, 0.3, budgets, 0.05, 0.0)
    assert time.perf_counter() - t0 < 1.0
    assert c.shape == (50,)


# --------------------------------------------------------------------------------------------
# Clopper-Pearson grid variant (reference CartPole code)
# --------------------------------------------------------------------------------------------


def test_cp_grid_known_answer() -> None:
    rng = np.random.default_rng(9)
    r = rng.integers(150, 201, size=5000).astype(float)
    r[:3000] = 200.0
    thresholds = np.arange(1, 201)
    sigma, alpha, budgets = 0.2, 0.05, np.array([0.0, 0.1, 0.4])
    got = expected_return_certificate_cp(r, sigma, budgets, alpha, 0.0, thresholds)
    want = []
    for bb in budgets:
        total = 0.0
        for t in thresholds:
            k = int(np.sum(r >= t))
            lo = proportion_confint(k, r.size, alpha=2 * alpha / 200, method="beta")[0]
            lo = 0.0 if np.isnan(lo) else lo
            total += norm.cdf(norm.ppf(lo) - bb / sigma)
        want.append(total)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert got[0] <= r.mean()
    with pytest.raises(ValueError):
        expected_return_certificate_cp(r, sigma, budgets, alpha, 0.0, [5.0, 3.0])


# --------------------------------------------------------------------------------------------
# Percentile certificate
# --------------------------------------------------------------------------------------------


def test_percentile_known_answer() -> None:
    r = np.arange(1.0, 1001.0)
    rng = np.random.default_rng(10)
    rng.shuffle(r)
    # B = 0, median, alpha = 0.05: smallest k with P(Bin(1000, .5) >= k) <= .05 is 527,
    # so the certified median is x_(1000 - 527 + 1) = 474.
    got = percentile_certificate(r, 1.0, 0.0, (0.5,), 0.05, lower=0.0, simultaneous=False)
    assert got == {0.5: 474.0}
    # B > 0 and Bonferroni over three quantiles: brute force over every k
    sigma, budget, alpha, qs = 0.5, 0.2, 0.05, (0.1, 0.25, 0.5)
    got = percentile_certificate(r, sigma, budget, qs, alpha, lower=0.0)
    ks = np.arange(1, 1001)
    for q in qs:
        p_req = norm.cdf(norm.ppf(1 - q) + budget / sigma)
        ok = ks[binom.sf(ks - 1, 1000, p_req) <= alpha / 3]
        assert got[q] == 1000 - ok.min() + 1


def test_percentile_monotone_and_below_empirical() -> None:
    rng = np.random.default_rng(11)
    r = np.round(rng.gamma(3.0, 20.0, size=3000))
    qs = (0.05, 0.1, 0.25, 0.5, 0.75)
    emp = np.quantile(r, qs, method="inverted_cdf")
    prev = None
    for budget in [0.0, 0.01, 0.1, 0.3, 1.0, 3.0]:
        got = percentile_certificate(r, 0.4, budget, qs, 0.05, lower=0.0)
        vals = np.array([got[q] for q in qs])
        assert np.all(vals <= emp)
        assert np.all(vals >= 0.0)
        assert np.all(np.diff(vals) >= 0)  # higher quantiles certify higher values
        if prev is not None:
            assert np.all(vals <= prev)
        prev = vals
    assert np.all(prev == 0.0)  # huge budget: only the trivial bound


def test_percentile_ties_and_trivial() -> None:
    r = np.full(1000, 500.0)
    # p_req^1000 <= 0.05 <=> p_req <= 0.05**(1/1000) ~ 0.997
    got = percentile_certificate(r, 1.0, 0.0, (0.5,), 0.05, lower=0.0)
    assert got == {0.5: 500.0}
    b_edge = norm.ppf(0.05 ** (1 / 1000)) - norm.ppf(0.5)
    assert percentile_certificate(r, 1.0, b_edge * 0.99, (0.5,), 0.05, lower=0.0)[0.5] == 500.0
    assert percentile_certificate(r, 1.0, b_edge * 1.01, (0.5,), 0.05, lower=0.0)[0.5] == 0.0
    with pytest.raises(ValueError):
        percentile_certificate(r, 1.0, 0.0, (1.5,), 0.05, lower=0.0)
    with pytest.raises(ValueError):
        percentile_certificate(r, 1.0, 0.0, (0.5,), 0.05, lower=600.0)


def test_percentile_coverage() -> None:
    """Uniform(0,1) returns: true attacked-quantile bound is v* = 1 - p_req."""
    rng = np.random.default_rng(12)
    m, alpha, sigma, budget, trials = 100, 0.1, 0.5, 0.25, 1500
    qs = (0.1, 0.5)
    truth = {q: 1 - float(np_required_probability(1 - q, budget, sigma)) for q in qs}
    fails = 0
    for _ in range(trials):
        got = percentile_certificate(rng.random(m), sigma, budget, qs, alpha, lower=0.0)
        fails += any(got[q] > truth[q] for q in qs)
    assert fails / trials <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / trials)


# --------------------------------------------------------------------------------------------
# Per-state certificates
# --------------------------------------------------------------------------------------------


def test_clopper_pearson_matches_statsmodels() -> None:
    for n in [1, 10, 100, 1000, 100000]:
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            for alpha in [0.001, 0.05, 0.2]:
                want = proportion_confint(k, n, alpha=2 * alpha, method="beta")[0]
                want = 0.0 if np.isnan(want) else want
                assert clopper_pearson_lower(k, n, alpha) == pytest.approx(want, abs=1e-12)
    ks = np.array([0, 5, 50, 99, 100])
    np.testing.assert_allclose(
        clopper_pearson_lower(ks, 100, 0.01),
        [clopper_pearson_lower(int(k), 100, 0.01) for k in ks],
    )
    with pytest.raises(ValueError):
        clopper_pearson_lower(11, 10, 0.05)


def test_certified_radius_known_answers() -> None:
    n, alpha, sigma = 100_000, 0.001, 0.25
    # k = n: Beta(n, 1) quantile is alpha**(1/n)
    want = sigma * norm.ppf(alpha ** (1 / n))
    assert certified_radius(n, n, sigma, alpha) == pytest.approx(want, rel=1e-9)
    assert want == pytest.approx(0.9528641, abs=1e-6)
    p = proportion_confint(990, 1000, alpha=2 * alpha, method="beta")[0]
    assert certified_radius(990, 1000, 0.5, alpha) == pytest.approx(0.5 * norm.ppf(p), rel=1e-12)
    # abstain
    assert certified_radius(50, 100, sigma, alpha) == 0.0
    assert certified_radius(0, 100, sigma, alpha) == 0.0
    assert certified_radius(56, 100, sigma, alpha) == 0.0  # p_hat > .5 but lower bound is not
    radii = certified_radii(np.array([100, 50, 990, 0]), np.array([100, 100, 1000, 100]), 1.0, 0.01)
    assert radii[1] == 0.0 and radii[3] == 0.0
    assert radii[0] == pytest.approx(norm.ppf(0.01 ** (1 / 100)))
    assert radii[2] == pytest.approx(certified_radius(990, 1000, 1.0, 0.01))


def test_fraction_certified() -> None:
    radii = np.array([0.0, 0.1, 0.5, 1.0])
    assert fraction_certified(radii, 0.0) == 0.75  # abstentions never count
    assert fraction_certified(radii, 0.5) == 0.25  # open ball: R must exceed r
    assert fraction_certified(radii, 0.3, correct=[True, True, False, True]) == 0.25


def test_bounded_output_certificate() -> None:
    m, alpha, sigma = 400, 0.05, 0.5
    s = np.full(m, 1.0)
    radius = np.array([0.0, 0.25, 1.0])
    got = bounded_output_certificate(s, -1.0, 1.0, sigma, radius, alpha)
    p = 1.0 - math.sqrt(math.log(1 / alpha) / (2 * m))
    want = -1.0 + 2.0 * norm.cdf(norm.ppf(p) - radius / sigma)
    np.testing.assert_allclose(got, want, atol=1e-12)
    rng = np.random.default_rng(13)
    s = rng.uniform(-1, 1, size=m)
    got = bounded_output_certificate(s, -1.0, 1.0, sigma, radius, alpha)
    assert got[0] < s.mean() and np.all(np.diff(got) < 0) and np.all(got >= -1.0)
    with pytest.raises(ValueError):
        bounded_output_certificate(np.array([2.0]), -1.0, 1.0, sigma, 0.1, alpha)
