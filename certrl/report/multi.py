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
