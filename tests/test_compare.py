"""``certrl compare``: single files (episodes as samples) and groups of runs (rliable design)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from certrl.cli import main
from tests.test_report import synthetic_results


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _run(directory: Path, name: str, returns: list[float], env: str = "hopper",
         attack: float | None = None) -> Path:
    """One run: a results file whose clean evaluation returns are ``returns`` (and, with
    ``attack``, an attacks section whose only attack has that mean)."""
    sections = ("evaluation", "attacks") if attack is not None else ("evaluation",)
    d = synthetic_results(name, env=env, seed=0, sections=sections, gate=None)
    d["evaluation"]["returns"] = returns
    d["evaluation"].pop("summary")
    if attack is not None:
        d["attacks"]["results"] = {"pgd": {"mean": attack}}
        d["attacks"]["min"] = {"name": "pgd", "mean": attack}
    return _write(directory / f"{name}.json", d)


# ---------------------------------------------------------------------------- single files
def test_compare_table_and_probability_of_improvement(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    a = synthetic_results("good", seed=4)
    b = synthetic_results("bad", seed=5)
    a["evaluation"]["returns"] = [3000.0 + i for i in range(20)]
    b["evaluation"]["returns"] = [1000.0 + i for i in range(20)]
    for d in (a, b):
        d["evaluation"].pop("summary")  # recomputed from the returns
    pa, pb = _write(tmp_path / "a.json", a), _write(tmp_path / "b.json", b)
    assert main(["compare", str(pa), str(pb)]) == 0
    cap = capsys.readouterr()
    out = cap.out
    assert "good" in out and "bad" in out and "Hopper-v5" in out
    assert "3,009.5" in out and "1,009.5" in out  # clean means
    assert re.search(r"good\s+bad\s+1\.000\s+\[1\.000, 1\.000\]", out)
    assert "certified E[R] at B=0.4" in out
    # one file = one trained agent: always warned about (< 5 runs)
    assert cap.err.startswith("certrl: warning: each of good, bad is a single run")
    assert "fewer than 5 runs" in cap.err and "--group NAME FILE" in cap.err
    assert main(["compare", "--json", str(pb), str(pa)]) == 0
    js = json.loads(capsys.readouterr().out)
    (poi,) = js["probability_of_improvement"]
    assert poi["x"] == "bad" and poi["point"] == 0.0 and poi["high"] == 0.0
    assert js["policies"][0]["policy"] == "bad" and js["mode"] == "episodes"
    assert len(js["warnings"]) == 1


def test_compare_ties_and_overlap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = _run(tmp_path, "x", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    y = _run(tmp_path, "y", [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    z = _run(tmp_path, "z", [0.5, 3.5])
    assert main(["compare", "--json", str(x), str(y), str(z)]) == 0
    xy, xz, yz = json.loads(capsys.readouterr().out)["probability_of_improvement"]
    assert xy["point"] == 0.5 and xy["low"] < 0.5 < xy["high"]
    # P(x > z): 6 + ... pairs: 0.5 is beaten by all 6, 3.5 by 4, 5, 6 -> 9 / 12
    assert (xz["x"], xz["y"]) == ("x", "z") and xz["point"] == pytest.approx(0.75)
    assert yz["point"] == pytest.approx(0.75)


# ---------------------------------------------------------------------------- groups of runs
def test_compare_groups_uses_runs_as_samples(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # run means 1..5 vs 0.5 and 3.5: P(A > B) over runs = (5 + 2) / 10 = 0.7
    a = [_run(tmp_path / "a", f"a{i}", [float(i) - 0.1, float(i) + 0.1], attack=i / 2)
         for i in range(1, 6)]
    b = [_run(tmp_path / "b", f"b{i}", [m - 0.1, m + 0.1], attack=0.0)
         for i, m in enumerate((0.5, 3.5))]
    argv = ["compare", "--group", "A", *map(str, a), "--group", "B", *map(str, b)]
    assert main([*argv, "--json"]) == 0
    cap = capsys.readouterr()
    js = json.loads(cap.out)
    assert js["mode"] == "runs" and js["scores"] == "raw"
    assert [r for (r,) in js["run_scores"]["A"]] == pytest.approx([1.0, 2.0, 3.0, 4.0, 5.0])
    assert [r for (r,) in js["run_scores"]["B"]] == pytest.approx([0.5, 3.5])
    (poi,) = js["probability_of_improvement"]
    assert (poi["x"], poi["y"]) == ("A", "B") and poi["point"] == pytest.approx(0.7)
    assert 0.0 <= poi["low"] < 0.7 < poi["high"] <= 1.0
    iv = js["intervals"]["A"]
    assert iv["IQM"]["point"] == pytest.approx(3.0) and iv["mean"]["point"] == pytest.approx(3.0)
    assert iv["IQM"]["low"] < 3.0 < iv["IQM"]["high"]
    # only B (2 runs) is warned about
    assert js["warnings"] == [w for w in js["warnings"] if w.startswith("group B has 2 runs")]
    assert len(js["warnings"]) == 1
    assert cap.err.count("certrl: warning:") == 1 and "fewer than 5" in cap.err

    assert main(argv) == 0
    cap = capsys.readouterr()
    assert re.search(r"^A\s+5\s+Hopper-v5\s+3\.00 \[", cap.out, re.M)
    assert re.search(r"^B\s+2\s+Hopper-v5\s+2\.00 \[0\.500, 3\.50\]", cap.out, re.M)
    assert re.search(r"A\s+B\s+0\.700\s+\[", cap.out)
    assert "1.50 [" in cap.out  # A's strongest-attack means 0.5..2.5 average 1.5
    assert main(argv) == 0  # deterministic
    assert capsys.readouterr().out == cap.out


def test_compare_groups_several_environments_normalized(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    from certrl.stats import REFERENCE_SCORES

    ref = REFERENCE_SCORES["CartPole-v1"]
    hop = REFERENCE_SCORES["Hopper-v5"]
    good = [_run(tmp_path, "g-hop", [hop.reference] * 3),
            _run(tmp_path, "g-cp", [ref.reference] * 3, env="cartpole")]
    bad = [_run(tmp_path, "b-hop", [hop.random] * 3),
           _run(tmp_path, "b-cp", [ref.random] * 3, env="cartpole")]
    assert main(["compare", "--json", "--group", "good", *map(str, good),
                 "--group", "bad", *map(str, bad)]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["scores"] == "normalized"
    # tasks sorted: CartPole-v1, Hopper-v5; normalized 1 (reference) and 0 (random)
    assert js["run_scores"] == {"good": [[1.0, 1.0]], "bad": [[0.0, 0.0]]}
    assert js["intervals"]["good"]["optimality gap"]["point"] == pytest.approx(0.0)
    assert js["intervals"]["bad"]["optimality gap"]["point"] == pytest.approx(1.0)
    assert js["probability_of_improvement"][0]["point"] == 1.0


def test_compare_group_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h1 = _run(tmp_path, "h1", [1.0, 2.0])
    h2 = _run(tmp_path, "h2", [1.0, 2.0])
    c1 = _run(tmp_path, "c1", [1.0, 2.0], env="cartpole")
    bare = synthetic_results("bare", seed=0, sections=("certificates",))
    pb = _write(tmp_path / "bare.json", bare)
    cases = [
        (["--group", "A", str(h1), "--group", "B", str(c1)], "every group needs runs on the same"),
        (["--group", "A", str(h1), str(c1), "--group", "B", str(h2), str(c1), str(c1)],
         "same number of runs"),
        (["--group", "A", str(h1), "--group", "A", str(h2)], "given twice"),
        (["--group", "A"], "has no files"),
        (["--group", "A", str(h1), str(h2)], "at least two groups"),
        (["--group", "A", str(h1), "--group", "B", str(pb)], "no clean evaluation returns"),
        ([str(h1)], "at least two results files"),
    ]
    for argv, msg in cases:
        assert main(["compare", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert msg in err and err.startswith("certrl: error:"), (argv, err)
        assert len(err.splitlines()) == 1, err
    # a positional file next to groups is its own group (one run)
    assert main(["compare", "--json", str(c1), "--group", "A", str(h1), str(h2)]) == 2
    capsys.readouterr()
    assert main(["compare", "--json", str(h2), "--group", "A", str(h1)]) == 0
    js = json.loads(capsys.readouterr().out)
    assert [g["group"] for g in js["groups"]] == ["A", "h2"]
