"""The README's examples run as written: the API example, the custom environment and the ONNX
walk-through (blocks marked ``<!-- readme-test: ... -->``)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from certrl.cli import main
from certrl.results import load_results

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"<!-- readme-test: (\w+)(?: (\S+))? -->\n```[a-z]*\n(.*?)```", re.S)


def _blocks() -> list[tuple[str, str | None, str]]:
    return [(m.group(1), m.group(2), m.group(3)) for m in _BLOCK.finditer(README.read_text())]


def test_readme_marks_the_examples():
    kinds = [k for k, _, _ in _blocks()]
    assert kinds.count("python") >= 2 and "shell" in kinds and "file" in kinds


def test_readme_examples_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnx")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as the CLI does for --env point_mass:...
    blocks = _blocks()
    for kind, name, body in blocks:
        if kind == "file":
            (tmp_path / str(name)).write_text(body)
    for kind, _, body in blocks:
        if kind == "python":
            exec(compile(body, "README.md", "exec"), {"__name__": "readme"})
    text = capsys.readouterr().out
    assert "With probability >= 95%" in text  # the API example printed its statement
    for kind, _, body in blocks:
        if kind != "shell":
            continue
        for line in body.strip().splitlines():
            argv = shlex.split(line.split("  #")[0])
            assert argv[0] == "certrl"
            assert main([*argv[1:], "--workers", "1"] if argv[1] != "policy-info"
                        else argv[1:]) == 0, line
    out = capsys.readouterr().out
    assert "onnx" in out
    data = load_results(tmp_path / "results" / "point_mass-PointMass_actor.json")
    cert = data["certificates"]
    # the controller holds the point near the origin: most of the 100 steps earn ~1
    assert cert["clean_unsmoothed"]["summary"]["mean"] > 80
    assert 0 < cert["budgets"][1]["expected_return_lower_bound"] <= 100
    assert {"certificates", "attacks", "bounds"} <= set(data)
