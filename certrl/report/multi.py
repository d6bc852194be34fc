"""Numbers shared by ``certrl report`` (several policies) and ``certrl compare``.

Scores: evaluation returns normalized with :func:`certrl.stats.normalize_scores` when every
environment has reference scores (0 = random, 1 = reference policy); raw returns when they do
not but all files share one environment; otherwise raw returns with a warning that scores from
different environments are not comparable. Every bootstrap is seeded (:data:`STATS_SEED`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from certrl.report.model import STATS_SEED, BudgetRow, PolicyResults, fci, fnum
from certrl.stats import (
    REFERENCE_SCORES,
    Estimate,
    interval_estimates,
    normalize_scores,
    performance_profile,
    probability_of_improvement_ci,
)

METRICS = {"median": "median", "IQM": "iqm", "mean": "mean", "optimality gap": "optimality_gap"}


@dataclass
class Comparison:
    kind: str  # "normalized" | "raw"
    score_label: str
    note: str
    labels: list[str]
    clean: dict[str, np.ndarray]
    attacked: dict[str, np.ndarray]
    attacked_names: dict[str, str]
    intervals: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    attacked_intervals: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    taus: np.ndarray | None = None
    profiles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    attacked_profiles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=dict)
    poi: list[tuple[str, str, Estimate]] = field(default_factory=list)


def _scores(items: list[PolicyResults]) -> tuple[str, str, str]:
    envs = {it.env_id for it in items}
    if all(e in REFERENCE_SCORES for e in envs):
        return ("normalized", "normalized score (0 = random, 1 = reference)",
                "Scores are returns normalized per environment: (return − random) / "
                "(reference − random), reference scores from certrl.stats.REFERENCE_SCORES.")
    if len(envs) == 1:
        return ("raw", "return", "Scores are raw returns (no reference scores for "
                f"{next(iter(envs))}; all files share that environment).")
    return ("raw", "return", "Warning: scores are raw returns of different environments "
            "without reference scores; comparisons across environments are not meaningful.")


def _norm(it: PolicyResults, returns: np.ndarray, kind: str) -> np.ndarray:
    if kind == "normalized":
        return normalize_scores(returns, env_id=it.env_id)
    return np.asarray(returns, dtype=np.float64)


def poi_pairs(labels: list[str], scores: dict[str, np.ndarray]) -> list[tuple[str, str, Estimate]]:
    """P(X > Y) with a 95% bootstrap CI for every pair (in input order) of score vectors."""
    out = []
    for x, y in combinations([lab for lab in labels if lab in scores], 2):
        sx, sy = scores[x].reshape(-1, 1), scores[y].reshape(-1, 1)
        n_res = 2000 if sx.size * sy.size <= 250_000 else 500
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = probability_of_improvement_ci(sx, sy, seed=STATS_SEED, n_resamples=n_res)
        out.append((x, y, est))
    return out


def compare(items: list[PolicyResults], profiles: bool = True) -> Comparison | None:
    """Aggregate intervals, performance profiles and probabilities of improvement (None when
    fewer than two files have evaluation returns)."""
    usable = [it for it in items if it.eval_returns is not None]
    if len(usable) < 2:
        return None
    kind, label, note = _scores(usable)
    clean = {it.label: _norm(it, it.eval_returns, kind) for it in usable}  # type: ignore[arg-type]
    attacked, names = {}, {}
    for it in usable:
        if it.strongest is not None and it.strongest.returns is not None:
            attacked[it.label] = _norm(it, it.strongest.returns, kind)
            names[it.label] = it.strongest.name
    comp = Comparison(kind, label, note, [it.label for it in usable], clean, attacked, names)
    metrics = METRICS if kind == "normalized" else {k: v for k, v in METRICS.items()
                                                      if v != "optimality_gap"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        comp.intervals = interval_estimates(
            {k: v.reshape(-1, 1) for k, v in clean.items()}, metrics, seed=STATS_SEED)
        if attacked:
            comp.attacked_intervals = interval_estimates(
                {k: v.reshape(-1, 1) for k, v in attacked.items()}, metrics, seed=STATS_SEED)
        if profiles:
            allv = np.concatenate([*clean.values(), *attacked.values()])
            lo, hi = float(np.min(allv)), float(np.max(allv))
            pad = 0.05 * (hi - lo) if hi > lo else 1.0
            comp.taus = np.linspace(lo - pad, hi + pad, 101)
            for k, v in clean.items():
                comp.profiles[k] = performance_profile(v.reshape(-1, 1), comp.taus,
                                                       seed=STATS_SEED, n_resamples=1000)
            for k, v in attacked.items():
                comp.attacked_profiles[k] = performance_profile(v.reshape(-1, 1), comp.taus,
                                                                seed=STATS_SEED,
                                                                n_resamples=1000)
    comp.poi = poi_pairs(comp.labels, clean)
    return comp


def common_budget(items: list[PolicyResults]) -> float | None:
    """The largest budget certified in every file that has certificates (None if none)."""
    sets = [{r.budget for r in it.budgets} for it in items if it.budgets]
    if not sets:
        return None
    common = set.intersection(*sets)
    return max(common) if common else None


def row_at(it: PolicyResults, budget: float | None) -> BudgetRow | None:
    if budget is None:
        return None
    for r in it.budgets:
        if math.isclose(r.budget, budget, rel_tol=1e-9, abs_tol=1e-12):
            return r
    return None


def summary_table(items: list[PolicyResults]) -> tuple[list[str], list[list[str]], str]:
    """Headers, rows and a note for the per-policy summary (``compare`` and the report)."""
    b = common_budget(items)
    cert_head = f"certified E[R] at B={b:g}" if b is not None else "certified E[R]"
    headers = ["policy", "env", "n", "clean mean [95% CI]", "clean IQM [95% CI]",
               "strongest attack: mean", cert_head]
    rows = []
    for it in items:
        s = it.eval_summary or {}
        att = "-"
        if it.strongest is not None:
            att = f"{it.strongest.name}: {fnum(it.strongest.mean)}"
        cert = "-"
        row = row_at(it, b)
        if row is None and it.budgets:
            row, _ = it.headline_budget()
            cert = f"{fnum(row.bound)} (B={row.budget:g})" if row else "-"
        elif row is not None:
            cert = fnum(row.bound)
        rows.append([
            it.label, it.env_id, str(s.get("n", "-")),
            f"{fnum(s.get('mean'))} {fci(s.get('mean_ci'))}" if s else "-",
            f"{fnum(s.get('iqm'))} {fci(s.get('iqm_ci'))}" if s else "-",
            att, cert,
        ])
    note = ""
    if b is None and any(it.budgets for it in items):
        note = "No budget is certified in every file: each row quotes its own headline budget."
    return headers, rows, note


def poi_table(poi: list[tuple[str, str, Estimate]]) -> tuple[list[str], list[list[str]]]:
    headers = ["X", "Y", "P(X > Y)", "95% CI"]
    rows = [[x, y, f"{e.point:.3f}", f"[{e.low:.3f}, {e.high:.3f}]"] for x, y, e in poi]
    return headers, rows


def jsonable(comp: Comparison | None) -> dict[str, Any] | None:
    if comp is None:
        return None
    return {
        "scores": comp.kind,
        "note": comp.note,
        "intervals": {k: {m: e.to_json() for m, e in v.items()} for k, v in comp.intervals.items()},
        "probability_of_improvement": [
            {"x": x, "y": y, **e.to_json()} for x, y, e in comp.poi],
    }


# ---------------------------------------------------------------------------- runs (groups)
MIN_RUNS = 5  # Agarwal et al. (2021): fewer runs per method make bootstrap CIs too narrow


def single_run_warning(labels: list[str]) -> str:
    """The warning for a comparison of single files (one trained agent each)."""
    return (f"each of {', '.join(labels)} is a single run (one trained agent; fewer than "
            f"{MIN_RUNS} runs): P(X > Y) and its CI compare the episodes of these particular "
            "agents, not training methods. To compare methods, train at least "
            f"{MIN_RUNS} seeds of each and pass them as --group NAME FILE... "
            "(Agarwal et al., NeurIPS 2021)")


@dataclass
class RunGroup:
    """Several results files (runs: independently trained agents) of one method."""

    name: str
    items: list[PolicyResults]
    tasks: list[str] = field(default_factory=list)  # environment ids, sorted
    scores: np.ndarray | None = None  # (runs, tasks): each run's mean clean return (scored)
    attacked: np.ndarray | None = None  # (runs, tasks): each run's strongest-attack mean

    @property
    def runs(self) -> int:
        return 0 if self.scores is None else int(self.scores.shape[0])


@dataclass
class RunComparison:
    """rliable-style comparison of methods: the unit of sampling is the run (a trained
    agent), the score of a run is its mean clean evaluation return on each task."""

    kind: str
    score_label: str
    note: str
    groups: list[RunGroup]
    intervals: dict[str, dict[str, Estimate]]
    attacked_intervals: dict[str, dict[str, Estimate]]
    poi: list[tuple[str, str, Estimate]]
    warnings: list[str]


def _run_matrix(g: RunGroup, tasks: list[str], values: dict[int, float]) -> np.ndarray:
    """(runs, tasks) from per-item values; runs on each task in input order."""
    cols = []
    for t in tasks:
        cols.append([values[i] for i, it in enumerate(g.items) if it.env_id == t])
    return np.asarray(cols, dtype=np.float64).T


def compare_runs(groups: list[tuple[str, list[PolicyResults]]]) -> RunComparison:
    """Compare groups of runs (:class:`~certrl.results.ResultsError` for an inconsistent design).

    Every group must cover the same environments (tasks) with the same number of runs on each
    of its tasks (rliable's ``(runs, tasks)`` score matrices; the run count may differ between
    groups). Scores are normalized per environment when reference scores exist and the groups
    span several environments; raw returns for a single environment. Probability of
    improvement: Mann-Whitney statistic over run scores per task, averaged over tasks, with a
    stratified-bootstrap CI resampling runs within tasks independently for X and Y.
    """
    from certrl.results import ResultsError

    rgs = [RunGroup(name, items) for name, items in groups]
    warn_list: list[str] = []
    for g in rgs:
        bare = [it.label for it in g.items if it.eval_returns is None]
        if bare:
            raise ResultsError(f"group {g.name}: no clean evaluation returns in "
                               f"{', '.join(bare)}; run `certrl evaluate` on it or leave it out")
    task_sets = {g.name: sorted({it.env_id for it in g.items}) for g in rgs}
    tasks = task_sets[rgs[0].name]
    for g in rgs:
        if task_sets[g.name] != tasks:
            raise ResultsError(f"group {g.name} covers {', '.join(task_sets[g.name])} but group "
                               f"{rgs[0].name} covers {', '.join(tasks)}: every group needs runs "
                               "on the same environments")
        counts = {t: sum(it.env_id == t for it in g.items) for t in tasks}
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{n} on {t}" for t, n in counts.items())
            raise ResultsError(f"group {g.name} has {detail}: give every environment the same "
                               "number of runs")
        g.tasks = tasks
    everything = [it for g in rgs for it in g.items]
    if len(tasks) == 1:
        kind, label = "raw", "return"
        note = f"Scores are mean clean returns per run on {tasks[0]} (raw returns)."
    else:
        kind, label, note = _scores(everything)
        note = note.replace("Scores are returns", "Scores are mean clean returns per run")
    for g in rgs:
        clean = {i: float(np.mean(_norm(it, it.eval_returns, kind)))  # type: ignore[arg-type]
                 for i, it in enumerate(g.items)}
        g.scores = _run_matrix(g, tasks, clean)
        att = {i: float(np.mean(_norm(it, np.array([it.strongest.mean]), kind)))
               for i, it in enumerate(g.items)
               if it.strongest is not None and it.strongest.mean is not None}
        if len(att) == len(g.items):
            g.attacked = _run_matrix(g, tasks, att)
        if g.runs < MIN_RUNS:
            warn_list.append(f"group {g.name} has {g.runs} run{'s' if g.runs != 1 else ''} per "
                             f"environment (fewer than {MIN_RUNS}): its bootstrap CIs over runs "
                             "are unreliable (too narrow); Agarwal et al. (NeurIPS 2021) "
                             f"recommend at least {MIN_RUNS} runs")
    metrics = METRICS if kind == "normalized" else {k: v for k, v in METRICS.items()
                                                      if v != "optimality_gap"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        intervals = interval_estimates({g.name: g.scores for g in rgs}, metrics,
                                       seed=STATS_SEED)
        att_iv = interval_estimates({g.name: g.attacked for g in rgs if g.attacked is not None},
                                    metrics, seed=STATS_SEED)
        poi = []
        for x, y in combinations(rgs, 2):
            poi.append((x.name, y.name, probability_of_improvement_ci(
                x.scores, y.scores, seed=STATS_SEED)))
    return RunComparison(kind, label, note, rgs, intervals, att_iv, poi, warn_list)


def run_table(comp: RunComparison) -> tuple[list[str], list[list[str]]]:
    """One row per group: runs, environments, clean and attacked aggregates with CIs, and the
    certified return at the largest budget every run certifies (mean and minimum over runs)."""
    headers = ["group", "runs", "env", "clean IQM [95% CI]", "clean mean [95% CI]",
               "strongest attack: mean [95% CI]", "certified E[R]: mean (min) over runs"]
    rows = []
    for g in comp.groups:
        iv = comp.intervals[g.name]
        av = comp.attacked_intervals.get(g.name)
        b = common_budget(g.items)
        bounds = [r.bound for r in (row_at(it, b) for it in g.items)
                  if r is not None and r.bound is not None]
        if b is not None and len(bounds) == len(g.items):
            cert = f"{fnum(float(np.mean(bounds)))} ({fnum(min(bounds))}) at B={b:g}"
        else:
            cert = "-"
        rows.append([
            g.name, str(g.runs), ", ".join(g.tasks),
            f"{fnum(iv['IQM'].point)} {fci([iv['IQM'].low, iv['IQM'].high])}",
            f"{fnum(iv['mean'].point)} {fci([iv['mean'].low, iv['mean'].high])}",
            (f"{fnum(av['mean'].point)} {fci([av['mean'].low, av['mean'].high])}"
             if av else "-"),
            cert,
        ])
    return headers, rows
