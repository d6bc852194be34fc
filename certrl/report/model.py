"""What a report shows, read defensively from results files (every section may be missing).

:func:`load_inputs` turns results files into :class:`PolicyResults` (one per file) with the
numbers the figures and tables need; a section that is absent or malformed becomes ``None``
plus a :attr:`PolicyResults.missing` line telling the user which command adds it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from certrl.results import ResultsError, load_results, policy_name

STATS_SEED = 0  # every bootstrap in a report uses this seed: same inputs, same numbers


# ---------------------------------------------------------------------------- small helpers
def fnum(x: Any, digits: int = 3) -> str:
    """Human number: ``1,234.5`` for large values, ``0.123`` for small ones, ``-`` if absent."""
    if x is None:
        return "-"
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "-"
    if abs(v) >= 100:
        return f"{v:,.1f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.{digits}f}"


def fci(ci: Any) -> str:
    """``[lo, hi]`` of a CI pair, or ``-``."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or None in ci:
        return "-"
    return f"[{fnum(ci[0])}, {fnum(ci[1])}]"


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _arr(x: Any) -> np.ndarray | None:
    if not isinstance(x, (list, tuple)) or not x:
        return None
    try:
        a = np.asarray([np.nan if v is None else v for v in x], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    a = a[np.isfinite(a)]
    return a if a.size else None


def _dict(x: Any) -> dict[str, Any] | None:
    return x if isinstance(x, dict) and x else None


def summarize(returns: np.ndarray) -> dict[str, Any]:
    """The results-file summary (mean, std, IQM and their 95% bootstrap CIs) of a sample, with
    the report's fixed bootstrap seed."""
    from certrl.pipeline.job import returns_summary

    return returns_summary(returns, seed=STATS_SEED)


def _summary(section: dict[str, Any] | None, returns: np.ndarray | None) -> dict[str, Any] | None:
    """The stored summary if it has a mean, else one computed from the returns."""
    s = _dict(section.get("summary")) if section else None
    if s is not None and _num(s.get("mean")) is not None:
        return s
    return summarize(returns) if returns is not None else None


def norm_label(norm: Any) -> str:
    return {"linf": "ℓ∞", "l2": "ℓ2", "l1": "ℓ1"}.get(str(norm), str(norm))


# ---------------------------------------------------------------------------- the model
@dataclass
class Attack:
    name: str
    returns: np.ndarray | None
    summary: dict[str, Any] | None
    config: dict[str, Any]
    drop_mean: float | None
    drop_ci: list[float] | None
    kind: str = "obs"  # "obs" | "action"
    audit: dict[str, Any] = field(default_factory=dict)

    @property
    def mean(self) -> float | None:
        return _num(self.summary.get("mean")) if self.summary else None


@dataclass
class BudgetRow:
    budget: float
    per_step_eps: float | None
    bound: float | None
    percentiles: dict[str, float]
    attack_name: str | None = None
    attack_summary: dict[str, Any] | None = None
    attack_returns: np.ndarray | None = None


@dataclass
class PolicyResults:
    """One results file, as the report reads it."""

    path: Path
    data: dict[str, Any]
    label: str = ""
    env_id: str = "?"
    env_alias: str = ""
    policy_spec: str = "?"
    eval_returns: np.ndarray | None = None
    eval_summary: dict[str, Any] | None = None
    cert: dict[str, Any] | None = None
    budgets: list[BudgetRow] = field(default_factory=list)
    attacks: dict[str, Any] | None = None
    attack_list: list[Attack] = field(default_factory=list)
    attack_clean_returns: np.ndarray | None = None
    attack_clean_summary: dict[str, Any] | None = None
    strongest: Attack | None = None
    stress_grid: dict[str, Any] | None = None
    bounds: dict[str, Any] | None = None
    diagnosis: dict[str, Any] | None = None
    gate_checks: list[Any] = field(default_factory=list)  # certrl.gate.Check of --require
    missing: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ derived
    @property
    def env(self) -> dict[str, Any]:
        return _dict(self.data.get("env")) or {}

    @property
    def policy(self) -> dict[str, Any]:
        return _dict(self.data.get("policy")) or {}

    @property
    def horizon(self) -> int | None:
        h = (self.cert or {}).get("horizon", self.env.get("horizon"))
        try:
            return int(h)
        except (TypeError, ValueError):
            return None

    @property
    def budget_steps(self) -> int | None:
        """The steps a budget B is spread over in the per-step radius ``B / sqrt(steps)``:
        what ``certify`` used (the horizon, or the mean episode length on the Atari games,
        whose horizon is only ALE's cap), read back from its rows; else the horizon."""
        for r in (self.cert or {}).get("budgets") or []:
            try:
                b, e = float(r["budget"]), float(r["per_step_eps"])
            except (KeyError, TypeError, ValueError):
                continue
            if b > 0 and e > 0:
                return max(1, int(round((b / e) ** 2)))
        return self.horizon

    @property
    def pixels(self) -> bool:
        """Whether the environment shows stacked frames (Atari)."""
        return bool(self.env.get("frame_stack"))

    @property
    def threat(self) -> dict[str, Any]:
        return _dict((self.attacks or {}).get("threat")) or {}

    def threat_text(self) -> str:
        t = self.threat
        if not t:
            return "threat model not recorded"
        parts = [f"{norm_label(t.get('norm', '?'))} ε = {fnum(t.get('eps'), 4)} per step"]
        parts.append(f"{t.get('space', '?')} observations")
        if t.get("episode_budget") is not None:
            parts.append(f"episode ℓ2 budget B = {fnum(t['episode_budget'], 4)}")
        if t.get("eps_bar") is not None:
            parts.append(f"temporal coupling ε̄ = {fnum(t['eps_bar'], 4)}")
        return ", ".join(parts)

    def headline_budget(self) -> tuple[BudgetRow | None, str]:
        """The budget the verdict quotes and why: the gate's, else the largest budget whose
        certificate is informative (above 0 and above the return's lower bound a), among those
        whose per-step l2 radius ``B / sqrt(H)`` is within the environment's default l_inf
        budget, else the largest such budget, else the largest certified budget."""
        if not self.budgets:
            return None, ""
        for c in self.gate_checks:  # certrl report --require certified_...@B=x
            b = getattr(c.requirement, "budget", None)
            for row in self.budgets if b is not None else []:
                if math.isclose(row.budget, b, rel_tol=1e-9, abs_tol=1e-12):
                    return row, "the gated budget"
        gate = _dict((self.cert or {}).get("gate"))
        if gate is not None and _num(gate.get("budget")) is not None:
            b = float(gate["budget"])
            for row in self.budgets:
                if math.isclose(row.budget, b, rel_tol=1e-9, abs_tol=1e-12):
                    return row, "the gated budget"
        eps = _num(self.env.get("default_eps"))
        if eps is not None:
            ok = [r for r in self.budgets if r.per_step_eps is not None and r.per_step_eps <= eps]
            a = _num((self.cert or {}).get("reward_lower_bound"))
            floor = max(0.0, a) if a is not None else 0.0
            useful = [r for r in ok if r.budget > 0 and r.bound is not None and r.bound > floor]
            if useful:
                return useful[-1], "largest budget with a positive certificate"
            if ok:
                return ok[-1], (f"largest budget with per-step ℓ2 radius B/√H ≤ the default "
                                f"ε = {eps:g}")
        return self.budgets[-1], "largest certified budget"

    def command_hint(self, command: str) -> str:
        alias = self.env_alias or self.env_id
        return f"certrl {command} {self.policy_spec} --env {alias}"


def _budget_rows(cert: dict[str, Any]) -> list[BudgetRow]:
    rows: list[BudgetRow] = []
    horizon = _num(cert.get("horizon"))
    for r in cert.get("budgets") or []:
        if not isinstance(r, dict) or _num(r.get("budget")) is None:
            continue
        b = float(r["budget"])
        eps = _num(r.get("per_step_eps"))
        if eps is None and horizon:
            eps = b / math.sqrt(horizon)
        pct = {str(k): float(v) for k, v in (_dict(r.get("percentile_lower_bounds")) or {}).items()
               if _num(v) is not None}
        row = BudgetRow(b, eps, _num(r.get("expected_return_lower_bound")), pct)
        att = _dict(r.get("attack"))
        if att is not None:
            row.attack_name = str(att.get("name", "attack"))
            row.attack_returns = _arr(att.get("returns"))
            row.attack_summary = _summary(att, row.attack_returns)
            if row.attack_summary is None and _num(att.get("mean")) is not None:
                row.attack_summary = {"mean": float(att["mean"])}
        rows.append(row)
    rows.sort(key=lambda r: r.budget)
    return rows


def _attack_list(attacks: dict[str, Any], clean: dict[str, Any] | None) -> list[Attack]:
    out: list[Attack] = []
    results = _dict(attacks.get("results")) or {}
    clean_mean = _num((clean or {}).get("mean"))
    for name, res in results.items():
        if not isinstance(res, dict):
            continue
        rets = _arr(res.get("returns"))
        summ = _summary(res, rets)
        if summ is None and _num(res.get("mean")) is not None:
            summ = {"mean": float(res["mean"])}
        drop = _num(res.get("drop_mean"))
        if drop is None and clean_mean is not None and summ and _num(summ.get("mean")) is not None:
            drop = clean_mean - float(summ["mean"])
        dci = res.get("drop_ci")
        out.append(Attack(
            name=str(name), returns=rets, summary=summ,
            config=_dict(res.get("config")) or {}, drop_mean=drop,
            drop_ci=list(dci) if isinstance(dci, (list, tuple)) and len(dci) == 2 else None,
            kind=str(res.get("kind") or "obs"), audit=_dict(res.get("audit")) or {},
        ))
    out.sort(key=lambda a: (a.mean if a.mean is not None else math.inf, a.name))
    return out


def _param_labels(params: Any) -> tuple[list[str], list[str]]:
    """(names, axis labels) of ``stress.params``: ``{name, mode}`` dicts or plain names."""
    names, labels = [], []
    for p in params or []:
        if isinstance(p, dict):
            if p.get("name") is None:
                return [], []
            name = str(p["name"])
            mode = p.get("mode")
            labels.append(f"{name} ({'absolute' if mode == 'absolute' else 'scale of nominal'})"
                          if mode else name)
        else:
            name = str(p)
            labels.append(name)
        names.append(name)
    return names, labels


def _cell_mean(cell: dict[str, Any]) -> float | None:
    for v in (cell.get("mean"), (_dict(cell.get("summary")) or {}).get("mean")):
        if _num(v) is not None:
            return float(v)  # type: ignore[arg-type]
    rets = _arr(cell.get("returns"))
    return float(rets.mean()) if rets is not None else None


def _cell_values(cell: dict[str, Any], names: list[str]) -> list[float] | None:
    vals = cell.get("values", cell.get("params"))
    if isinstance(vals, dict):
        vals = [vals.get(n) for n in names]
    if not isinstance(vals, (list, tuple)) or len(vals) != len(names):
        return None
    out = [_num(v) for v in vals]
    return None if None in out else out  # type: ignore[return-value]


def _from_cells(names: list[str], labels: list[str], cells: list[Any], design: str
                ) -> dict[str, Any] | None:
    """A grid (or, for random samples, a point cloud) of mean returns from ``stress.cells``.

    Grid: the parameters that take more than one value become the axes (the first two); any
    further ones are reduced by the minimum (the worst case over them)."""
    pts: list[tuple[list[float], float]] = []
    for c in cells:
        if isinstance(c, dict):
            vals, m = _cell_values(c, names), _cell_mean(c)
            if vals is not None and m is not None:
                pts.append((vals, m))
    if not pts:
        return None
    varying = [k for k in range(len(names)) if len({v[k] for v, _ in pts}) > 1] or [0]
    if design == "samples":
        dims = varying[:2]
        return {"kind": "samples", "params": [labels[k] for k in dims],
                "points": np.asarray([[v[k] for k in dims] for v, _ in pts], dtype=float),
                "mean": np.asarray([m for _, m in pts], dtype=float),
                "reduced": [], "cells": len(pts)}
    dims = varying[:2]
    axes = [np.unique([v[k] for v, _ in pts]) for k in dims]
    mean = np.full(tuple(a.size for a in axes), np.nan)
    for v, m in pts:
        idx = tuple(int(np.searchsorted(axes[i], v[k])) for i, k in enumerate(dims))
        mean[idx] = m if np.isnan(mean[idx]) else min(mean[idx], m)
    return {"kind": "grid", "params": [labels[k] for k in dims], "values1": axes[0],
            "values2": axes[1] if len(dims) == 2 else None, "mean": mean,
            "reduced": [names[k] for k in varying[2:]], "cells": len(pts)}


def _stress_grid(stress: Any) -> dict[str, Any] | None:
    """The stress section (``certrl stress``) as what the report draws, or ``None``.

    Reads ``grid: {params, values1, values2, mean, nominal}`` (two varying parameters) when
    present, else ``params`` + ``cells: [{values: {name: v}, mean}]`` (one varying parameter,
    three or more, or random samples); plus ``worst_case``, ``average``, ``nominal.summary``
    and ``uncertainty_set`` when stored. Unknown layouts give ``None`` (the report then says
    the section could not be read)."""
    stress = _dict(stress)
    if stress is None:
        return None
    out: dict[str, Any] | None = None
    grid = _dict(stress.get("grid"))
    if grid is not None:
        try:
            params = [str(p) for p in grid["params"]]
            v1 = np.asarray(grid["values1"], dtype=float)
            v2 = np.asarray(grid["values2"], dtype=float)
            mean = np.asarray([[np.nan if v is None else v for v in row] for row in grid["mean"]],
                              dtype=float)
            if len(params) == 2 and mean.shape == (v1.size, v2.size):
                nom = grid.get("nominal")
                out = {"kind": "grid", "params": params, "values1": v1, "values2": v2,
                       "mean": mean, "reduced": [], "cells": int(mean.size),
                       "nominal_point": ([_num(x) for x in nom]
                                         if isinstance(nom, list) and len(nom) == 2 else None)}
        except (KeyError, TypeError, ValueError):
            out = None
    if out is None:
        names, labels = _param_labels(stress.get("params"))
        cells = stress.get("cells")
        if names and isinstance(cells, list):
            out = _from_cells(names, labels, cells, str(stress.get("design", "grid")))
    if out is None:
        return None
    out.setdefault("nominal_point", None)
    out["nominal_summary"] = _dict((_dict(stress.get("nominal")) or {}).get("summary"))
    out["worst_case"] = _dict(stress.get("worst_case"))
    out["average"] = _dict(stress.get("average"))
    uset = stress.get("uncertainty_set")
    out["uncertainty_set"] = (str(uset.get("name")) + (f" ({uset['source']})"
                                                       if uset.get("source") else "")
                              if isinstance(uset, dict) else uset)
    out["episodes"] = stress.get("episodes")
    out["drift"] = _num(stress.get("drift")) or 0.0
    return out


def read_policy_results(path: str | Path) -> PolicyResults:
    """Load one results file (:class:`~certrl.results.ResultsError` if it is not one)."""
    path = Path(path)
    data = load_results(path)
    pr = PolicyResults(path=path, data=data)
    env, pol = pr.env, pr.policy
    pr.env_id = str(env.get("id", "?"))
    pr.env_alias = str(env.get("alias") or "")
    spec = pol.get("spec") or pol.get("path") or path.stem
    pr.policy_spec = str(spec)
    pr.label = policy_name(pr.policy_spec) if not str(spec).startswith("demo:") else str(spec)

    ev = _dict(data.get("evaluation"))
    if ev is not None:
        pr.eval_returns = _arr(ev.get("returns"))
        pr.eval_summary = _summary(ev, pr.eval_returns)
    if pr.eval_summary is None:
        pr.missing["evaluation"] = (f"no clean evaluation in this file: run "
                                    f"`{pr.command_hint('evaluate')}`")

    cert = _dict(data.get("certificates"))
    if cert is not None:
        pr.cert = cert
        pr.budgets = _budget_rows(cert)
    if not pr.budgets:
        pr.cert = cert if cert and cert.get("statement") else None
        pr.missing["certificates"] = (f"no certificate in this file: run "
                                      f"`{pr.command_hint('certify')}`")

    attacks = _dict(data.get("attacks"))
    if attacks is not None:
        clean = _dict(attacks.get("clean")) or {}
        pr.attack_clean_returns = _arr(clean.get("returns"))
        pr.attack_clean_summary = _summary(clean, pr.attack_clean_returns)
        pr.attack_list = _attack_list(attacks, pr.attack_clean_summary or pr.eval_summary)
        if pr.attack_list:
            pr.attacks = attacks
            mn = _dict(attacks.get("min"))
            named = [a for a in pr.attack_list if mn and a.name == mn.get("name")]
            pr.strongest = named[0] if named else pr.attack_list[0]
    if pr.attacks is None:
        pr.missing["attacks"] = f"no attack results in this file: run `{pr.command_hint('attack')}`"

    bounds = _dict(data.get("bounds"))
    if bounds is not None and bounds.get("curve"):
        pr.bounds = bounds
    else:
        pr.missing["bounds"] = (f"no per-step bounds in this file: run "
                                f"`{pr.command_hint('bound')}`")

    diag = _dict(data.get("diagnosis"))
    if diag is not None and diag.get("dimension_shares"):
        pr.diagnosis = diag

    pr.stress_grid = _stress_grid(data.get("stress"))
    if pr.stress_grid is None and _stress_applies(pr.env_id):
        what = ("the stress section has no grid of mean returns this report can read"
                if data.get("stress") else "no dynamics stress test in this file")
        pr.missing["stress"] = (f"{what}: run `{pr.command_hint('stress')} "
                                "--uncertainty-set rrls-2d`")
    return pr


def _stress_applies(env_id: str) -> bool:
    """Whether ``certrl stress`` has a published uncertainty set for the environment."""
    try:
        from certrl.dynamics import RRLS_SETS, env_family
    except ImportError:  # pragma: no cover - optional physics dependencies
        return False
    return env_family(env_id) in RRLS_SETS


def load_inputs(paths: list[str | Path]) -> list[PolicyResults]:
    """Every input file, with unique labels (policy, then ``@ env``, then the file name)."""
    if not paths:
        raise ResultsError("no results files given")
    items = [read_policy_results(p) for p in paths]
    seen: dict[str, int] = {}
    for it in items:
        seen[it.label] = seen.get(it.label, 0) + 1
    for it in items:
        if seen[it.label] > 1:
            it.label = f"{it.label} @ {it.env_id}"
    seen = {}
    for it in items:
        seen[it.label] = seen.get(it.label, 0) + 1
    for it in items:
        if seen[it.label] > 1:
            it.label = f"{it.label} ({it.path.name})"
    return items


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def report_date(items: list[PolicyResults]) -> str:
    """The newest ``updated`` (else ``created``) date among the inputs: reports carry no
    timestamp of their own, so the same inputs give the same bytes."""
    dates = [str(it.data.get("updated") or it.data.get("created") or "") for it in items]
    dates = [d for d in dates if d]
    return max(dates) if dates else "unknown date"
