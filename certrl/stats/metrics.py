"""Aggregate point estimates over a (runs x tasks) score matrix.

Definitions follow Agarwal et al. (2021), "Deep Reinforcement Learning at the Edge of the
Statistical Precipice" and their reference implementation ``rliable.metrics``:

* ``mean``            -- mean over tasks of the per-task mean over runs;
* ``median``          -- median over tasks of the per-task mean over runs;
* ``iqm``             -- interquartile mean, the 25%-trimmed mean of all runs x tasks scores
                         pooled together (``scipy.stats.trim_mean(scores, 0.25, axis=None)``);
* ``optimality_gap``  -- ``gamma - mean(min(scores, gamma))`` (default ``gamma = 1``).

Score arrays are ``float`` arrays of shape ``(num_runs, num_tasks)``; ``scores[n, m]`` is the
(normalized) score of run ``n`` on task ``m``. A 1-D array of shape ``(num_runs,)`` is treated
as a single task, i.e. shape ``(num_runs, 1)``.

Besides the plain 2-D functions this module provides *stratified* variants (``*_strata``) that
take each task's column as a separate 1-D sample, possibly batched along leading axes
(``cols[m]`` of shape ``(..., n_m)``) and possibly of different lengths ``n_m``. These are the
statistics handed to :func:`scipy.stats.bootstrap` (which resamples every task column
independently, i.e. a stratified bootstrap, and whose BCa jackknife produces columns of unequal
length). For rectangular data they agree exactly with the 2-D definitions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

__all__ = [
    "METRIC_NAMES",
    "aggregate",
    "aggregate_iqm",
    "aggregate_mean",
    "aggregate_median",
    "aggregate_optimality_gap",
    "as_score_matrix",
    "canonical_metric_name",
]

#: Built-in metric names accepted by :func:`aggregate` and ``interval_estimates``.
METRIC_NAMES: tuple[str, ...] = ("mean", "median", "iqm", "optimality_gap")

MetricLike = str | Callable[[np.ndarray], float]


def as_score_matrix(scores: ArrayLike, name: str = "scores") -> np.ndarray:
    """Validate and convert scores to a float64 matrix.

    Args:
        scores: array of shape ``(num_runs, num_tasks)`` or ``(num_runs,)`` (one task).
        name: name used in error messages.

    Returns:
        float64 array of shape ``(num_runs, num_tasks)``.

    Raises:
        ValueError: wrong dimensionality, empty, or non-finite entries.
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must have shape (num_runs, num_tasks) or (num_runs,); got shape {arr.shape}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def canonical_metric_name(name: str) -> str:
    """Canonical metric name (``"IQM"`` -> ``"iqm"``, ``"Optimality Gap"`` -> ``"optimality_gap"``).

    Raises:
        ValueError: unknown metric.
    """
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; expected one of {METRIC_NAMES} or a callable")
    return key


# --------------------------------------------------------------------------------------------
# Plain 2-D point estimates (same definitions as rliable.metrics).
# --------------------------------------------------------------------------------------------
def aggregate_mean(scores: ArrayLike) -> float:
    """Mean over tasks of per-task mean scores. ``scores``: ``(num_runs, num_tasks)``."""
    s = as_score_matrix(scores)
    return float(np.mean(np.mean(s, axis=0)))


def aggregate_median(scores: ArrayLike) -> float:
    """Median over tasks of per-task mean scores. ``scores``: ``(num_runs, num_tasks)``."""
    s = as_score_matrix(scores)
    return float(np.median(np.mean(s, axis=0)))


def aggregate_iqm(scores: ArrayLike) -> float:
    """Interquartile mean (25% trimmed mean) of all runs x tasks scores pooled.

    ``scores``: ``(num_runs, num_tasks)``.
    """
    s = as_score_matrix(scores)
    return float(scipy.stats.trim_mean(s, proportiontocut=0.25, axis=None))


def aggregate_optimality_gap(scores: ArrayLike, gamma: float = 1.0) -> float:
    """Optimality gap ``gamma - mean(min(scores, gamma))`` over all runs x tasks.

    ``scores``: ``(num_runs, num_tasks)``; lower is better.
    """
    s = as_score_matrix(scores)
    return float(gamma - np.mean(np.minimum(s, gamma)))


def aggregate(scores: ArrayLike, metric: MetricLike, *, gamma: float = 1.0) -> float:
    """Point estimate of one aggregate metric.

    Args:
        scores: ``(num_runs, num_tasks)`` (or ``(num_runs,)`` for a single task).
        metric: one of :data:`METRIC_NAMES` (case-insensitive) or a callable mapping a
            ``(num_runs, num_tasks)`` array to a scalar.
        gamma: threshold of the optimality gap (ignored by other metrics).

    Returns:
        The metric value as a Python float.
    """
    s = as_score_matrix(scores)
    if callable(metric):
        return float(metric(s))
    key = canonical_metric_name(metric)
    if key == "mean":
        return aggregate_mean(s)
    if key == "median":
        return aggregate_median(s)
    if key == "iqm":
        return aggregate_iqm(s)
    return aggregate_optimality_gap(s, gamma=gamma)


# --------------------------------------------------------------------------------------------
# Stratified, batched statistics for scipy.stats.bootstrap(vectorized=True, axis=-1).
# Each ``cols[m]`` has shape (..., n_m); all leading shapes are equal (scipy broadcasts them).
# Results have the leading shape (...). Multi-output statistics prepend their output axes.
# --------------------------------------------------------------------------------------------
def _task_means(cols: Sequence[np.ndarray]) -> np.ndarray:
    """Per-task means, shape ``(..., num_tasks)``."""
    return np.stack([np.mean(c, axis=-1) for c in cols], axis=-1)


def mean_strata(*cols: np.ndarray, axis: int = -1) -> np.ndarray:
    """Stratified :func:`aggregate_mean`; ``cols[m]``: ``(..., n_m)`` -> ``(...)``."""
    _check_axis(axis)
    return np.mean(_task_means(cols), axis=-1)


def median_strata(*cols: np.ndarray, axis: int = -1) -> np.ndarray:
    """Stratified :func:`aggregate_median`; ``cols[m]``: ``(..., n_m)`` -> ``(...)``."""
    _check_axis(axis)
    return np.median(_task_means(cols), axis=-1)


def iqm_strata(*cols: np.ndarray, axis: int = -1) -> np.ndarray:
    """Stratified :func:`aggregate_iqm` (pooled trimmed mean); ``(..., n_m)`` -> ``(...)``."""
    _check_axis(axis)
    pooled = np.concatenate(cols, axis=-1)
    return scipy.stats.trim_mean(pooled, proportiontocut=0.25, axis=-1)


def optimality_gap_strata_factory(gamma: float = 1.0) -> Callable[..., np.ndarray]:
    """Stratified :func:`aggregate_optimality_gap` at threshold ``gamma``.

    Computed as ``gamma - mean_m mean_n min(x[n, m], gamma)``, which equals the pooled mean for
    rectangular data and stays well defined for the unequal columns of a BCa jackknife.
    """

    def optimality_gap_strata(*cols: np.ndarray, axis: int = -1) -> np.ndarray:
        _check_axis(axis)
        clipped = np.stack([np.mean(np.minimum(c, gamma), axis=-1) for c in cols], axis=-1)
        return gamma - np.mean(clipped, axis=-1)

    return optimality_gap_strata


def callable_strata(fn: Callable[[np.ndarray], float]) -> Callable[..., np.ndarray]:
    """Wrap a user metric on ``(num_runs, num_tasks)`` matrices as a stratified statistic.

    The wrapper stacks the task columns into a matrix, so all columns must have equal length;
    unequal lengths (the BCa jackknife) raise ``ValueError``, upon which the interval code
    falls back to the percentile method.
    """

    def stat(*cols: np.ndarray, axis: int = -1) -> np.ndarray:
        _check_axis(axis)
        if len({c.shape[-1] for c in cols}) != 1:
            raise ValueError("custom metric needs task columns of equal length")
        mat = np.stack(cols, axis=-1)  # (..., num_runs, num_tasks)
        lead = mat.shape[:-2]
        flat = mat.reshape((-1,) + mat.shape[-2:])
        out = np.array([float(fn(m)) for m in flat], dtype=np.float64)
        return out.reshape(lead)

    return stat


def strata_statistic(metric: MetricLike, gamma: float = 1.0) -> Callable[..., np.ndarray]:
    """Return the stratified, vectorized statistic for ``metric`` (name or callable)."""
    if callable(metric):
        return callable_strata(metric)
    key = canonical_metric_name(metric)
    return {
        "mean": mean_strata,
        "median": median_strata,
        "iqm": iqm_strata,
        "optimality_gap": optimality_gap_strata_factory(gamma),
    }[key]


def _check_axis(axis: int) -> None:
    if axis != -1:
        raise ValueError("stratified statistics operate on the last axis (axis=-1)")
