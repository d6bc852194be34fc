"""Statistics for RL evaluation (Agarwal et al. 2021, "Deep RL at the Edge of the Statistical
Precipice"; definitions match ``rliable``).

Score arrays have shape ``(num_runs, num_tasks)``. Public API:

* point estimates: :func:`aggregate`, :func:`aggregate_mean`, :func:`aggregate_median`,
  :func:`aggregate_iqm`, :func:`aggregate_optimality_gap`;
* stratified-bootstrap intervals (``scipy.stats.bootstrap``, seeded): :func:`interval_estimate`,
  :func:`interval_estimates`, :func:`mean_ci`, :func:`iqm_ci`, :func:`summarize_returns`;
* performance profiles: :func:`score_distribution`, :func:`performance_profile`;
* probability of improvement: :func:`probability_of_improvement`,
  :func:`probability_of_improvement_ci`;
* normalization: :func:`normalize_scores`, :data:`REFERENCE_SCORES`.
"""

from certrl.stats.bootstrap import (
    MIN_RUNS_FOR_INTERVALS,
    Estimate,
    StatsWarning,
    interval_estimate,
    interval_estimates,
    iqm_ci,
    mean_ci,
    performance_profile,
    probability_of_improvement,
    probability_of_improvement_ci,
    score_distribution,
    summarize_returns,
)
from certrl.stats.metrics import (
    METRIC_NAMES,
    aggregate,
    aggregate_iqm,
    aggregate_mean,
    aggregate_median,
    aggregate_optimality_gap,
)
from certrl.stats.normalize import REFERENCE_SCORES, ReferenceScore, normalize_scores

__all__ = [
    "METRIC_NAMES",
    "MIN_RUNS_FOR_INTERVALS",
    "REFERENCE_SCORES",
    "Estimate",
    "ReferenceScore",
    "StatsWarning",
    "aggregate",
    "aggregate_iqm",
    "aggregate_mean",
    "aggregate_median",
    "aggregate_optimality_gap",
    "interval_estimate",
    "interval_estimates",
    "iqm_ci",
    "mean_ci",
    "normalize_scores",
    "performance_profile",
    "probability_of_improvement",
    "probability_of_improvement_ci",
    "score_distribution",
    "summarize_returns",
]
