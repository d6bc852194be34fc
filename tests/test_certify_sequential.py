"""`certrl certify --fail-under` (sequential, early stopping) end to end through
`certrl.cli.main`, with resume from the journal, and the CI examples of docs/ci.md (and of the
README's "CI gate" section, if it has any) run as written against the demo CartPole policy."""

from __future__ import annotations

import json
import re
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

import certrl.backends
from certrl.certificates import expected_return_certificate
from certrl.cli import main
from certrl.results import load_results
from tests.test_gate import _read_outputs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = "CartPole-v1_cartpole.json"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    import torch

    torch.set_num_threads(1)
    for k in ("GITHUB_ACTIONS", "GITHUB_OUTPUT", "GITHUB_STEP_SUMMARY"):
        monkeypatch.delenv(k, raising=False)
    # the commands as written use all cores; results do not depend on the worker count
    # (tests/test_evaluator.py), and one in-process worker keeps this file fast
    monkeypatch.setattr(certrl.backends, "default_workers", lambda: 1)


def certify(out: Path, threshold: float, episodes: int = 200, *extra: str) -> int:
    return main(["certify", "demo:cartpole", "--env", "cartpole", "--sigma", "0.2", "--budget",
                 "0.1", "--episodes", str(episodes), "--fail-under", str(threshold),
                 "--no-attack", "--workers", "1", "--out", str(out), *extra])


def test_fail_under_pass_fail_undecided(tmp_path, capsys):
    out = tmp_path / "res"
    res = out / RESULTS

    assert certify(out, 5) == 0  # clearly certified: stops at the first look
    c = load_results(res)["certificates"]
    seq = c["sequential"]
    assert seq["decision"] == "PASS" and seq["episodes_used"] == 100 and seq["fixed_m"] == 200
    assert seq["savings"] == pytest.approx(0.5)
    assert c["episodes"] == 100 and len(c["smoothed_returns"]) == 100
    assert c["gate"]["passed"] and c["gate"]["value"] >= 5
    assert seq["alpha_schedule"] == pytest.approx([0.025, 0.025])  # Bonferroni over 2 looks
    assert c["band"]["alpha"] == pytest.approx(0.025) and c["alpha"] == 0.05
    # the reported certificate is the fixed-m certificate of the 100 episodes at alpha_k
    assert c["budgets"][0]["expected_return_lower_bound"] == pytest.approx(float(
        expected_return_certificate(c["smoothed_clipped_returns"], 0.2, 0.1, 0.025, 1.0)))
    assert seq["looks"][0]["lower_bound"] == c["gate"]["value"]
    text = capsys.readouterr().out
    assert "sequential: PASS at look 1 of 2 after 100 of 200 episodes, 2.0x fewer" in text
    assert "gate: PASS" in text
    cert = c["gate"]["value"]
    assert not any((out / ".journal").glob("*.certificates.*"))  # journal removed when done

    # the gate on the same file: a passing and a failing requirement
    assert main(["gate", str(res), "-r", f"certified_return@B=0.1 >= {cert - 1}"]) == 0
    assert main(["gate", str(res), "-r", f"certified_return@B=0.1 >= {cert + 1}"]) == 1
    capsys.readouterr()

    assert certify(out, 400) == 1  # impossible (upper bound < 400): FAIL at the first look
    c = load_results(res)["certificates"]
    assert c["sequential"]["decision"] == "FAIL" and c["episodes"] == 100
    assert c["gate"]["upper_bound"] < 400 and not c["gate"]["passed"]
    assert c["gate"]["value"] == pytest.approx(cert)  # same episodes, same alpha_k
    assert "gate: FAIL: certified return" in capsys.readouterr().out

    # in between: both looks run (the second only runs the new episodes), then undecided
    assert certify(out, 30) == 1
    c = load_results(res)["certificates"]
    seq = c["sequential"]
    assert seq["decision"] == "UNDECIDED" and [lk["episodes"] for lk in seq["looks"]] == [100, 200]
    assert c["throughput"]["steps"] == sum(c["smoothed_lengths"])  # each episode ran once
    assert seq["looks"][-1]["lower_bound"] < 30 <= seq["looks"][-1]["upper_bound"]
    assert seq["looks"][0]["lower_bound"] < seq["looks"][1]["lower_bound"]
    assert seq["episodes_used"] == 200 and seq["savings"] == 0.0
    assert "gate: FAIL (undecided)" in capsys.readouterr().out

    # bad threshold: a usage error
    assert certify(out, float("nan")) == 2
    assert "--fail-under must be a finite number" in capsys.readouterr().err


def test_fail_under_resume_after_interruption(tmp_path, capsys, monkeypatch):
    from certrl.certificates import sequential

    ref_out, out = tmp_path / "ref", tmp_path / "res"
    rc_ref = certify(ref_out, 30, 400)
    ref = load_results(ref_out / RESULTS)["certificates"]
    assert [lk["episodes"] for lk in ref["sequential"]["looks"]][:2] == [100, 200]

    real_update = sequential.SequentialCertifier.update
    calls = {"n": 0}

    def interrupted(self: Any, returns: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # Ctrl-C right after the episodes of look 2 were journaled
            raise KeyboardInterrupt
        return real_update(self, returns)

    monkeypatch.setattr(sequential.SequentialCertifier, "update", interrupted)
    assert certify(out, 30, 400) == 130
    assert "--resume" in capsys.readouterr().err
    assert not (out / RESULTS).exists()
    (journal,) = (out / ".journal").glob("*.certificates.*.jsonl")
    assert len(journal.read_text().splitlines()) == 1 + 200  # header + the 200 episodes
    monkeypatch.setattr(sequential.SequentialCertifier, "update", real_update)

    assert certify(out, 30, 400, "--resume") == rc_ref
    got = load_results(out / RESULTS)["certificates"]
    assert got["sequential"] == ref["sequential"]  # same looks, bounds and decision
    assert got["smoothed_returns"] == ref["smoothed_returns"]
    assert got["budgets"] == ref["budgets"]
    # only the episodes after look 2 ran again
    used = got["sequential"]["episodes_used"]
    assert got["throughput"]["steps"] == sum(ref["smoothed_lengths"][200:used])


# ---------------------------------------------------------------------------- docs examples
def _yaml_blocks(path: Path, heading: str | None = None) -> list[str]:
    text = path.read_text()
    if heading is not None:
        if heading not in text:
            return []
        text = text[text.index(heading):]
        nxt = text.find("\n## ", len(heading))
        text = text if nxt < 0 else text[:nxt]
    return re.findall(r"```ya?ml\n(.*?)```", text, re.S)


def ci_commands(block: str) -> list[tuple[str, int, str]]:
    """``(command, expected exit code, step id)`` for every certrl command of a CI config, in
    order (``step id``: the GitHub step's ``id:``, else "").

    A unit is a GitHub step (``- name:`` / ``- run:`` / ``- uses:``) or a GitLab job (a
    top-level key). Units marked ``continue-on-error: true`` (GitHub) or ``allow_failure``
    (GitLab) must end with exit code 1 (their last certrl command); every other command must
    exit 0."""
    units: list[list[str]] = []
    for line in block.splitlines():
        if re.match(r"^\S[^:]*:\s*$", line) or re.match(r"^\s+- (name|run|uses):", line):
            units.append([])
        if units:
            units[-1].append(line)
    out: list[tuple[str, int, str]] = []
    for unit in units:
        text = "\n".join(unit)
        may_fail = "continue-on-error: true" in text or "allow_failure" in text
        sid = m.group(1) if (m := re.search(r"^\s+id:\s*(\S+)", text, re.M)) else ""
        cmds = [m.group(1).strip() for ln in unit
                if (m := re.match(r"\s*(?:-\s+)?(?:run:\s+)?(certrl \S+ .*)$", ln))]
        out += [(c, 1 if may_fail and i == len(cmds) - 1 else 0, sid)
                for i, c in enumerate(cmds)]
    return out


def test_ci_command_extraction():
    gh = ("steps:\n  - name: a\n    id: g\n    run: certrl gate x -r \"a >= 1\"\n"
          "  - name: b\n    continue-on-error: true\n    run: certrl gate x -r \"a >= 9\"\n")
    assert ci_commands(gh) == [('certrl gate x -r "a >= 1"', 0, "g"),
                               ('certrl gate x -r "a >= 9"', 1, "")]
    gl = ("job:\n  script:\n    - certrl certify p --env e\n    - certrl gate r -r q\n"
          "bad:\n  allow_failure:\n    exit_codes: [1]\n  script:\n"
          "    - certrl certify p --env e\n    - certrl gate r -r z\n")
    assert ci_commands(gl) == [("certrl certify p --env e", 0, ""), ("certrl gate r -r q", 0, ""),
                               ("certrl certify p --env e", 0, ""), ("certrl gate r -r z", 1, "")]


def _run_ci_config(block: str, cwd: Path, monkeypatch: Any) -> dict[str, str]:
    cmds = ci_commands(block)
    assert any(c.startswith("certrl certify") for c, _, _ in cmds)
    assert any(rc == 1 for _, rc, _ in cmds) and any(
        c.startswith("certrl gate") and rc == 0 for c, rc, _ in cmds)
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    github = "steps:" in block
    if github:  # GitHub Actions: the outputs the workflow reads must be written
        monkeypatch.setenv("GITHUB_ACTIONS", "true")
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(cwd / "summary.md"))
    outputs: dict[str, str] = {}
    last_certify = None
    for i, (cmd, expect, sid) in enumerate(cmds):
        if cmd.startswith("certrl certify") and cmd == last_certify:
            continue  # a job repeating the same certify step: same file, same numbers
        output = cwd / f"github_output_{i}.txt"  # one file per step, as on GitHub
        monkeypatch.setenv("GITHUB_OUTPUT", str(output))
        assert main(shlex.split(cmd)[1:]) == expect, cmd
        if cmd.startswith("certrl certify"):
            last_certify = cmd
        if sid == "gate":
            outputs = _read_outputs(output.read_text())
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    if github:
        assert "certrl gate: ✅ passed" in (cwd / "summary.md").read_text()
    for key in re.findall(r"steps\.gate\.outputs\.([A-Za-z0-9_]+)", block):
        assert key in outputs, key
    root = ET.parse(cwd / "gate.xml").getroot()
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "certrl-gate"
    return outputs


def test_docs_ci_examples_run_as_written(tmp_path, monkeypatch, capsys):
    blocks = _yaml_blocks(ROOT / "docs" / "ci.md")
    assert len(blocks) == 2  # GitHub Actions, GitLab CI
    gh = _run_ci_config(blocks[0], tmp_path / "github", monkeypatch)
    assert gh["passed"] == "true" and float(gh["certified_return_B_0_1"]) >= 10
    js = json.loads((tmp_path / "github" / "gate.json").read_text())
    assert js["status"] == "pass" and len(js["checks"]) == 2
    _run_ci_config(blocks[1], tmp_path / "gitlab", monkeypatch)
    # the GitLab failing job wrote its JUnit file last: one failure with the numbers
    case = ET.parse(tmp_path / "gitlab" / "gate.xml").getroot().find("testsuite/testcase")
    assert case is not None and case.get("name") == "certified_return@B=0.1 >= 400"
    msg = case.find("failure").get("message")
    assert re.match(r"certified_return@B=0.1 = [\d.]+ < 400 \(required >= 400\)", msg)
    capsys.readouterr()


def test_readme_ci_examples_run_as_written(tmp_path, monkeypatch, capsys):
    blocks = _yaml_blocks(ROOT / "README.md", "\n## CI gate")
    if not blocks:
        pytest.skip("the README has no CI examples (docs/ci.md holds them)")
    docs = _yaml_blocks(ROOT / "docs" / "ci.md")
    for i, block in enumerate(blocks):
        if block in docs:
            continue  # identical to a docs example, run above
        _run_ci_config(block, tmp_path / f"readme{i}", monkeypatch)
    capsys.readouterr()
