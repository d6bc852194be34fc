"""Stratified-bootstrap confidence intervals (Agarwal et al. 2021, rliable-compatible).

All intervals are computed with :func:`scipy.stats.bootstrap`, passing every task's column of a
``(num_runs, num_tasks)`` score matrix as a separate sample: scipy resamples each sample
independently, which is exactly rliable's stratified bootstrap over runs (``task_bootstrap=False``).
Randomness comes only from the ``seed`` argument (an ``int``, a :class:`numpy.random.Generator`
or ``None`` for fresh OS entropy), so results are reproducible, unlike
``rliable.library.get_interval_estimates`` whose resampling uses the global numpy RNG.

Methods: ``"percentile"`` (default, as in rliable), ``"basic"`` and ``"bca"``. The bootstrap
distribution is drawn once; BCa/basic reuse it. If BCa cannot be computed (degenerate data, a
custom metric that cannot handle the jackknife's unequal columns, ...) a :class:`StatsWarning`
is emitted and the percentile interval of the same resamples is returned.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

from certrl.stats.metrics import (
    METRIC_NAMES,
    MetricLike,
    aggregate,
    as_score_matrix,
    canonical_metric_name,
    strata_statistic,
)

__all__ = [
    "MIN_RUNS_FOR_INTERVALS",
    "Estimate",
    "StatsWarning",
    "interval_estimate",
    "interval_estimates",
    "iqm_ci",
    "mean_ci",
    "performance_profile",
    "probability_of_improvement",
    "probability_of_improvement_ci",
    "score_distribution",
    "summarize_returns",
]

#: Below this many runs per task the bootstrap intervals become unreliable (they collapse
#: towards the point estimate); a :class:`StatsWarning` is emitted.
MIN_RUNS_FOR_INTERVALS = 5

METHODS = ("percentile", "basic", "bca")

Seed = int | np.random.Generator | None

# Upper bound on the number of elements of the temporaries built per bootstrap batch.
_MAX_BATCH_ELEMENTS = 20_000_000


class StatsWarning(UserWarning):
    """Statistical caveat: too few runs, BCa fallback, degenerate interval, ..."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a two-sided confidence interval ``[low, high]``.

    Attributes:
        point: the statistic on the observed data.
        low: lower CI endpoint.
        high: upper CI endpoint.
        confidence_level: nominal coverage of ``[low, high]``.
        method: interval method actually used (``"percentile"``, ``"basic"``, ``"bca"``, or
            ``"degenerate"`` when no bootstrap was possible and ``low == high == point``).
    """

    point: float
    low: float
    high: float
    confidence_level: float = 0.95
    method: str = "percentile"

    @property
    def width(self) -> float:
        """``high - low``."""
        return self.high - self.low

    def to_json(self) -> dict[str, float | str]:
        """JSON-serializable dict with keys point, low, high, confidence_level, method."""
        return asdict(self)

    def __str__(self) -> str:
        pct = 100.0 * self.confidence_level
        return f"{self.point:.4g} [{self.low:.4g}, {self.high:.4g}] ({pct:g}% CI)"


# --------------------------------------------------------------------------------------------
# Core
# --------------------------------------------------------------------------------------------
def _as_generator(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _check_options(n_resamples: int, confidence_level: float, method: str) -> str:
    method = method.lower()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"confidence_level must be in (0, 1); got {confidence_level}")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer; got {n_resamples}")
    return method


def _warn_few_runs(min_runs: int, what: str) -> None:
    if min_runs < MIN_RUNS_FOR_INTERVALS:
        warnings.warn(
            f"{what}: only {min_runs} run(s) per task (< {MIN_RUNS_FOR_INTERVALS}); "
            "bootstrap confidence intervals will be unreliable (too narrow)",
            StatsWarning,
            stacklevel=3,
        )


def _bootstrap(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    *,
    n_resamples: int,
    confidence_level: float,
    method: str,
    rng: np.random.Generator,
    cost_per_resample: int,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Stratified bootstrap CI of a (possibly vector-valued) statistic.

    Args:
        samples: 1-D arrays (strata), each with at least two observations.
        statistic: vectorized statistic ``f(*samples, axis=-1)``; inputs ``(..., n_i)``,
            output ``(*out_shape, ...)``.
        cost_per_resample: elements of temporaries per resample, used to pick a batch size.

    Returns:
        ``(low, high, method_used)`` with ``low``/``high`` of shape ``out_shape``.
    """
    batch = max(1, _MAX_BATCH_ELEMENTS // max(1, cost_per_resample))
    common = dict(vectorized=True, axis=-1, confidence_level=confidence_level)
    res = scipy.stats.bootstrap(
        tuple(samples),
        statistic,
        n_resamples=n_resamples,
        method="percentile",
        rng=rng,
        batch=batch if batch < n_resamples else None,
        **common,
    )
    low, high = res.confidence_interval
    if method == "percentile":
        return np.asarray(low), np.asarray(high), "percentile"
    scipy_method = "BCa" if method == "bca" else "basic"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            res2 = scipy.stats.bootstrap(
                tuple(samples),
                statistic,
                n_resamples=0,
                bootstrap_result=res,
                method=scipy_method,
                rng=rng,
                **common,
            )
        low2, high2 = (np.asarray(v) for v in res2.confidence_interval)
        if np.all(np.isfinite(low2)) and np.all(np.isfinite(high2)):
            return low2, high2, method
        reason = "non-finite interval (degenerate bootstrap distribution?)"
    except (ValueError, FloatingPointError, ZeroDivisionError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
    warnings.warn(
        f"{method} interval failed ({reason}); falling back to the percentile interval",
        StatsWarning,
        stacklevel=3,
    )
    return np.asarray(low), np.asarray(high), "percentile"


def _columns(scores: np.ndarray) -> list[np.ndarray]:
    """Task columns of a ``(num_runs, num_tasks)`` matrix, each ``(num_runs,)``."""
    return [np.ascontiguousarray(scores[:, m]) for m in range(scores.shape[1])]


def _metric_label(metric: MetricLike) -> str:
    if callable(metric):
        return getattr(metric, "__name__", repr(metric))
    return canonical_metric_name(metric)


# --------------------------------------------------------------------------------------------
# Aggregate metrics
# --------------------------------------------------------------------------------------------
def interval_estimate(
    scores: ArrayLike,
    metric: MetricLike = "mean",
    *,
    n_resamples: int = 2000,
    confidence_level: float = 0.95,
    method: str = "percentile",
    seed: Seed = None,
    gamma: float = 1.0,
) -> Estimate:
    """Point estimate and stratified-bootstrap CI of one aggregate metric.

    Args:
        scores: ``(num_runs, num_tasks)`` score matrix (``(num_runs,)`` = one task).
        metric: ``"mean"``, ``"median"``, ``"iqm"``, ``"optimality_gap"`` or a callable on a
            ``(num_runs, num_tasks)`` matrix returning a scalar.
        n_resamples: bootstrap resamples.
        confidence_level: nominal two-sided coverage.
        method: ``"percentile"``, ``"basic"`` or ``"bca"``.
        seed: ``int``, ``numpy.random.Generator`` or ``None``.
        gamma: optimality-gap threshold.

    Returns:
        :class:`Estimate`. With fewer than 2 runs no bootstrap is possible and the interval is
        degenerate (``low == high == point``, ``method="degenerate"``).
    """
    method = _check_options(n_resamples, confidence_level, method)
    s = as_score_matrix(scores)
    point = aggregate(s, metric, gamma=gamma)
    n_runs = s.shape[0]
    _warn_few_runs(n_runs, f"interval for {_metric_label(metric)!r}")
    if n_runs < 2:
        return Estimate(point, point, point, confidence_level, "degenerate")
    low, high, used = _bootstrap(
        _columns(s),
        strata_statistic(metric, gamma),
        n_resamples=n_resamples,
        confidence_level=confidence_level,
        method=method,
        rng=_as_generator(seed),
        cost_per_resample=2 * s.size,
    )
    return Estimate(point, float(low), float(high), confidence_level, used)


def interval_estimates(
    score_dict: Mapping[str, ArrayLike],
    metrics: Sequence[MetricLike] | Mapping[str, MetricLike] = METRIC_NAMES,
    *,
    n_resamples: int = 2000,
    confidence_level: float = 0.95,
    method: str = "percentile",
    seed: Seed = None,
    gamma: float = 1.0,
) -> dict[str, dict[str, Estimate]]:
    """Point estimates and stratified-bootstrap CIs for several policies and metrics.

    Args:
        score_dict: ``{policy_name: scores}`` with ``scores`` of shape
            ``(num_runs, num_tasks)``; ``num_runs`` may differ between policies.
        metrics: metric names / callables, or a mapping ``{label: metric}``.
        n_resamples, confidence_level, method, gamma: see :func:`interval_estimate`.
        seed: one generator is created from ``seed`` and consumed in the iteration order of
            ``score_dict`` and ``metrics`` (same seed and order -> identical numbers).

    Returns:
        ``{policy_name: {metric_label: Estimate}}``.
    """
    rng = _as_generator(seed)
    if isinstance(metrics, Mapping):
        labelled = list(metrics.items())
    else:
        labelled = [(_metric_label(m), m) for m in metrics]
    out: dict[str, dict[str, Estimate]] = {}
    for name, scores in score_dict.items():
        out[name] = {
            label: interval_estimate(
                scores,
                metric,
                n_resamples=n_resamples,
                confidence_level=confidence_level,
                method=method,
                seed=rng,
                gamma=gamma,
            )
            for label, metric in labelled
        }
    return out


# --------------------------------------------------------------------------------------------
# Single policy, 1-D episode returns
# --------------------------------------------------------------------------------------------
def mean_ci(
    returns: ArrayLike,
    *,
    n_resamples: int = 2000,
    confidence_level: float = 0.95,
    method: str = "percentile",
    seed: Seed = None,
) -> Estimate:
    """Mean of one policy's episode returns (shape ``(num_episodes,)``) with a bootstrap CI."""
    return interval_estimate(
        _as_1d(returns),
        "mean",
        n_resamples=n_resamples,
        confidence_level=confidence_level,
        method=method,
        seed=seed,
    )


def iqm_ci(
    returns: ArrayLike,
    *,
    n_resamples: int = 2000,
    confidence_level: float = 0.95,
    method: str = "percentile",
    seed: Seed = None,
) -> Estimate:
    """IQM of one policy's episode returns (shape ``(num_episodes,)``) with a bootstrap CI."""
    return interval_estimate(
        _as_1d(returns),
        "iqm",
        n_resamples=n_resamples,
        confidence_level=confidence_level,
        method=method,
        seed=seed,
    )


def summarize_returns(
    returns: ArrayLike,
    *,
    n_resamples: int = 2000,
    confidence_level: float = 0.95,
    method: str = "percentile",
    seed: Seed = None,
) -> dict[str, Estimate]:
    """``{"mean": Estimate, "iqm": Estimate}`` for 1-D episode returns ``(num_episodes,)``."""
    rng = _as_generator(seed)
    kw = dict(n_resamples=n_resamples, confidence_level=confidence_level, method=method, seed=rng)
    return {"mean": mean_ci(returns, **kw), "iqm": iqm_ci(returns, **kw)}


def _as_1d(returns: ArrayLike) -> np.ndarray:
    arr = np.asarray(returns, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"returns must be 1-D (num_episodes,); got shape {arr.shape}")
    return arr


# --------------------------------------------------------------------------------------------
# Performance profiles (score distributions)
# --------------------------------------------------------------------------------------------
def _profile_statistic(taus: np.ndarray, kind: str) -> Callable[..., np.ndarray]:
    def stat(*cols: np.ndarray, axis: int = -1) -> np.ndarray:
        if kind == "runs":
            # mean over tasks of the per-task fraction of runs above tau: (..., n_taus)
            frac = np.mean(
                np.stack([np.mean(c[..., None, :] > taus[:, None], axis=-1) for c in cols]),
                axis=0,
            )
        else:
            task_means = np.stack([np.mean(c, axis=-1) for c in cols], axis=-1)  # (..., T)
            frac = np.mean(task_means[..., None, :] > taus[:, None], axis=-1)
        return np.moveaxis(frac, -1, 0)  # (n_taus, ...)

    return stat


def score_distribution(scores: ArrayLike, taus: ArrayLike, *, kind: str = "runs") -> np.ndarray:
    """Performance profile point values.

    Args:
        scores: ``(num_runs, num_tasks)``.
        taus: thresholds, shape ``(n_taus,)``.
        kind: ``"runs"`` -- fraction of all runs x tasks with score > tau (rliable's score
            distribution, ``use_score_distribution=True``); ``"tasks"`` -- fraction of tasks
            whose mean score > tau (rliable's average score distribution).

    Returns:
        ``(n_taus,)`` array, non-increasing in tau.
    """
    s = as_score_matrix(scores)
    t = np.asarray(taus, dtype=np.float64).reshape(-1)
    if kind not in ("runs", "tasks"):
        raise ValueError(f"kind must be 'runs' or 'tasks'; got {kind!r}")
    return np.asarray(_profile_statistic(t, kind)(*_columns(s)), dtype=np.float64)


def performance_profile(
    scores: ArrayLike,
    taus: ArrayLike,
    *,
    kind: str = "runs",
    n_resamples: int = 2000,
    confidence_level: float = 0.95,
    method: str = "percentile",
    seed: Seed = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Performance profile with pointwise stratified-bootstrap CIs.

    Args:
        scores: ``(num_runs, num_tasks)``.
        taus: thresholds, shape ``(n_taus,)``.
        kind: see :func:`score_distribution`.
        n_resamples, confidence_level, method, seed: see :func:`interval_estimate`.

    Returns:
        ``(profile, low, high)``, each of shape ``(n_taus,)``.
    """
    method = _check_options(n_resamples, confidence_level, method)
    s = as_score_matrix(scores)
    t = np.asarray(taus, dtype=np.float64).reshape(-1)
    profile = score_distribution(s, t, kind=kind)
    _warn_few_runs(s.shape[0], "performance profile")
    if s.shape[0] < 2:
        return profile, profile.copy(), profile.copy()
    low, high, _ = _bootstrap(
        _columns(s),
        _profile_statistic(t, kind),
        n_resamples=n_resamples,
        confidence_level=confidence_level,
        method=method,
        rng=_as_generator(seed),
        cost_per_resample=2 * s.size * max(1, t.size),
    )
    return profile, np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# Probability of improvement
# --------------------------------------------------------------------------------------------
def _poi_statistic(num_tasks: int) -> Callable[..., np.ndarray]:
    def stat(*cols: np.ndarray, axis: int = -1) -> np.ndarray:
        per_task = []
        for m in range(num_tasks):
            x = cols[m][..., :, None]
            y = cols[num_tasks + m][..., None, :]
            # Mann-Whitney U_x / (n_x n_y): P(X > Y) + P(X = Y) / 2
            per_task.append(np.mean(x > y, axis=(-2, -1)) + 0.5 * np.mean(x == y, axis=(-2, -1)))
        return np.mean(np.stack(per_task, axis=-1), axis=-1)

    return stat


def _poi_inputs(scores_x: ArrayLike, scores_y: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = as_score_matrix(scores_x, "scores_x")
    y = as_score_matrix(scores_y, "scores_y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"scores_x and scores_y need the same number of tasks; "
            f"got {x.shape[1]} and {y.shape[1]}"
        )
    return x, y


def probability_of_improvement(scores_x: ArrayLike, scores_y: ArrayLike) -> float:
    """Average probability of improvement ``P(X > Y)`` of algorithm X over Y.

    Per task ``m``: ``U_m / (n_x n_y)`` with ``U_m`` the Mann-Whitney U statistic of X's runs
    against Y's runs (ties count 1/2); the result is the mean over tasks
    (``rliable.metrics.probability_of_improvement``).

    Args:
        scores_x: ``(num_runs_x, num_tasks)``.
        scores_y: ``(num_runs_y, num_tasks)``.

    Returns:
        Probability in ``[0, 1]``; 0.5 means no difference.
    """
    x, y = _poi_inputs(scores_x, scores_y)
    return float(_poi_statistic(x.shape[1])(*_columns(x), *_columns(y)))


def probability_of_improvement_ci(
    scores_x: ArrayLike,
    scores_y: ArrayLike,
    *,
    n_resamples: int = 2000,
    confidence_level: float = 0.95,
    method: str = "percentile",
    seed: Seed = None,
) -> Estimate:
    """:func:`probability_of_improvement` with a stratified-bootstrap CI.

    Runs are resampled within each task, independently for X and for Y (rliable's
    ``StratifiedIndependentBootstrap``).

    Args:
        scores_x: ``(num_runs_x, num_tasks)``.
        scores_y: ``(num_runs_y, num_tasks)``.
        n_resamples, confidence_level, method, seed: see :func:`interval_estimate`.
    """
    method = _check_options(n_resamples, confidence_level, method)
    x, y = _poi_inputs(scores_x, scores_y)
    point = probability_of_improvement(x, y)
    min_runs = min(x.shape[0], y.shape[0])
    _warn_few_runs(min_runs, "probability of improvement")
    if min_runs < 2:
        return Estimate(point, point, point, confidence_level, "degenerate")
    low, high, used = _bootstrap(
        [*_columns(x), *_columns(y)],
        _poi_statistic(x.shape[1]),
        n_resamples=n_resamples,
        confidence_level=confidence_level,
        method=method,
        rng=_as_generator(seed),
        cost_per_resample=4 * x.shape[0] * y.shape[0] * x.shape[1],
    )
    return Estimate(point, _clip01(low), _clip01(high), confidence_level, used)


def _clip01(v: np.ndarray) -> float:
    f = float(v)
    return f if math.isnan(f) else min(1.0, max(0.0, f))
