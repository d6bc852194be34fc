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
                                the clean mean)
``smoothed_return``             lower end of ``certificates.clean_smoothed.summary.mean_ci``
``attack_min``                  minimum over ``attacks.results`` of the lower CI end of each
                                attack's mean return (an attack without a stored CI counts with
                                its mean, and ``attacks.min.mean`` is used only when no result
                                is stored; the output then says "point estimate")
``attack:NAME``                 lower CI end of one attack's mean return
``worst_case_return``           ``stress.worst_case.lower`` (written by ``certrl stress``)
==============================  =============================================================

A certified metric needs ``@B=``; a budget that is not in the file, a missing section or
metric, or an unreadable results file is a configuration error. Every requirement is checked in
every results file given.

Exit codes (:func:`GateReport.exit_code`): 0 every check passed; 1 a check failed (a robustness
regression); 2 usage/configuration error (bad requirement syntax, missing section, metric or
budget, unreadable file) -- it takes precedence over 1, because the gate could not be
evaluated; 3 unexpected error (from :func:`certrl.cli.main`). ``--warn-only`` reports failures
(as warnings on GitHub) but exits 0; configuration errors still exit 2: a gate that cannot be
evaluated is not a passing gate.

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
           "attack_min", "attack:NAME", "worst_case_return")
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

    @property
    def label(self) -> str:
        """The metric with its budget, e.g. ``certified_return@B=0.1``."""
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
    budget = quantile = None
    if m.group("bname") is not None:
        if m.group("bname") != "B":
            raise ValueError(f"requirement {text!r}: unknown qualifier "
                             f"'@{m.group('bname')}=' (only @B=budget)")
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
    point_estimate: bool = False
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
    return _finite(_get(summary, "mean_ci", 0))


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


def _attack_value(name: str, res: dict[str, Any]) -> MetricValue | None:
    for summary, where in ((res.get("summary"), "summary.mean_ci"), (res, "mean_ci")):
        v = _ci_lower(summary)
        if v is not None:
            return MetricValue(v, f"lower end of the {_ci_level(summary)} CI of the mean return "
                               f"under attack '{name}'", f"attacks.results.{name}.{where}[0]")
    mean = _finite(_get(res, "summary", "mean"))
    if mean is None:
        mean = _finite(res.get("mean"))
    if mean is None:
        return None
    return MetricValue(mean, f"mean return under attack '{name}' (point estimate: no CI "
                       "stored)", f"attacks.results.{name}.mean", point_estimate=True,
                       note="no confidence interval stored for this attack; the point estimate "
                       "is used")


def _attacks(data: dict[str, Any], req: Requirement) -> MetricValue:
    attacks = data.get("attacks")
    if not isinstance(attacks, dict):
        raise GateConfigError("no attacks section; run `certrl attack`")
    results = _attack_results(attacks)
    if req.metric.startswith("attack:"):
        name = req.metric.split(":", 1)[1]
        hit = next((r for n, r in results if n == name), None)
        have = ", ".join(n for n, _ in results) or "none"
        if hit is None:
            raise GateConfigError(f"no attack named {name!r} (attacks in the file: {have})")
        mv = _attack_value(name, hit)
        if mv is None:
            raise GateConfigError(f"attack {name!r} has no mean or CI")
        return mv
    values = [mv for mv in (_attack_value(n, r) for n, r in results) if mv is not None]
    if values:
        worst = min(values, key=lambda mv: mv.value)
        return MetricValue(worst.value, "minimum over attacks of the " + worst.kind,
                           worst.source, worst.point_estimate, worst.note)
    mean = _finite(_get(attacks, "min", "mean"))
    if mean is None:
        raise GateConfigError("the attacks section has no results; run `certrl attack`")
    name = _get(attacks, "min", "name")
    return MetricValue(mean, f"mean return under the strongest attack '{name}' (point "
                       "estimate: no CI stored)", "attacks.min.mean", point_estimate=True,
                       note="the attacks section stores no confidence interval; attacks.min.mean "
                       "(a point estimate) is used")


def _worst_case(data: dict[str, Any]) -> MetricValue:
    stress = data.get("stress")
    if not isinstance(stress, dict):
        raise GateConfigError("no stress section; run certrl stress")
    wc = stress.get("worst_case")
    for path, v in (("stress.worst_case.lower", _get(wc, "lower")),
                    ("stress.worst_case.mean_ci[0]", _get(wc, "mean_ci", 0)),
                    ("stress.worst_case.summary.mean_ci[0]", _get(wc, "summary", "mean_ci", 0))):
        if _finite(v) is not None:
            return MetricValue(float(v), "lower confidence bound on the worst-case return over "
                               "the stress grid", path)
    raise GateConfigError("the stress section has no worst_case.lower; rerun certrl stress")


def resolve_metric(data: dict[str, Any], req: Requirement) -> MetricValue:
    """The lower confidence bound named by ``req`` in a loaded results file.

    Raises :class:`GateConfigError` (exit code 2) when the section, the metric or the budget is
    missing, saying what to run or which budgets exist."""
    if req.budget is not None:
        return _certified(data, req)
    if req.metric == "clean_return":
        return _summary_lower(data.get("evaluation"), "evaluation.summary",
                              "clean mean return", "run `certrl evaluate`")
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
    """One requirement on one results file: ``status`` is ``pass``, ``fail`` or ``error``."""

    requirement: Requirement
    file: str
    status: str
    value: float | None = None
    kind: str = ""
    source: str = ""
    note: str = ""
    error: str = ""

    @property
    def message(self) -> str:
        r = self.requirement
        if self.status == "error":
            return f"{r.text}: {self.error} ({self.file})"
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
            "kind": self.kind, "source": self.source, "point_estimate": "point estimate"
            in self.kind, "note": self.note or None, "error": self.error or None,
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
        """0 pass; 1 fail (0 with ``warn_only``); 2 configuration error (even with
        ``warn_only``)."""
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
        for req in requirements:
            if data is None:
                report.checks.append(Check(req, fname, "error", error=load_error))
                continue
            try:
                mv = resolve_metric(data, req)
            except GateConfigError as e:
                report.checks.append(Check(req, fname, "error", error=str(e)))
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
        verdict = f"ERROR: {ne} of {n} checks could not be evaluated (exit 2)"
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
            el = ET.SubElement(case, "error", {"message": c.message, "type": "GateConfigError"})
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
    return s.replace("|", "\\|").replace("\n", " ")


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
            md.append(f"| {icon[c.status]} | `{_md(c.requirement.canonical)}` | {val} | "
                      f"{_md(kind)} | `{_md(c.file)}` |")
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
