"""`certrl gate`: requirement parsing, metrics (always lower confidence bounds), exit codes 0-3,
JUnit/JSON/GitHub outputs with escaping. Hand-written results files follow the schemas of
`certify` (certificates), `evaluate` (evaluation), `attack` (report/model.py `_attack_list`)
and `stress`. The sequential `certify --fail-under` and the docs' CI examples run end to end in
tests/test_certify_sequential.py."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from certrl.cli import main
from certrl.gate import (
    GateConfigError,
    escape_data,
    escape_property,
    parse_requirement,
    resolve_metric,
)
from certrl.results import SCHEMA_VERSION
from certrl.stats import interval_estimate

SPREAD = [float(d) for d in range(-190, 200, 20)]  # 20 returns around the mean, std 118


def _summary(mean: float, lo: float, hi: float) -> dict[str, Any]:
    return {"n": 100, "mean": mean, "std": 10.0, "mean_ci": [lo, hi], "iqm": mean,
            "iqm_ci": [lo, hi], "min": lo - 50, "max": hi + 50,
            "ci": {"confidence_level": 0.95, "method": "percentile"}}


def results_dict(cert: float = 2612.3, attack_ci: bool = True, stress: bool = False,
                 attacks: bool = True) -> dict[str, Any]:
    """A Hopper-like results file in the schema of certrl.results / certify."""
    budgets = []
    for b, drop in ((0.0, 0.0), (0.1, 1.0), (0.2, 1.4)):
        v = cert - (drop - 1.0) * 300 if b else cert + 500
        budgets.append({"budget": b, "per_step_eps": b / 1000 ** 0.5,
                        "expected_return_lower_bound": v,
                        "percentile_lower_bounds": {"0.1": v - 900, "0.25": v - 400,
                                                    "0.5": v + 100},
                        "attack": None})
    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "created": "2025-01-01T00:00:00+00:00",
        "commands": ["certrl certify model.zip --env hopper"],
        "env": {"id": "Hopper-v5", "alias": "hopper", "return_bounds": [-5000.0, 10000.0]},
        "policy": {"path": "model.zip", "sha256": "ab" * 32},
        "evaluation": {"episodes": 100, "summary": _summary(3200.0, 3100.0, 3290.0)},
        "certificates": {"sigma": 0.2, "alpha": 0.05, "episodes": 1000, "budgets": budgets,
                         "clean_smoothed": {"summary": _summary(3000.0, 2950.0, 3050.0)}},
    }
    if attacks:
        res = {}
        for name, mean in (("random", 3100.0), ("mad", 2000.0), ("critic", 1700.0)):
            rets = [mean + d for d in SPREAD]
            r: dict[str, Any] = {"config": {"eps": 0.075}, "returns": rets}
            if attack_ci:
                r["summary"] = _summary(mean, mean - 150.0, mean + 150.0)
            else:
                r["mean"] = mean
            res[name] = r
        data["attacks"] = {"results": res, "min": {"name": "critic", "mean": 1700.0}}
    if stress:
        data["stress"] = {"worst_case": {"lower": 1234.5, "mean": 1400.0}}
    return data


def write(tmp: Path, name: str = "hopper.json", **kw: Any) -> Path:
    p = tmp / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(results_dict(**kw)))
    return p


@pytest.fixture(autouse=True)
def _no_github(monkeypatch):
    for k in ("GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(k, raising=False)


def gate(*args: str) -> int:
    return main(["gate", *args])


# ---------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("text,metric,op,thr,budget,q", [
    ("certified_return@B=0.1 >= 2500", "certified_return", ">=", 2500, 0.1, None),
    ("certified_return@B=0.10>=2.5e3", "certified_return", ">=", 2500, 0.1, None),
    ("  certified_q0.1 @ B = 0.2 > -10 ", "certified_q0.1", ">", -10, 0.2, 0.1),
    ("attack_min >= 1500", "attack_min", ">=", 1500, None, None),
    ("attack:pgd-l2.v2 < 3000", "attack:pgd-l2.v2", "<", 3000, None, None),
    ("clean_return<=.5", "clean_return", "<=", 0.5, None, None),
    ("smoothed_return > 0", "smoothed_return", ">", 0, None, None),
    ("worst_case_return >= 100", "worst_case_return", ">=", 100, None, None),
])
def test_parse_requirement(text, metric, op, thr, budget, q):
    r = parse_requirement(text)
    assert (r.metric, r.op, r.threshold, r.budget, r.quantile) == (metric, op, thr, budget, q)


def test_requirement_key():
    assert parse_requirement("certified_return@B=0.1 >= 1").key == "certified_return_B_0_1"
    assert parse_requirement("attack:mad >= 1").key == "attack_mad"


@pytest.mark.parametrize("text,msg", [
    ("certified_return@B=0.1", "no comparison operator"),
    ("certified_return@B=0.1 == 5", "not supported"),
    ("certified_return@B=0.1 >= lots", "not a number"),
    ("certified_return@B=0.1 >= 2,500", "not a number"),
    ("certified_return >= 5", "needs a budget"),
    ("certified_return@B=x >= 5", "budget 'x' is not a number"),
    ("certified_return@eps=0.1 >= 5", "unknown qualifier"),
    ("clean_return@B=0.1 >= 5", "@B= only applies"),
    ("certified_q1.5@B=0.1 >= 5", "quantile must be in (0, 1)"),
    ("mean_return >= 5", "unknown metric"),
    ("", "expected METRIC"),
])
def test_parse_errors(text, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        parse_requirement(text)


def test_syntax_error_exits_2(tmp_path, capsys):
    f = write(tmp_path)
    assert gate(str(f), "--require", "certified_return >= 5") == 2
    assert "needs a budget" in capsys.readouterr().err
    assert gate(str(f)) == 2  # --require is required


# ---------------------------------------------------------------------------- metrics
def test_metrics_are_lower_confidence_bounds():
    data = results_dict(stress=True)
    val = lambda t: resolve_metric(data, parse_requirement(t + " >= 0"))  # noqa: E731
    assert val("certified_return@B=0.1").value == 2612.3
    assert val("certified_return@B=0").value == 3112.3
    assert val("certified_q0.25@B=0.2").value == pytest.approx(2612.3 - 120 - 400)
    assert val("clean_return").value == 3100.0
    assert val("smoothed_return").value == 2950.0
    m = val("attack_min")
    assert m.value == 1550.0 and "critic" in m.kind and "minimum over 3 attacks" in m.kind
    assert val("attack:mad").value == 1850.0
    assert val("worst_case_return").value == 1234.5
    assert "lower end of the 95% CI" in val("clean_return").kind


def test_attack_ci_from_stored_returns_never_a_point_estimate():
    from certrl.pipeline.job import returns_summary

    data = results_dict(attack_ci=False)
    data["attacks"]["seed"] = 7
    m = resolve_metric(data, parse_requirement("attack_min >= 0"))
    critic = [1700.0 + d for d in SPREAD]
    expect = interval_estimate(critic, "mean", seed=7).low
    # the same number certrl itself stores for these returns (returns_summary, seed 7)
    assert m.value == pytest.approx(expect, abs=1e-9)
    assert m.value == pytest.approx(returns_summary(critic, 7)["mean_ci"][0], abs=1e-9)
    assert 1700.0 - 80 < m.value < 1700.0 - 20  # about mean - 1.96 * 118 / sqrt(20) = 1648
    assert "bootstrap CI" in m.kind and "critic" in m.kind and m.note
    assert m.source == "attacks.results.critic.returns (bootstrap, seed 7)"
    # neither a CI nor >= 2 returns: a configuration error, not the stored mean
    data["attacks"]["results"]["mad"]["returns"] = [2000.0]
    with pytest.raises(GateConfigError, match="attack 'mad' has no confidence interval"):
        resolve_metric(data, parse_requirement("attack_min >= 0"))
    with pytest.raises(GateConfigError, match="never compares a point estimate"):
        resolve_metric(data, parse_requirement("attack:mad >= 0"))
    data["attacks"] = {"min": {"name": "critic", "mean": 1650.0}}
    with pytest.raises(GateConfigError, match="attacks section has no results"):
        resolve_metric(data, parse_requirement("attack_min >= 0"))


def test_attack_results_as_a_list_and_degenerate_ci():
    data = results_dict()
    data["attacks"]["results"] = [{"name": n, **r} for n, r in
                                  data["attacks"]["results"].items()]
    assert resolve_metric(data, parse_requirement("attack:mad >= 0")).value == 1850.0
    # a stored CI from a single episode is degenerate (= the point estimate): refused
    data = results_dict()
    data["evaluation"]["summary"]["ci"]["method"] = "degenerate"
    with pytest.raises(GateConfigError, match="mean_ci has no lower end"):
        resolve_metric(data, parse_requirement("clean_return >= 0"))


def test_worst_case_return_readers():
    req = parse_requirement("worst_case_return >= 0")
    data = results_dict()
    data["stress"] = {"worst_case": {"summary": _summary(900.0, 850.0, 950.0)}}
    mv = resolve_metric(data, req)
    assert mv.value == 850.0 and mv.source == "stress.worst_case.summary.mean_ci[0]"
    # per-cell results: the minimum over cells of each cell's lower CI end
    data["stress"] = {"seed": 3, "cells": [
        {"values": {"torso_mass": 0.5}, "summary": _summary(1200.0, 1100.0, 1300.0)},
        {"values": {"torso_mass": 1.5}, "returns": [1000.0 + d for d in SPREAD]},
        {"values": {"torso_mass": 1.0}, "mean_ci": [1500.0, 1600.0]},
    ]}
    mv = resolve_metric(data, req)
    assert mv.value == pytest.approx(
        interval_estimate([1000.0 + d for d in SPREAD], "mean", seed=3).low, abs=1e-9)
    assert mv.source.startswith("stress.cells[1].returns") and "3 stress cells" in mv.kind
    data["stress"]["cells"][1]["returns"] = [5.0]
    with pytest.raises(GateConfigError, match="stress cell .*torso_mass.*1.5"):
        resolve_metric(data, req)
    data["stress"] = {"grid": {"mean": [[1.0]]}}
    with pytest.raises(GateConfigError, match="neither worst_case.lower nor per-cell"):
        resolve_metric(data, req)


@pytest.mark.parametrize("req,kw,msg", [
    ("certified_return@B=0.3 >= 0", {}, "available budgets: 0, 0.1, 0.2"),
    ("certified_q0.05@B=0.1 >= 0", {}, "available quantiles: 0.1, 0.25, 0.5"),
    ("attack:fgsm >= 0", {}, "attacks in the file: random, mad, critic"),
    ("attack_min >= 0", {"attacks": False}, "no attacks section; run `certrl attack`"),
    ("worst_case_return >= 0", {}, "no stress section; run `certrl stress`"),
])
def test_missing_metric_is_a_config_error(req, kw, msg):
    with pytest.raises(GateConfigError, match=re.escape(msg)):
        resolve_metric(results_dict(**kw), parse_requirement(req))


# ---------------------------------------------------------------------------- exit codes
def test_exit_codes(tmp_path, capsys, monkeypatch):
    f = str(write(tmp_path))
    assert gate(f, "-r", "certified_return@B=0.1 >= 2500", "-r", "attack_min >= 1500") == 0
    out = capsys.readouterr().out
    assert "never a point estimate" in out and "PASSED: all 2 checks" in out
    assert re.search(r"PASS +certified_return@B=0.1 = 2612.3 >= 2500; certified lower bound", out)

    assert gate(f, "-r", "certified_return@B=0.1 >= 2500", "-r", "attack_min >= 1600") == 1
    out = capsys.readouterr().out
    assert re.search(r"FAIL +attack_min = 1550 < 1600 \(required >= 1600\)", out)
    assert "FAILED: 1 of 2 checks failed" in out

    # configuration errors (2): missing budget, no stress section
    assert gate(f, "-r", "certified_return@B=0.3 >= 1") == 2
    assert "available budgets: 0, 0.1, 0.2" in capsys.readouterr().out
    assert gate(f, "-r", "worst_case_return >= 1") == 2
    io = capsys.readouterr()
    assert "no stress section; run `certrl stress`" in io.out
    assert io.err.startswith("certrl: error: worst_case_return >= 1: no stress section")
    # a config error takes precedence over a failure
    assert gate(f, "-r", "clean_return >= 1e9", "-r", "worst_case_return >= 1") == 2

    # load errors (3): missing file, invalid JSON, not a results file, a directory
    assert gate(str(tmp_path / "nope.json"), "-r", "clean_return >= 1") == 3
    io = capsys.readouterr()
    assert "no such results file" in io.err and "(exit 3)" in io.out
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert gate(str(bad), "-r", "clean_return >= 1") == 3
    bad.write_text('{"schema_version": "x"}')
    assert gate(str(bad), "-r", "clean_return >= 1") == 3
    assert "not a certrl results file" in capsys.readouterr().err
    assert gate(str(tmp_path), "-r", "clean_return >= 1") == 3
    # ... and wins over a configuration error and a failure in another file
    assert gate(f, str(bad), "-r", "clean_return >= 1e9", "-r", "worst_case_return >= 1") == 3
    assert gate(f, str(bad), "-r", "clean_return >= 1", "--warn-only") == 3

    # an unexpected exception: exit 3
    import certrl.gate as G

    def boom(*a: Any, **k: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(G, "resolve_metric", boom)
    assert gate(f, "-r", "clean_return >= 1") == 3
    assert "internal error" in capsys.readouterr().err


def test_warn_only(tmp_path, capsys):
    f = str(write(tmp_path))
    assert gate(f, "-r", "certified_return@B=0.1 >= 9999", "--warn-only") == 0
    out = capsys.readouterr().out
    assert "WARN  certified_return@B=0.1 = 2612.3 < 9999" in out and "--warn-only: exit 0" in out
    # configuration errors are never downgraded
    assert gate(f, "-r", "certified_return@B=0.7 >= 1", "--warn-only") == 2


def test_multiple_files_junit_and_json(tmp_path, capsys):
    good = write(tmp_path / "a", "good.json", cert=2612.3)
    weak = write(tmp_path / "b", "weak.json", cert=2400.0)
    junit, js = tmp_path / "gate.xml", tmp_path / "gate.json"
    rc = gate(str(good), str(weak), "-r", "certified_return@B=0.1 >= 2500",
              "-r", "clean_return >= 3000", "--junit", str(junit), "--json", str(js))
    assert rc == 1
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "certrl-gate"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "1", "0")
    cases = suite.findall("testcase")
    assert len(cases) == 4
    assert {c.get("classname") for c in cases} == {"certrl-gate.good", "certrl-gate.weak"}
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == 1 and failed[0].get("classname") == "certrl-gate.weak"
    assert failed[0].get("name") == "certified_return@B=0.1 >= 2500"
    msg = failed[0].find("failure").get("message")
    assert "certified_return@B=0.1 = 2400 < 2500 (required >= 2500)" in msg
    assert "weak.json" in msg and "value: 2400.0" in failed[0].find("failure").text

    rep = json.loads(js.read_text())
    assert rep["status"] == "fail" and rep["exit_code"] == 1 and rep["passed"] is False
    assert len(rep["checks"]) == 4 and rep["failures"] == 1
    bad = [c for c in rep["checks"] if not c["passed"]]
    assert bad[0]["value"] == 2400.0 and bad[0]["threshold"] == 2500.0
    assert bad[0]["key"] == "certified_return_B_0_1" and bad[0]["file"] == str(weak)

    # errors become <error> elements, typed by kind
    assert gate(str(good), str(tmp_path / "missing.json"), "-r", "clean_return >= 1",
                "-r", "certified_return@B=0.3 >= 1", "--junit", str(junit)) == 3
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("4", "0", "3")
    errs = {(c.get("classname"), c.get("name")): c.find("error") for c in suite}
    load = errs[("certrl-gate.missing", "clean_return >= 1")]
    assert load.get("type") == "GateLoadError" and "no such results file" in load.get("message")
    conf = errs[("certrl-gate.good", "certified_return@B=0.3 >= 1")]
    assert conf.get("type") == "GateConfigError" and "available budgets" in conf.text
    assert errs[("certrl-gate.good", "clean_return >= 1")] is None


# ---------------------------------------------------------------------------- GitHub Actions
def test_workflow_command_escaping():
    assert escape_data("100% done\r\nnext: a,b") == "100%25 done%0D%0Anext: a,b"
    assert escape_property("t: a,b%\n") == "t%3A a%2Cb%25%0A"


def _read_outputs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            key, delim = line.split("<<", 1)
            j = lines.index(delim, i + 1)
            out[key] = "\n".join(lines[i + 1 : j])
            i = j + 1
        elif "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
            i += 1
        else:
            i += 1
    return out


def test_github_outputs(tmp_path, capsys, monkeypatch):
    d = tmp_path / "odd: dir, 100%"  # a path that needs escaping in annotations
    f = str(write(d))
    summary, output = tmp_path / "summary.md", tmp_path / "output.txt"
    summary.write_text("earlier step\n")
    output.write_text("earlier=1\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    rc = gate(f, "-r", "certified_return@B=0.1 >= 2500", "-r", "attack_min >= 1600",
              "-r", "attack:mad >= 1000")
    assert rc == 1
    out = capsys.readouterr().out

    ann = [ln for ln in out.splitlines() if ln.startswith("::")]
    assert len(ann) == 3
    err = next(a for a in ann if a.startswith("::error "))
    assert err.startswith("::error title=certrl gate FAIL%3A attack_min >= 1600::")
    assert "attack_min = 1550 < 1600" in err
    assert "odd: dir, 100%25" in err  # message: % escaped, ':' and ',' kept
    assert "\n" not in err and "100% " not in err
    assert sum(a.startswith("::notice title=certrl gate PASS%3A ") for a in ann) == 2

    md = summary.read_text()
    assert md.startswith("earlier step\n")
    assert "### certrl gate: ❌ failed" in md
    assert "| ❌ FAIL | `attack_min >= 1600` | 1550 |" in md
    assert "| ✅ PASS | `certified_return@B=0.1 >= 2500` | 2612.3 |" in md

    outs = _read_outputs(output.read_text())
    assert outs["earlier"] == "1"
    assert outs["passed"] == "false" and outs["status"] == "fail"
    assert outs["certified_return_B_0_1"] == "2612.3"
    assert outs["attack_min"] == "1550" and outs["attack_mad"] == "1850"
    assert outs["failed"].startswith("attack_min = 1550 < 1600")
    assert "\n" not in outs["failed"]

    # multi-line value (two failures) uses the heredoc form; --warn-only gives ::warning
    output.write_text("")
    rc = gate(f, "-r", "attack_min >= 1600", "-r", "clean_return >= 4000", "--warn-only")
    assert rc == 0
    text = output.read_text()
    assert re.search(r"^failed<<ghadelimiter_[0-9a-f-]+$", text, re.M)
    outs = _read_outputs(text)
    assert len(outs["failed"].split("\n")) == 2
    out = capsys.readouterr().out
    assert out.count("::warning title=certrl gate FAIL%3A") == 2 and "::error" not in out


def test_github_outputs_multiple_files(tmp_path, capsys, monkeypatch):
    a, b = write(tmp_path, "run-a.json"), write(tmp_path, "run-b.json", cert=100.0)
    output = tmp_path / "output.txt"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    assert gate(str(a), str(b), "-r", "certified_return@B=0.1 >= 0") == 0
    outs = _read_outputs(output.read_text())
    assert outs["certified_return_B_0_1__run_a"] == "2612.3"
    assert outs["certified_return_B_0_1__run_b"] == "100"
    assert outs["passed"] == "true" and outs["failed"] == ""


def test_step_summary_escapes_markdown(tmp_path, capsys):
    import io

    from certrl.gate import evaluate, github_report

    d = tmp_path / "a|b`c <x>"
    f = write(d)
    rep = evaluate([parse_requirement("clean_return >= 4000")], [f])
    summary, output = tmp_path / "s.md", tmp_path / "o.txt"
    buf = io.StringIO()
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
           "GITHUB_OUTPUT": str(output)}
    assert github_report(rep, env=env, stdout=buf)
    assert not github_report(rep, env={"GITHUB_ACTIONS": "false"}, stdout=buf)
    row = next(ln for ln in summary.read_text().splitlines() if ln.startswith("| ❌"))
    # the path's '|' cannot split the row, its backtick cannot close the code span
    assert f"``{str(f).replace('|', chr(92) + '|')}``" in row
    assert row.count(" | ") == 4  # 5 cells: only the 4 separators are unescaped
    assert "&lt;" not in row  # inside a code span '<' stays literal
    # one annotation, on one line, with ':' and ',' escaped only in the title
    (line,) = buf.getvalue().splitlines()
    assert line.startswith("::error title=certrl gate FAIL%3A clean_return >= 4000::")
    assert "clean_return = 3100 < 4000 (required >= 4000); lower end of the 95% CI" not in line
    assert "clean_return = 3100 < 4000 (required >= 4000); lower end of the 95%25 CI" in line


def test_clean_return_falls_back_to_the_attack_or_stress_baseline():
    req = parse_requirement("clean_return >= 0")
    data = results_dict()
    del data["evaluation"]
    data["attacks"]["clean"] = {"summary": _summary(3150.0, 3050.0, 3250.0)}
    mv = resolve_metric(data, req)
    assert mv.value == 3050.0 and mv.source == "attacks.clean.summary.mean_ci[0]"
    del data["attacks"]
    data["stress"] = {"nominal": {"summary": _summary(3000.0, 2900.0, 3100.0)}}
    assert resolve_metric(data, req).source == "stress.nominal.summary.mean_ci[0]"
    del data["stress"]
    with pytest.raises(GateConfigError, match="no evaluation section"):
        resolve_metric(data, req)


def test_stress_section_schema_of_certrl_stress():
    """`certrl stress` writes worst_case = {mean, lower, upper, mean_ci, confidence_level,
    method, ...}: a bootstrap CI of min over points of the mean (certrl/dynamics.py
    summarize_cells); its `lower` is the gate's value, even if a cell's own CI is lower."""
    data = results_dict()
    data["stress"] = {"cells": [{"values": {"torso_mass": 0.5}, "mean": 900.0,
                                 "mean_ci": [700.0, 1100.0]}],
                      "worst_case": {"mean": 900.0, "lower": 820.0, "upper": 990.0,
                                     "mean_ci": [820.0, 990.0], "confidence_level": 0.9,
                                     "method": "percentile", "index": 0}}
    mv = resolve_metric(data, parse_requirement("worst_case_return >= 0"))
    assert mv.value == 820.0 and mv.source == "stress.worst_case.lower"
    assert mv.kind.endswith("(90% CI)")
    data["stress"]["worst_case"]["method"] = "degenerate"
    with pytest.raises(GateConfigError, match="degenerate CI"):
        resolve_metric(data, parse_requirement("worst_case_return >= 0"))


def test_gate_on_a_real_attack_results_file(tmp_path, capsys):
    """`certrl attack` output (the other command's real schema) gated as is."""
    out = tmp_path / "res"
    assert main(["attack", "demo:cartpole", "--env", "cartpole", "--attack", "random",
                 "--eps", "0.2", "--episodes", "6", "--workers", "1", "--out", str(out)]) == 0
    f = out / "CartPole-v1_cartpole.json"
    att = json.loads(f.read_text())["attacks"]
    lower = att["results"]["random"]["summary"]["mean_ci"][0]
    assert lower < att["results"]["random"]["summary"]["mean"]
    capsys.readouterr()
    assert gate(str(f), "-r", f"attack_min >= {lower}", "-r", "attack:random > 0",
                "-r", "clean_return >= 1") == 0
    assert gate(str(f), "-r", f"attack_min >= {lower + 1e-6}") == 1
    out_text = capsys.readouterr().out
    assert f"attack_min = {lower:.6g} < {lower + 1e-6:.6g}" in out_text
