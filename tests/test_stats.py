"""Tests for certrl.stats (rliable-compatible statistics, Agarwal et al. 2021)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

# Import guard: rliable 1.2 imports `arch`, which breaks with pandas>=3 (and arch pulls pandas).
# If the environment was resolved without the `pandas<3` pin these imports fail; keep them here
# so such an install trap shows up as a test failure, not as a runtime surprise.
import rliable.library as rly
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from rliable import metrics as rly_metrics

from certrl.stats import (
    MIN_RUNS_FOR_INTERVALS,
    REFERENCE_SCORES,
    Estimate,
    StatsWarning,
    aggregate,
    interval_estimate,
    interval_estimates,
    iqm_ci,
    mean_ci,
    normalize_scores,
    performance_profile,
    probability_of_improvement,
    probability_of_improvement_ci,
    score_distribution,
    summarize_returns,
)

SHAPES = [(10, 3), (5, 1), (7, 12), (100, 2), (3, 4)]

RLY_POINT = {
    "mean": rly_metrics.aggregate_mean,
    "median": rly_metrics.aggregate_median,
    "iqm": rly_metrics.aggregate_iqm,
    "optimality_gap": rly_metrics.aggregate_optimality_gap,
}


def test_rliable_imports() -> None:
    assert hasattr(rly, "get_interval_estimates")
    assert hasattr(rly_metrics, "aggregate_iqm")


# ------------------------------------------------------------------------------------------
# Point estimates
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("metric", ["mean", "median", "iqm", "optimality_gap"])
def test_point_estimates_match_rliable(shape: tuple[int, int], metric: str) -> None:
    rng = np.random.default_rng(hash((shape, metric)) % 2**32)
    scores = rng.gamma(2.0, 0.5, size=shape)  # skewed, crosses gamma=1
    assert aggregate(scores, metric) == pytest.approx(RLY_POINT[metric](scores), abs=1e-12)
    ties = rng.integers(0, 4, size=shape).astype(float) / 2.0  # many ties
    assert aggregate(ties, metric) == pytest.approx(RLY_POINT[metric](ties), abs=1e-12)


def test_point_estimates_known_values() -> None:
    s = np.array([[0.0, 2.0], [1.0, 4.0], [2.0, 6.0], [3.0, 8.0]])
    assert aggregate(s, "mean") == pytest.approx(3.25)  # (1.5 + 5) / 2
    assert aggregate(s, "median") == pytest.approx(3.25)
    # pooled sorted: 0 1 2 2 3 4 6 8 -> middle half 2 2 3 4
    assert aggregate(s, "IQM") == pytest.approx(2.75)
    # min(s, 1): 0 1 1 1 | 1 1 1 1 -> mean 7/8
    assert aggregate(s, "Optimality Gap") == pytest.approx(1 / 8)
    assert aggregate(s, "optimality_gap", gamma=3.0) == pytest.approx(
        rly_metrics.aggregate_optimality_gap(s, gamma=3.0)
    )
    assert aggregate(s, lambda x: float(x.max())) == 8.0
    assert aggregate(np.arange(8.0), "iqm") == pytest.approx(3.5)  # 1-D = one task
    with pytest.raises(ValueError):
        aggregate(s, "nope")
    with pytest.raises(ValueError):
        aggregate(np.array([[1.0, np.nan]]), "mean")


# ------------------------------------------------------------------------------------------
# Intervals vs rliable
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(10, 3), (20, 5)])
def test_percentile_intervals_match_rliable(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(7 + shape[0])
    scores = rng.gamma(2.0, 0.5, size=shape)
    names = ["mean", "median", "iqm", "optimality_gap"]

    def rly_func(x: np.ndarray) -> np.ndarray:
        return np.array([RLY_POINT[m](x) for m in names])

    np.random.seed(12345)  # rliable's StratifiedBootstrap draws from the global numpy RNG
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        points, cis = rly.get_interval_estimates({"a": scores}, rly_func, reps=5000)
    ours = interval_estimates({"a": scores}, names, n_resamples=20000, seed=3)["a"]
    for i, m in enumerate(names):
        est = ours[m]
        assert est.point == pytest.approx(points["a"][i], abs=1e-12)
        width = cis["a"][1, i] - cis["a"][0, i]
        assert width > 0
        # Monte-Carlo error of a 2.5% bootstrap quantile with 5000 reps is ~1.5% of the width;
        # the worst case observed over 6 rliable seeds was ~3%.
        assert abs(est.low - cis["a"][0, i]) < 0.06 * width, (m, est, cis["a"][:, i])
        assert abs(est.high - cis["a"][1, i]) < 0.06 * width, (m, est, cis["a"][:, i])
        assert est.method == "percentile"


def test_resampling_is_stratified_per_task() -> None:
    # Perfectly anti-correlated tasks: resampling whole rows would keep the mean at 0 exactly;
    # independent per-task resampling (rliable's stratified bootstrap) gives a non-trivial CI.
    x = np.linspace(-1.0, 1.0, 10)
    scores = np.stack([x, -x], axis=1)
    est = interval_estimate(scores, "mean", seed=0)
    assert est.point == pytest.approx(0.0, abs=1e-15)
    # sd of the mean of two independent 10-run bootstrap means ~ std(x)/sqrt(10)/sqrt(2) = 0.14
    assert 0.3 < est.width < 0.8


def test_single_task_bca_matches_scipy_one_sample() -> None:
    x = np.random.default_rng(5).exponential(size=25)
    ours = mean_ci(x, method="bca", n_resamples=3000, seed=11)
    ref = scipy.stats.bootstrap(
        (x,), np.mean, method="BCa", n_resamples=3000, rng=np.random.default_rng(11)
    ).confidence_interval
    assert ours.method == "bca"
    assert ours.low == pytest.approx(ref.low, rel=1e-10)
    assert ours.high == pytest.approx(ref.high, rel=1e-10)
    pct = mean_ci(x, method="percentile", n_resamples=3000, seed=11)
    basic = mean_ci(x, method="basic", n_resamples=3000, seed=11)
    # basic = reflection of percentile about the point estimate (same resamples)
    assert basic.low == pytest.approx(2 * pct.point - pct.high, rel=1e-12)
    assert basic.high == pytest.approx(2 * pct.point - pct.low, rel=1e-12)
    # right-skewed data: BCa shifts the interval up relative to percentile
    assert ours.high > pct.high


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_coverage_of_mean_interval(method: str) -> None:
    rng = np.random.default_rng(2024)
    true_mean, hits, reps = 0.3, 0, 200
    for _ in range(reps):
        scores = rng.normal(true_mean, 1.0, size=(10, 3))
        est = interval_estimate(scores, "mean", n_resamples=500, method=method, seed=rng)
        hits += est.low <= true_mean <= est.high
    coverage = hits / reps  # observed: 0.915 (percentile), 0.91 (bca); n=10 undercovers a bit
    assert 0.88 <= coverage <= 0.99, coverage


def test_interval_width_scales_with_confidence_and_runs() -> None:
    rng = np.random.default_rng(1)
    for n_runs in (10, 160):
        scores = rng.normal(size=(n_runs, 2))
        # bootstrap sd of the mean of task means: sqrt(sum_t var_t(ddof=0) / n) / T
        sd = np.sqrt(np.sum(np.var(scores, axis=0) / n_runs)) / 2
        w95 = interval_estimate(scores, "mean", n_resamples=5000, seed=0).width
        w50 = interval_estimate(
            scores, "mean", n_resamples=5000, seed=0, confidence_level=0.5
        ).width
        assert w95 == pytest.approx(2 * 1.959964 * sd, rel=0.1)
        assert w50 == pytest.approx(2 * 0.674490 * sd, rel=0.1)


def test_seeded_intervals_are_reproducible() -> None:
    scores = np.random.default_rng(0).normal(size=(8, 4))
    a = interval_estimates({"p": scores, "q": scores + 1}, seed=42)
    b = interval_estimates({"p": scores, "q": scores + 1}, seed=42)
    c = interval_estimates({"p": scores, "q": scores + 1}, seed=43)
    assert a == b
    assert a["p"]["iqm"] != c["p"]["iqm"]
    assert a["p"]["iqm"].point == c["p"]["iqm"].point
    g1 = interval_estimate(scores, "iqm", seed=np.random.default_rng(9))
    g2 = interval_estimate(scores, "iqm", seed=9)
    assert g1 == g2
    p1 = performance_profile(scores, np.linspace(-1, 1, 7), seed=5)
    p2 = performance_profile(scores, np.linspace(-1, 1, 7), seed=5)
    for u, v in zip(p1, p2, strict=True):
        np.testing.assert_array_equal(u, v)


def test_estimate_json_and_str() -> None:
    est = iqm_ci(np.arange(20.0), seed=0)
    d = json.loads(json.dumps(est.to_json()))
    assert set(d) == {"point", "low", "high", "confidence_level", "method"}
    assert d["point"] == pytest.approx(9.5)
    assert d["low"] <= d["point"] <= d["high"]
    assert "95% CI" in str(est)
    with pytest.raises(AttributeError):
        est.point = 1.0  # type: ignore[misc]
    summary = summarize_returns(np.arange(20.0), seed=0)
    assert summary["mean"].point == pytest.approx(9.5)
    assert summary["iqm"].point == pytest.approx(9.5)


def test_bca_fallback_on_degenerate_data() -> None:
    scores = np.full((10, 2), 0.7)
    with pytest.warns(StatsWarning, match="falling back"):
        est = interval_estimate(scores, "mean", method="bca", seed=0)
    assert (est.point, est.low, est.high) == pytest.approx((0.7, 0.7, 0.7))
    assert est.method == "percentile"


def test_custom_metric_intervals() -> None:
    scores = np.random.default_rng(3).normal(size=(12, 3))

    def top_run(x: np.ndarray) -> float:
        return float(np.max(x.mean(axis=1)))

    est = interval_estimate(scores, top_run, seed=0)
    assert est.point == pytest.approx(top_run(scores))
    assert est.low < est.point + 1e-12 and est.high <= scores.max()
    out = interval_estimates({"a": scores}, {"top": top_run, "m": "mean"}, seed=0)
    assert set(out["a"]) == {"top", "m"}


# ------------------------------------------------------------------------------------------
# Few runs
# ------------------------------------------------------------------------------------------
def test_few_runs_warn() -> None:
    scores = np.random.default_rng(0).normal(size=(MIN_RUNS_FOR_INTERVALS - 1, 3))
    with pytest.warns(StatsWarning, match="run"):
        interval_estimate(scores, "mean", seed=0)
    with pytest.warns(StatsWarning):
        mean_ci(np.array([1.0, 2.0, 3.0]), seed=0)
    with pytest.warns(StatsWarning):
        performance_profile(scores, [0.0], seed=0)
    with pytest.warns(StatsWarning):
        probability_of_improvement_ci(scores, scores, seed=0)
    with pytest.warns(StatsWarning):
        est = interval_estimate(np.array([[1.0, 2.0]]), "mean")  # one run: no bootstrap
    assert (est.low, est.high, est.method) == (1.5, 1.5, "degenerate")
    with warnings.catch_warnings():
        warnings.simplefilter("error", StatsWarning)
        interval_estimate(np.random.default_rng(0).normal(size=(5, 3)), "mean", seed=0)


# ------------------------------------------------------------------------------------------
# Performance profiles
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(10, 3), (6, 1), (25, 7)])
def test_performance_profile_matches_rliable(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0])
    scores = np.round(rng.gamma(2.0, 0.5, size=shape), 1)  # rounded -> ties at the taus
    taus = np.linspace(0.0, 3.0, 31)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_runs, _ = rly.create_performance_profile({"a": scores}, taus, reps=2)
        ref_tasks, _ = rly.create_performance_profile(
            {"a": scores}, taus, use_score_distribution=False, reps=2
        )
    np.testing.assert_allclose(score_distribution(scores, taus), ref_runs["a"], atol=1e-12)
    np.testing.assert_allclose(
        score_distribution(scores, taus, kind="tasks"), ref_tasks["a"], atol=1e-12
    )
    profile, low, high = performance_profile(scores, taus, seed=0)
    np.testing.assert_allclose(profile, ref_runs["a"], atol=1e-12)
    assert profile.shape == low.shape == high.shape == taus.shape
    assert np.all(np.diff(profile) <= 0)
    assert np.all(np.diff(low) <= 1e-12) and np.all(np.diff(high) <= 1e-12)
    assert np.all(low <= profile + 1e-12) and np.all(profile <= high + 1e-12)
    assert np.all((low >= 0) & (high <= 1))
    assert profile[0] == pytest.approx(np.mean(scores > 0.0))


def test_performance_profile_ci_against_rliable() -> None:
    scores = np.random.default_rng(4).normal(1.0, 0.5, size=(20, 4))
    taus = np.array([0.5, 1.0, 1.5])
    np.random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, ref_ci = rly.create_performance_profile({"a": scores}, taus, reps=4000)
    _, low, high = performance_profile(scores, taus, n_resamples=20000, seed=1)
    # 80 values -> profile on a 1/80 grid; allow two grid steps of Monte-Carlo/quantile slack
    np.testing.assert_allclose(low, ref_ci["a"][0], atol=2 / 80 + 1e-9)
    np.testing.assert_allclose(high, ref_ci["a"][1], atol=2 / 80 + 1e-9)


# ------------------------------------------------------------------------------------------
# Probability of improvement
# ------------------------------------------------------------------------------------------
def test_probability_of_improvement_known_answers() -> None:
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 1, size=(10, 3))
    hi = rng.uniform(2, 3, size=(8, 3))
    assert probability_of_improvement(hi, lo) == 1.0
    assert probability_of_improvement(lo, hi) == 0.0
    assert probability_of_improvement(lo, lo) == 0.5
    assert probability_of_improvement(np.ones((5, 2)), np.ones((7, 2))) == 0.5  # all ties
    est = probability_of_improvement_ci(hi, lo, seed=0)
    assert (est.point, est.low, est.high) == (1.0, 1.0, 1.0)
    # task 1: X wins all pairs, task 2: X loses all pairs -> 0.5
    x = np.column_stack([hi[:, 0], lo[:8, 0]])
    y = np.column_stack([lo[:8, 0], hi[:, 0] + 1])
    assert probability_of_improvement(x, y) == 0.5
    # one pair: x=[1,2], y=[2,3] -> pairs (1,2)L (1,3)L (2,2)T (2,3)L -> 0.5/4
    assert probability_of_improvement([1.0, 2.0], [2.0, 3.0]) == pytest.approx(0.125)


@pytest.mark.parametrize("runs", [(10, 10), (5, 9), (30, 12)])
def test_probability_of_improvement_matches_rliable(runs: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(runs))
    x = np.round(rng.normal(0.3, 1.0, size=(runs[0], 4)), 1)  # ties included
    y = np.round(rng.normal(0.0, 1.0, size=(runs[1], 4)), 1)
    ref = rly_metrics.probability_of_improvement(x, y)
    assert probability_of_improvement(x, y) == pytest.approx(ref, abs=1e-12)
    assert probability_of_improvement(y, x) == pytest.approx(1 - ref, abs=1e-12)


def test_probability_of_improvement_ci_against_rliable() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(0.5, 1.0, size=(10, 3))
    y = rng.normal(0.0, 1.0, size=(12, 3))
    np.random.seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        points, cis = rly.get_interval_estimates(
            {"xy": [x, y]},
            lambda a, b: np.array([rly_metrics.probability_of_improvement(a, b)]),
            reps=2000,
        )
    est = probability_of_improvement_ci(x, y, n_resamples=20000, seed=2)
    assert est.point == pytest.approx(points["xy"][0], abs=1e-12)
    width = cis["xy"][1, 0] - cis["xy"][0, 0]
    assert abs(est.low - cis["xy"][0, 0]) < 0.1 * width
    assert abs(est.high - cis["xy"][1, 0]) < 0.1 * width


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=2, max_dims=2, max_side=6),
        elements=st.integers(-3, 3).map(float),
    ),
    st.integers(1, 6),
)
def test_probability_of_improvement_complement(x: np.ndarray, ny: int) -> None:
    y = np.roll(x, 1, axis=0)[: min(ny, x.shape[0])] + 0.5 * (ny % 2)
    p = probability_of_improvement(x, y)
    assert 0.0 <= p <= 1.0
    assert p + probability_of_improvement(y, x) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------
# Normalization
# ------------------------------------------------------------------------------------------
def test_normalize_scores() -> None:
    assert normalize_scores(3234.3, env_id="Hopper-v5") == pytest.approx(1.0)
    assert normalize_scores(-20.272305, env_id="Hopper-v5") == pytest.approx(0.0)
    assert normalize_scores(12135.0, env_id="HalfCheetah-v5") == pytest.approx(1.0)
    assert normalize_scores(1.629008, env_id="Walker2d-v5") == pytest.approx(0.0)
    assert normalize_scores(3879.7, env_id="Ant-v5") == pytest.approx(1.0)
    assert normalize_scores(500.0, env_id="CartPole-v1") == pytest.approx(1.0)
    r = np.array([[10.0, 20.0], [30.0, 40.0]])
    np.testing.assert_allclose(normalize_scores(r, 10.0, 110.0), [[0.0, 0.1], [0.2, 0.3]])
    # per-task reference values broadcast over the task axis
    np.testing.assert_allclose(
        normalize_scores(r, [0.0, 20.0], [10.0, 40.0]), [[1.0, 0.0], [3.0, 1.0]]
    )
    # explicit arguments override the table
    assert normalize_scores(300.0, reference_score=1000.0, env_id="CartPole-v1") == pytest.approx(
        (300.0 - 22.0) / (1000.0 - 22.0)
    )
    with pytest.raises(KeyError):
        normalize_scores(1.0, env_id="NoSuchEnv-v0")
    with pytest.raises(ValueError):
        normalize_scores(1.0, 2.0, 2.0)
    expected = {
        "Hopper-v5",
        "Walker2d-v5",
        "HalfCheetah-v5",
        "Ant-v5",
        "Humanoid-v5",
        "Swimmer-v5",
        "InvertedPendulum-v5",
        "CartPole-v1",
        "Pendulum-v1",
        "MountainCar-v0",
        "MountainCarContinuous-v0",
    }
    assert expected <= set(REFERENCE_SCORES)
    for ref in REFERENCE_SCORES.values():
        assert ref.reference > ref.random and ref.source


def test_estimate_dataclass_defaults() -> None:
    e = Estimate(1.0, 0.5, 1.5)
    assert e.width == 1.0 and e.method == "percentile" and e.confidence_level == 0.95
