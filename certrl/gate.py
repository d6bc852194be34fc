"""The CI gate on certified return (``certrl gate``): requirements, verdicts and CI outputs.

Requirement mini-language (one ``--require`` per requirement)::

    METRIC[@B=BUDGET] OP NUMBER          OP in  >=  >  <=  <

Spaces are optional (``"certified_return@B=0.1 >= 2500"``, ``"attack_min>=1500"``). Metrics
(every one is a *lower confidence bound*, never a point estimate):

==============================  =============================================================
``certified_return@B=x``        ``certificates.budgets[].expected_return_lower_bound`` at
                                exactly budget ``x`` (the certificate itself: with probability
                                ``>= 1 - alpha`` the smoothed policy's expected return under
                                every l2 attack of budget ``x`` is at least this)
``certified_qQ@B=x``            ``percentile_lower_bounds[Q]`` at budget ``x``
                                (``certified_q0.1@B=0.1``: certified lower bound on the
                                attacked return's 10% quantile)
``clean_return``                lower end of ``evaluation.summary.mean_ci`` (bootstrap CI of
                                the clean mean; without an ``evaluation`` section, the clean
                                baseline of ``attacks.clean`` or ``stress.nominal``)
``smoothed_return``             lower end of ``certificates.clean_smoothed.summary.mean_ci``
``attack_min``                  minimum over ``attacks.results`` of the lower CI end of each
                                attack's mean return (``summary.mean_ci``; computed from the
                                stored ``returns`` by the same seeded bootstrap when only the
                                returns are stored)
``attack:NAME``                 lower CI end of one attack's mean return (same sources)
``worst_case_return``           lower confidence bound on the worst-case return of
                                ``certrl stress``: ``stress.worst_case.lower`` (or its
                                ``mean_ci``/``summary``), else the minimum over
                                ``stress.cells`` of each cell's lower CI end
``certified_fraction@eps=x``    lower end of the 95% episode-bootstrap CI of the fraction of
                                visited states whose action ``certrl bound`` certifies at the
                                per-step budget ``x`` (``bounds.curve[eps=x]``): deviation
                                ``<= tol`` (continuous) or greedy action unchanged (discrete)
==============================  =============================================================

Why a minimum of lower bounds is a lower bound: if ``L_j`` is a level-``1 - delta`` lower
confidence bound on ``mu_j`` for every attack (or stress cell) ``j``, then
``P(min_j L_j <= min_j mu_j) >= P(L_{j*} <= mu_{j*}) >= 1 - delta`` with ``j*`` the true argmin:
no multiplicity correction is needed for the minimum. A point estimate is never compared: a
metric without a confidence interval (and without the returns to compute one, or with fewer
than 2 episodes) is a configuration error.

What a PASS means: with ``>=`` (or ``>``) a requirement passes only when the lower bound is at
least the threshold, so, with the bound's confidence (``1 - alpha`` for certificates, the CI
level otherwise), the quantity itself is at least the threshold. ``<=`` and ``<`` compare the
same lower bound; a PASS then only says the bound is below the threshold, not the quantity
(that would need an upper bound): use them as sanity checks, e.g. that a certificate is not
above the clean return.

A certified metric needs ``@B=``; a budget that is not in the file, a missing section or
metric is a configuration error. Every requirement is checked in every results file given.

Exit codes (:attr:`GateReport.exit_code`): 0 every check passed; 1 a check failed (a robustness
regression); 2 usage/configuration error (bad requirement syntax, missing section, metric or
budget); 3 load/runtime error (a results file that is missing, unreadable or not a certrl
results file; an unexpected exception, from :func:`certrl.cli.main`). When several apply the
largest code wins (3 > 2 > 1): a gate that could not be evaluated is never reported as a mere
failure. ``--warn-only`` reports failures (as warnings on GitHub) but exits 0; codes 2 and 3
are never downgraded: a gate that cannot be evaluated is not a passing gate.

Outputs: a console verdict (one line per check), JUnit XML (``<testsuite name="certrl-gate">``,
one ``<testcase>`` per check, ``<failure>``/``<error>`` with the numbers; GitLab's
``artifacts:reports:junit`` reads it), JSON, and on GitHub Actions (``GITHUB_ACTIONS=true``) a
Markdown table appended to ``$GITHUB_STEP_SUMMARY``, ``key=value`` lines appended to
``$GITHUB_OUTPUT`` (heredoc syntax for multi-line values) and ``::error``/``::warning``/
``::notice`` workflow commands on stdout (escaped as GitHub's toolkit does).
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from certrl.results import ResultsError, load_results

__all__ = [
    "CERTIFIED_METRICS",
    "METRICS",
    "Check",
    "GateConfigError",
    "GateReport",
    "MetricValue",
    "Requirement",
    "escape_data",
    "escape_property",
    "evaluate",
    "github_report",
    "parse_requirement",
    "resolve_metric",
    "write_json",
    "write_junit",
]

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
}
NEGATION = {">=": "<", ">": "<=", "<=": ">", "<": ">="}
CERTIFIED_METRICS = ("certified_return", "certified_qQ")
METRICS = ("certified_return@B=x", "certified_qQ@B=x", "clean_return", "smoothed_return",
           "attack_min", "attack:NAME", "worst_case_return", "certified_fraction@eps=x")
LOWER_BOUND_NOTE = ("each requirement compares a lower confidence bound (the certificate itself, "
                    "or the lower end of a confidence interval), never a point estimate")

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_REQ = re.compile(
    r"^\s*(?P<metric>attack:[^\s@<>=]+|[A-Za-z_][A-Za-z0-9_.]*)"
    r"\s*(?:@\s*(?P<bname>[A-Za-z]+)\s*=\s*(?P<budget>[^\s<>=]*))?"
    r"\s*(?P<op>>=|<=|>|<|==|=)?\s*(?P<thr>.*?)\s*$"
)
_QUANTILE = re.compile(rf"^certified_q(?P<q>{_NUM})$")


class GateConfigError(ValueError):
    """A requirement that cannot be evaluated on a results file (exit code 2)."""


@dataclass(frozen=True)
class Requirement:
    """``metric[@B=budget] op threshold``; ``quantile`` for ``certified_qQ``."""

    text: str
    metric: str
    op: str
    threshold: float
    budget: float | None = None
    quantile: float | None = None
    eps: float | None = None

    @property
    def label(self) -> str:
        """The metric with its budget, e.g. ``certified_return@B=0.1``."""
        if self.eps is not None:
            return f"{self.metric}@eps={self.eps:g}"
        return self.metric if self.budget is None else f"{self.metric}@B={self.budget:g}"

    @property
    def canonical(self) -> str:
        return f"{self.label} {self.op} {_num(self.threshold)}"

    @property
    def key(self) -> str:
        """Output name: ``certified_return@B=0.1`` -> ``certified_return_B_0_1``."""
        return re.sub(r"[^A-Za-z0-9]+", "_", self.label).strip("_")

    def holds(self, value: float) -> bool:
        return OPS[self.op](value, self.threshold)


def _parse_float(text: str, what: str, req: str) -> float:
    if not re.fullmatch(_NUM, text or ""):
        raise ValueError(f"requirement {req!r}: {what} {text!r} is not a number")
    v = float(text)
    if not math.isfinite(v):  # pragma: no cover - _NUM only matches finite literals
        raise ValueError(f"requirement {req!r}: {what} must be finite")
    return v


def parse_requirement(text: str) -> Requirement:
    """Parse ``METRIC[@B=budget] OP NUMBER``; :class:`ValueError` with a hint if malformed."""
    hint = ("expected METRIC[@B=BUDGET] OP NUMBER with OP one of >=, >, <=, <, e.g. "
            "'certified_return@B=0.1 >= 2500' (metrics: " + ", ".join(METRICS) + ")")
    m = _REQ.match(text or "")
    if not m or not (text or "").strip():
        raise ValueError(f"requirement {text!r}: {hint}")
    metric, op = m.group("metric"), m.group("op")
    if op is None:
        raise ValueError(f"requirement {text!r}: no comparison operator; {hint}")
    if op in ("=", "=="):
        raise ValueError(f"requirement {text!r}: '{op}' is not supported (a gate compares a "
                         "lower confidence bound with >=, >, <= or <)")
    threshold = _parse_float(m.group("thr"), "threshold", text)
    budget = quantile = eps = None
    if metric == "certified_fraction":
        if m.group("bname") != "eps":
            raise ValueError(f"requirement {text!r}: certified_fraction needs a per-step "
                             f"budget, e.g. 'certified_fraction@eps=0.075 {op} "
                             f"{m.group('thr')}'")
        eps = _parse_float(m.group("budget"), "eps", text)
        if eps < 0:
            raise ValueError(f"requirement {text!r}: eps must be >= 0")
        return Requirement(text.strip(), metric, op, threshold, eps=eps)
    if m.group("bname") is not None:
        if m.group("bname") != "B":
            raise ValueError(f"requirement {text!r}: unknown qualifier "
                             f"'@{m.group('bname')}=' (@B=budget; @eps= only for "
                             "certified_fraction)")
        budget = _parse_float(m.group("budget"), "budget", text)
        if budget < 0:
            raise ValueError(f"requirement {text!r}: the budget must be >= 0")
    qm = _QUANTILE.match(metric)
    if qm:
        quantile = float(qm.group("q"))
        if not 0 < quantile < 1:
            raise ValueError(f"requirement {text!r}: the quantile must be in (0, 1)")
    certified = metric == "certified_return" or qm is not None
    known = certified or metric in ("clean_return", "smoothed_return", "attack_min",
                                    "worst_case_return") or (
        metric.startswith("attack:") and len(metric) > len("attack:"))
    if not known:
        raise ValueError(f"requirement {text!r}: unknown metric {metric!r} (metrics: "
                         + ", ".join(METRICS) + ")")
    if certified and budget is None:
        raise ValueError(f"requirement {text!r}: {metric} needs a budget, e.g. "
                         f"'{metric}@B=0.1 {op} {m.group('thr')}'")
    if not certified and budget is not None:
        raise ValueError(f"requirement {text!r}: @B= only applies to certified_return and "
                         "certified_qQ")
    return Requirement(text.strip(), metric, op, threshold, budget, quantile)


# ---------------------------------------------------------------------------- metric lookup
@dataclass(frozen=True)
class MetricValue:
    """A metric's value, what it is (``kind``) and where it came from (``source``)."""

    value: float
    kind: str
    source: str
    note: str = ""


def _get(d: Any, *path: Any) -> Any:
    for p in path:
        if isinstance(d, dict):
            d = d.get(p)
        elif isinstance(d, list) and isinstance(p, int) and -len(d) <= p < len(d):
            d = d[p]
        else:
            return None
    return d


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def _ci_level(summary: Any) -> str:
    lvl = _finite(_get(summary, "ci", "confidence_level"))
    return f"{100 * lvl:g}%" if lvl is not None else "95%"


def _ci_lower(summary: Any) -> float | None:
    """Lower end of ``summary.mean_ci``; ``None`` if absent or degenerate (fewer than 2
    episodes: the "interval" is the point estimate)."""
    if _get(summary, "ci", "method") == "degenerate":
        return None
    n = _get(summary, "n")
    if isinstance(n, int) and not isinstance(n, bool) and n < 2:
        return None
    return _finite(_get(summary, "mean_ci", 0))


def _returns(x: Any) -> list[float] | None:
    if not isinstance(x, list) or len(x) < 2:
        return None
    vals = [_finite(v) for v in x]
    return None if any(v is None for v in vals) else [float(v) for v in vals]  # type: ignore[arg-type]


def _bootstrap_lower(returns: list[float], seed: int) -> tuple[float, str]:
    """Lower end of the seeded 95% percentile-bootstrap CI of the mean, the interval that
    :func:`certrl.cli.returns_summary` stores (same estimator, same seed -> same number)."""
    import warnings

    from certrl.stats import interval_estimate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = interval_estimate(returns, "mean", seed=seed)
    return float(est.low), f"{100 * est.confidence_level:g}%"


def _seed(data: dict[str, Any], section: Any) -> int:
    for s in (_get(section, "seed"), _get(data, "evaluation", "seed")):
        if isinstance(s, int) and not isinstance(s, bool):
            return s
    return 0


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _certified(data: dict[str, Any], req: Requirement) -> MetricValue:
    cert = data.get("certificates")
    if not isinstance(cert, dict):
        raise GateConfigError("no certificates section; run `certrl certify`")
    rows = [r for r in cert.get("budgets") or [] if isinstance(r, dict)]
    budgets = [b for b in (_finite(r.get("budget")) for r in rows) if b is not None]
    assert req.budget is not None
    row = next((r for r in rows if _finite(r.get("budget")) is not None
                and _same(float(r["budget"]), req.budget)), None)
    if row is None:
        have = ", ".join(f"{b:g}" for b in sorted(budgets)) or "none"
        raise GateConfigError(f"no certificate at budget B={req.budget:g} (available budgets: "
                              f"{have}); use one of them or run `certrl certify --budgets ...`")
    alpha = _finite(cert.get("alpha"))
    conf = f"{100 * (1 - alpha):g}%" if alpha is not None else "1 - alpha"
    if req.quantile is None:
        v = _finite(row.get("expected_return_lower_bound"))
        if v is None:
            raise GateConfigError(f"no expected_return_lower_bound at B={req.budget:g}")
        return MetricValue(v, f"certified lower bound on E[R] under attack ({conf})",
                           f"certificates.budgets[B={req.budget:g}].expected_return_lower_bound")
    pct = row.get("percentile_lower_bounds") or {}
    hit = None
    for k, val in pct.items() if isinstance(pct, dict) else ():
        try:
            if _same(float(k), req.quantile):
                hit = (k, val)
                break
        except ValueError:
            continue
    if hit is None or _finite(hit[1]) is None:
        have = ", ".join(sorted(str(k) for k in pct)) if isinstance(pct, dict) else ""
        raise GateConfigError(f"no certified quantile q={req.quantile:g} at B={req.budget:g} "
                              f"(available quantiles: {have or 'none'}); run `certrl certify "
                              "--quantiles ...`")
    return MetricValue(float(hit[1]), f"certified lower bound on the q={req.quantile:g} quantile "
                       f"under attack ({conf})",
                       f"certificates.budgets[B={req.budget:g}].percentile_lower_bounds.{hit[0]}")


def _certified_fraction(data: dict[str, Any], req: Requirement) -> MetricValue:
    sec = data.get("bounds")
    if not isinstance(sec, dict):
        raise GateConfigError("no bounds section; run `certrl bound`")
    rows = [r for r in sec.get("curve") or [] if isinstance(r, dict)]
    assert req.eps is not None
    row = next((r for r in rows if _finite(r.get("eps")) is not None
                and _same(float(r["eps"]), req.eps)), None)
    if row is None:
        have = ", ".join(f"{float(r['eps']):g}" for r in rows
                         if _finite(r.get("eps")) is not None) or "none"
        raise GateConfigError(f"no per-step bound at eps={req.eps:g} (available: {have}); run "
                              f"`certrl bound --eps {req.eps:g}` or add it to --eps-grid")
    lo = _finite(_get(row, "certified_fraction", "ci", 0))
    if lo is None:
        raise GateConfigError(f"bounds.curve[eps={req.eps:g}] has no confidence interval")
    what = ("greedy action certified unchanged" if sec.get("discrete")
            else f"action deviation certified <= {sec.get('tol')}")
    return MetricValue(lo, f"lower end of the 95% episode-bootstrap CI of the fraction of "
                       f"visited states with the {what} ({sec.get('method')}, "
                       f"{sec.get('norm')} eps={req.eps:g}, {sec.get('space')})",
                       f"bounds.curve[eps={req.eps:g}].certified_fraction.ci[0]")


def _summary_lower(section: Any, path: str, what: str, hint: str) -> MetricValue:
    summary = _get(section, "summary")
    if not isinstance(summary, dict):
        raise GateConfigError(f"no {path.rsplit('.', 2)[0]} section; {hint}")
    v = _ci_lower(summary)
    if v is None:
        raise GateConfigError(f"{path}.mean_ci has no lower end (too few episodes?); {hint}")
    return MetricValue(v, f"lower end of the {_ci_level(summary)} CI of the {what}",
                       f"{path}.mean_ci[0]")


def _attack_results(attacks: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    res = attacks.get("results")
    if isinstance(res, dict):
        return [(str(k), v) for k, v in res.items() if isinstance(v, dict)]
    if isinstance(res, list):
        return [(str(v.get("name", f"#{i}")), v) for i, v in enumerate(res)
                if isinstance(v, dict)]
    return []


def _interval_lower(entry: dict[str, Any], where: str, what: str, seed: int) -> MetricValue | None:
    """The lower CI end of the mean return of one attack / stress cell: the stored
    ``summary.mean_ci`` (or ``mean_ci``), else a bootstrap CI of the stored ``returns``."""
    for summary, path in ((entry.get("summary"), "summary.mean_ci"), (entry, "mean_ci")):
        v = _ci_lower(summary)
        if v is not None:
            return MetricValue(v, f"lower end of the {_ci_level(summary)} CI of the mean return "
                               f"{what}", f"{where}.{path}[0]")
    rets = _returns(entry.get("returns"))
    if rets is None:
        return None
    v, level = _bootstrap_lower(rets, seed)
    return MetricValue(v, f"lower end of the {level} bootstrap CI of the mean return {what}",
                       f"{where}.returns (bootstrap, seed {seed})",
                       note="no CI stored; computed from the stored returns")


def _no_ci(what: str, hint: str) -> GateConfigError:
    return GateConfigError(f"{what} has no confidence interval (no mean_ci and fewer than 2 "
                           f"stored returns); the gate never compares a point estimate: {hint}")


def _attacks(data: dict[str, Any], req: Requirement) -> MetricValue:
    attacks = data.get("attacks")
    if not isinstance(attacks, dict):
        raise GateConfigError("no attacks section; run `certrl attack`")
    results = _attack_results(attacks)
    seed = _seed(data, attacks)
    hint = "rerun `certrl attack` with --episodes >= 2"
    if req.metric.startswith("attack:"):
        name = req.metric.split(":", 1)[1]
        hit = next((r for n, r in results if n == name), None)
        have = ", ".join(n for n, _ in results) or "none"
        if hit is None:
            raise GateConfigError(f"no attack named {name!r} (attacks in the file: {have})")
        mv = _interval_lower(hit, f"attacks.results.{name}", f"under attack '{name}'", seed)
        if mv is None:
            raise _no_ci(f"attack {name!r}", hint)
        return mv
    if not results:
        raise GateConfigError("the attacks section has no results; run `certrl attack`")
    values = []
    for n, r in results:
        mv = _interval_lower(r, f"attacks.results.{n}", f"under attack '{n}'", seed)
        if mv is None:  # the minimum over attacks needs every attack's lower bound
            raise _no_ci(f"attack {n!r}", hint)
        values.append(mv)
    worst = min(values, key=lambda mv: mv.value)
    return MetricValue(worst.value, f"minimum over {len(values)} attacks of the {worst.kind}",
                       worst.source, note=worst.note)


def _worst_case(data: dict[str, Any]) -> MetricValue:
    stress = data.get("stress")
    if not isinstance(stress, dict):
        raise GateConfigError("no stress section; run `certrl stress`")
    wc = stress.get("worst_case")
    kind = "lower confidence bound on the worst-case return over the stress set"
    if isinstance(wc, dict):
        if "degenerate" in (wc.get("method"), _get(wc, "ci", "method")):
            raise GateConfigError("stress.worst_case has a degenerate CI (one episode per "
                                  "point); rerun `certrl stress` with --episodes >= 2")
        lvl = _finite(wc.get("confidence_level"))
        level = f"{100 * lvl:g}%" if lvl is not None else (
            _ci_level(wc) if _get(wc, "ci") else _ci_level(wc.get("summary")))
        for path, v in (("stress.worst_case.lower", _get(wc, "lower")),
                        ("stress.worst_case.low", _get(wc, "low")),
                        ("stress.worst_case.mean_ci[0]", _get(wc, "mean_ci", 0)),
                        ("stress.worst_case.summary.mean_ci[0]",
                         _ci_lower(wc.get("summary")))):
            if _finite(v) is not None:
                return MetricValue(float(v), f"{kind} ({level} CI)", path)
    cells = stress.get("cells")
    if isinstance(cells, dict):
        cells = [{"name": k, **v} for k, v in cells.items() if isinstance(v, dict)]
    if isinstance(cells, list) and cells:
        seed = _seed(data, stress)
        values = []
        for i, cell in enumerate(c for c in cells if isinstance(c, dict)):
            label = str(cell.get("name", cell.get("values", i)))
            mv = _interval_lower(cell, f"stress.cells[{i}]", f"in stress cell {label}", seed)
            if mv is None:
                raise _no_ci(f"stress cell {label}", "rerun `certrl stress` with --episodes >= 2")
            values.append(mv)
        worst = min(values, key=lambda mv: mv.value)
        return MetricValue(worst.value, f"minimum over {len(values)} stress cells of the "
                           f"{worst.kind}", worst.source, note=worst.note)
    raise GateConfigError("the stress section has neither worst_case.lower nor per-cell "
                          "confidence intervals; rerun `certrl stress`")


def resolve_metric(data: dict[str, Any], req: Requirement) -> MetricValue:
    """The lower confidence bound named by ``req`` in a loaded results file.

    Raises :class:`GateConfigError` (exit code 2) when the section, the metric or the budget is
    missing, saying what to run or which budgets exist."""
    if req.eps is not None:
        return _certified_fraction(data, req)
    if req.budget is not None:
        return _certified(data, req)
    if req.metric == "clean_return":
        # the clean (unsmoothed, unattacked, nominal) run: `evaluate`/`certify` write
        # `evaluation`; `attack` and `stress` run the same episodes as their baseline
        for sec, path in (("evaluation", "evaluation.summary"),
                          ("attacks", "attacks.clean.summary"),
                          ("stress", "stress.nominal.summary")):
            base = data.get(sec) if sec == "evaluation" else _get(data, sec, path.split(".")[1])
            if isinstance(_get(base, "summary"), dict):
                return _summary_lower(base, path, "clean mean return", "run `certrl evaluate`")
        raise GateConfigError("no evaluation section; run `certrl evaluate`")
    if req.metric == "smoothed_return":
        return _summary_lower(_get(data, "certificates", "clean_smoothed"),
                              "certificates.clean_smoothed.summary",
                              "smoothed policy's clean mean return", "run `certrl certify`")
    if req.metric == "attack_min" or req.metric.startswith("attack:"):
        return _attacks(data, req)
    if req.metric == "worst_case_return":
        return _worst_case(data)
    raise GateConfigError(f"unknown metric {req.metric!r}")  # pragma: no cover - parsed before


# ---------------------------------------------------------------------------- evaluation
@dataclass
class Check:
    """One requirement on one results file: ``status`` is ``pass``, ``fail`` or ``error``;
    an error's ``error_kind`` is ``config`` (exit 2) or ``load`` (exit 3)."""

    requirement: Requirement
    file: str
    status: str
    value: float | None = None
    kind: str = ""
    source: str = ""
    note: str = ""
    error: str = ""
    error_kind: str = ""

    @property
    def message(self) -> str:
        r = self.requirement
        if self.status == "error":  # a load error already names the file
            return f"{r.text}: {self.error}" + ("" if self.error_kind == "load"
                                                 else f" ({self.file})")
        assert self.value is not None
        op = r.op if self.status == "pass" else NEGATION[r.op]
        msg = (f"{r.label} = {_num(self.value)} {op} {_num(r.threshold)}"
               + ("" if self.status == "pass" else f" (required {r.op} {_num(r.threshold)})")
               + f"; {self.kind}; {self.file}")
        return msg + (f"; note: {self.note}" if self.note else "")

    def to_json(self) -> dict[str, Any]:
        r = self.requirement
        return {
            "requirement": r.text, "metric": r.metric, "budget": r.budget, "quantile": r.quantile,
            "op": r.op, "threshold": r.threshold, "key": r.key, "file": self.file,
            "status": self.status, "passed": self.status == "pass", "value": self.value,
            "kind": self.kind, "source": self.source, "note": self.note or None,
            "error": self.error or None, "error_kind": self.error_kind or None,
            "message": self.message,
        }


@dataclass
class GateReport:
    """All checks of one ``certrl gate`` run."""

    checks: list[Check] = field(default_factory=list)
    warn_only: bool = False

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def errors(self) -> list[Check]:
        return [c for c in self.checks if c.status == "error"]

    @property
    def status(self) -> str:
        return "error" if self.errors else "fail" if self.failures else "pass"

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def exit_code(self) -> int:
        """3 a results file could not be loaded; else 2 a configuration error; else 1 a
        failed check (0 with ``warn_only``); else 0. Errors are never downgraded."""
        if any(c.error_kind == "load" for c in self.errors):
            return 3
        if self.errors:
            return 2
        if self.failures and not self.warn_only:
            return 1
        return 0

    def to_json(self) -> dict[str, Any]:
        return {
            "certrl_gate": 1, "status": self.status, "passed": self.passed,
            "exit_code": self.exit_code, "warn_only": self.warn_only,
            "checks_total": len(self.checks), "failures": len(self.failures),
            "errors": len(self.errors), "note": LOWER_BOUND_NOTE,
            "checks": [c.to_json() for c in self.checks],
        }


def evaluate(requirements: Sequence[Requirement], files: Sequence[str | Path],
             warn_only: bool = False) -> GateReport:
    """Check every requirement in every results file (an unreadable file or a missing
    metric gives ``error`` checks, not an exception)."""
    report = GateReport(warn_only=warn_only)
    for f in files:
        fname = str(f)
        try:
            data: dict[str, Any] | None = load_results(f)
            load_error = ""
        except ResultsError as e:
            data, load_error = None, str(e)
        except OSError as e:
            data, load_error = None, f"{fname}: cannot read ({e.strerror or e})"
        except (ValueError, TypeError) as e:  # e.g. a schema_version that is not a number
            data, load_error = None, f"{fname}: not a certrl results file ({e})"
        for req in requirements:
            if data is None:
                report.checks.append(Check(req, fname, "error", error=load_error,
                                           error_kind="load"))
                continue
            try:
                mv = resolve_metric(data, req)
            except GateConfigError as e:
                report.checks.append(Check(req, fname, "error", error=str(e),
                                           error_kind="config"))
                continue
            status = "pass" if req.holds(mv.value) else "fail"
            report.checks.append(Check(req, fname, status, mv.value, mv.kind, mv.source,
                                       mv.note))
    return report


# ---------------------------------------------------------------------------- outputs
def _num(x: float) -> str:
    return f"{x:.6g}" if abs(x) < 1e6 else f"{x:.6e}"


def console_lines(report: GateReport) -> list[str]:
    """The console verdict: a header, one line per check, a summary line."""
    lines = [f"certrl gate: {LOWER_BOUND_NOTE}."]
    for c in report.checks:
        tag = {"pass": "PASS ", "fail": "FAIL ", "error": "ERROR"}[c.status]
        if c.status == "fail" and report.warn_only:
            tag = "WARN "
        lines.append(f"{tag} {c.message}")
    n, nf, ne = len(report.checks), len(report.failures), len(report.errors)
    if ne:
        verdict = (f"ERROR: {ne} of {n} checks could not be evaluated "
                   f"(exit {report.exit_code})")
    elif nf:
        verdict = (f"FAILED: {nf} of {n} checks failed"
                   + (" (--warn-only: exit 0)" if report.warn_only else ""))
    else:
        verdict = f"PASSED: all {n} checks"
    lines.append(f"gate: {verdict}")
    return lines


def write_junit(report: GateReport, path: str | Path) -> None:
    """JUnit XML: ``<testsuites><testsuite name="certrl-gate">`` with one ``<testcase>`` per
    check; ``<failure>`` for a failed check, ``<error>`` for one that could not be evaluated."""
    n, nf, ne = len(report.checks), len(report.failures), len(report.errors)
    counts = {"tests": str(n), "failures": str(nf), "errors": str(ne), "skipped": "0",
              "time": "0"}
    root = ET.Element("testsuites", {"name": "certrl", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": "certrl-gate", **counts})
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", {"name": "warn_only", "value": str(report.warn_only).lower()})
    ET.SubElement(props, "property", {"name": "note", "value": LOWER_BOUND_NOTE})
    for c in report.checks:
        stem = Path(c.file).stem or c.file
        case = ET.SubElement(suite, "testcase", {
            "classname": f"certrl-gate.{stem}", "name": c.requirement.canonical,
            "file": c.file, "time": "0"})
        if c.status == "fail":
            el = ET.SubElement(case, "failure", {"message": c.message, "type": "GateFailure"})
            el.text = _details(c)
        elif c.status == "error":
            etype = "GateLoadError" if c.error_kind == "load" else "GateConfigError"
            el = ET.SubElement(case, "error", {"message": c.message, "type": etype})
            el.text = c.error
        else:
            ET.SubElement(case, "system-out").text = _details(c)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _details(c: Check) -> str:
    r = c.requirement
    rows = [f"requirement: {r.canonical}", f"value: {c.value!r}", f"threshold: {r.threshold!r}",
            f"kind: {c.kind}", f"source: {c.source}", f"file: {c.file}"]
    if c.note:
        rows.append(f"note: {c.note}")
    return "\n".join(rows)


def write_json(report: GateReport, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report.to_json(), indent=1) + "\n")


# ---------------------------------------------------------------------------- GitHub Actions
def escape_data(s: str) -> str:
    """Workflow-command message escaping (``%``, ``\\r``, ``\\n``), as @actions/core does."""
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    """Workflow-command property escaping: :func:`escape_data` plus ``:`` and ``,``."""
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def annotation(level: str, title: str, message: str) -> str:
    """``::level title=...::message`` with both parts escaped."""
    return f"::{level} title={escape_property(title)}::{escape_data(message)}"


def _output_lines(key: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        delim = f"ghadelimiter_{uuid.uuid4()}"
        while delim in value:  # pragma: no cover - astronomically unlikely
            delim = f"ghadelimiter_{uuid.uuid4()}"
        return f"{key}<<{delim}\n{value}\n{delim}\n"
    return f"{key}={value}\n"


def _md(s: str) -> str:
    """Plain text in a Markdown table cell: no line breaks, ``|`` and HTML neutralized."""
    s = s.replace("\r", " ").replace("\n", " ").replace("&", "&amp;")
    return s.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _code(s: str) -> str:
    """A code span in a table cell; the fence is longer than any backtick run inside."""
    s = s.replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def github_report(report: GateReport, env: Mapping[str, str] | None = None,
                  stdout: TextIO | None = None) -> bool:
    """On GitHub Actions (``GITHUB_ACTIONS=true`` in ``env``): annotations on ``stdout``, a
    Markdown table appended to ``$GITHUB_STEP_SUMMARY``, outputs appended to ``$GITHUB_OUTPUT``.

    Outputs: ``passed`` (``true``/``false``), ``status`` (``pass``/``fail``/``error``),
    ``failed`` (the failed/erroneous checks, one per line: multi-line value) and one
    ``<metric key>`` per requirement with its value (``certified_return_B_0_1=2612.3``;
    suffixed ``__<file stem>`` when several results files are checked). Returns whether it ran.
    """
    import sys

    env = os.environ if env is None else env
    if env.get("GITHUB_ACTIONS") != "true":
        return False
    out = stdout or sys.stdout
    for c in report.checks:
        r = c.requirement
        if c.status == "pass":
            level, title = "notice", f"certrl gate PASS: {r.canonical}"
        elif c.status == "fail":
            level = "warning" if report.warn_only else "error"
            title = f"certrl gate FAIL: {r.canonical}"
        else:
            level, title = "error", f"certrl gate ERROR: {r.text}"
        print(annotation(level, title, c.message), file=out)

    summary_path = env.get("GITHUB_STEP_SUMMARY")
    if summary_path:
        icon = {"pass": "✅ PASS", "fail": "❌ FAIL", "error": "⚠️ ERROR"}
        head = {"pass": "✅ passed", "fail": "❌ failed", "error": "⚠️ configuration error"}
        warn = " (--warn-only)" if report.warn_only and report.failures else ""
        md = [f"### certrl gate: {head[report.status]}{warn}", "",
              f"_{LOWER_BOUND_NOTE[0].upper() + LOWER_BOUND_NOTE[1:]}._", "",
              "| result | requirement | value | lower bound | file |",
              "| --- | --- | --- | --- | --- |"]
        for c in report.checks:
            val = "-" if c.value is None else _num(c.value)
            kind = c.kind if c.status != "error" else c.error
            md.append(f"| {icon[c.status]} | {_code(c.requirement.canonical)} | {val} | "
                      f"{_md(kind)} | {_code(c.file)} |")
        with open(summary_path, "a", encoding="utf-8") as f:
            f.write("\n".join(md) + "\n\n")

    output_path = env.get("GITHUB_OUTPUT")
    if output_path:
        multi = len({c.file for c in report.checks}) > 1
        pairs: dict[str, str] = {"passed": str(report.passed).lower(), "status": report.status}
        pairs["failed"] = "\n".join(c.message for c in report.checks if c.status != "pass")
        for c in report.checks:
            if c.value is None:
                continue
            key = c.requirement.key
            if multi:
                key += "__" + re.sub(r"[^A-Za-z0-9]+", "_", Path(c.file).stem).strip("_")
            pairs.setdefault(key, f"{c.value:.10g}")
        with open(output_path, "a", encoding="utf-8") as f:
            for k, v in pairs.items():
                f.write(_output_lines(k, v))
    return True
