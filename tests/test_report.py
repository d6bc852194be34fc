"""``certrl report`` and ``certrl compare`` on synthetic results files (no policies run)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from certrl.cli import main
from certrl.results import SCHEMA_VERSION

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PDFTOPPM = shutil.which("pdftoppm")


# ---------------------------------------------------------------------------- synthetic data
def _summary(r: np.ndarray) -> dict[str, Any]:
    from certrl.report.model import summarize

    return summarize(np.asarray(r, dtype=float))


def synthetic_results(
    name: str = "hopper-ppo",
    env: str = "hopper",
    seed: int = 0,
    scale: float = 1.0,
    sections: tuple[str, ...] = ("evaluation", "certificates", "attacks"),
    gate: float | None = 1500.0,
    stress: bool = False,
) -> dict[str, Any]:
    """A results file with Hopper-like (or CartPole-like) numbers: clean ~3200 with a few falls,
    attacks from mild (random noise) to strong, a certificate curve under the attacked return."""
    rng = np.random.default_rng(seed)
    hopper = env == "hopper"
    env_json = ({"alias": "hopper", "id": "Hopper-v5", "kwargs": {}, "horizon": 1000,
                 "step_reward_bounds": [-5.0, 10.0], "bounds_kind": "clip",
                 "return_bounds": [-5000.0, 10000.0], "default_eps": 0.075} if hopper else
                {"alias": "cartpole", "id": "CartPole-v1", "kwargs": {}, "horizon": 500,
                 "step_reward_bounds": [1.0, 1.0], "bounds_kind": "exact",
                 "return_bounds": [1.0, 500.0], "default_eps": None})
    hi = 3300.0 * scale if hopper else 500.0 * scale
    lo_b = env_json["return_bounds"][0]

    def returns(mean: float, n: int, fall: float = 0.08) -> np.ndarray:
        r = rng.normal(mean, 0.06 * hi, n)
        falls = rng.random(n) < fall
        r[falls] = rng.uniform(0.15 * hi, 0.5 * hi, falls.sum())
        return np.clip(r, 1.0, hi * 1.05 if hopper else 500.0).round(2)

    data: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "created": "2025-03-01T10:00:00+00:00",
        "updated": f"2025-03-0{1 + seed % 8}T12:34:56+00:00",
        "versions": {"python": "3.11.9", "certrl": "0.1.0", "torch": "2.13.0",
                     "gymnasium": "1.4.0", "mujoco": "3.3.0", "numpy": "2.4.6"},
        "commands": [f"certrl evaluate {name}.zip --env {env} --episodes 100",
                     f"certrl certify {name}.zip --env {env} --sigma 0.2 --episodes 200"],
        "env": env_json,
        "policy": {"spec": f"{name}.zip", "path": f"/models/{name}.zip",
                   "sha256": f"{seed:02d}" + "ab34" * 15 + "cd", "format": "sb3",
                   "algorithm": "PPO", "summary": {"obs_dim": 11, "act_dim": 3}},
    }
    clean = returns(0.95 * hi, 100)
    if "evaluation" in sections:
        data["evaluation"] = {"seed": seed, "episodes": 100, "deterministic": True,
                              "returns": clean.tolist(), "lengths": [1000] * 100,
                              "summary": _summary(clean),
                              "throughput": {"steps": 100000, "seconds": 12.5}}
    if "certificates" in sections:
        sm = returns(0.88 * hi, 200, fall=0.12)
        budgets = []
        for b in (0.0, 0.05, 0.1, 0.2, 0.4):
            bound = float(np.mean(sm) - (0.25 + 2.2 * b) * hi * 0.6)
            att = None
            if b > 0:
                ar = returns((0.86 - 0.5 * b) * hi, 50, fall=0.12 + b / 2)
                att = {"name": "smoothed-pgd", "mean": float(ar.mean()), "episodes": 50,
                       "summary": _summary(ar), "returns": ar.tolist(),
                       "config": {"steps": 10}}
            budgets.append({
                "budget": b, "per_step_eps": b / math.sqrt(env_json["horizon"]),
                "expected_return_lower_bound": max(bound, lo_b),
                "percentile_lower_bounds": {"0.1": max(bound - 0.35 * hi, lo_b),
                                            "0.25": max(bound - 0.15 * hi, lo_b),
                                            "0.5": max(bound + 0.05 * hi, lo_b)},
                "attack": att})
        last = budgets[-1]["expected_return_lower_bound"]
        data["certificates"] = {
            "sigma": 0.2, "space": "normalized", "alpha": 0.05, "episodes": 200, "seed": seed,
            "horizon": env_json["horizon"], "smoothed_returns": sm.tolist(),
            "reward_lower_bound": lo_b, "reward_upper_bound": env_json["return_bounds"][1],
            "bounds_kind": env_json["bounds_kind"], "clipped_steps": 0,
            "band": {"method": "dkw-massart-one-sided", "epsilon": 0.0865},
            "clean_smoothed": {"summary": _summary(sm)},
            "clean_unsmoothed": {"summary": _summary(clean), "episodes": 100},
            "budgets": budgets,
            "statement": (f"With probability >= 95% over certrl's sampling, for every adversary "
                          "that perturbs observations adaptively with total l2 norm <= 0.4 over "
                          "the episode (normalized observation space), the smoothed policy's "
                          f"expected return is >= {last:,.2f}."),
            "per_state": None,
            "gate": None if gate is None else {"threshold": gate, "budget": 0.4, "value": last,
                                               "passed": last >= gate},
        }
    if "attacks" in sections:
        results = {}
        for aname, frac in (("random", 0.93), ("mad", 0.7), ("critic", 0.55),
                            ("optimal", 0.35)):
            ar = returns(frac * hi, 50, fall=0.1 + (1 - frac) / 3)
            s = _summary(ar)
            results[aname] = {"summary": s, "returns": ar.tolist(), "kind": "obs",
                              "config": {"name": aname, "eps": 0.075, "steps": 10,
                                         "norm": "linf"},
                              "drop_mean": float(clean.mean() - ar.mean()),
                              "audit": {"obs_linf_max": 0.075 * frac, "obs_l2_max": 0.2}}
        strongest = min(results, key=lambda k: results[k]["summary"]["mean"])
        data["attacks"] = {
            "threat": {"eps": 0.075, "norm": "linf", "space": "normalized",
                       "episode_budget": None, "eps_bar": None},
            "clean": {"summary": _summary(clean), "returns": clean.tolist()},
            "results": results,
            "min": {"name": strongest, "mean": results[strongest]["summary"]["mean"]},
        }
    if stress:
        data["stress"] = synthetic_stress(hi, [0.5, 0.75, 1.0, 1.25, 1.5], [0.5, 1.0, 1.5, 2.0])
    return data


def synthetic_stress(hi: float, v1: list[float], v2: list[float] | None = None,
                     grid: bool = True) -> dict[str, Any]:
    """A ``stress`` section as ``certrl stress`` writes it (scale factors of torso_mass and
    friction; ``v2=None``: torso_mass only): cells, worst case, average, nominal, and the
    ``grid`` block for two parameters unless ``grid=False``."""
    names = ["torso_mass"] + (["friction"] if v2 is not None else [])
    pts = [(a, b) for a in v1 for b in (v2 if v2 is not None else [None])]

    def f(a: float, b: float | None) -> float:
        return hi * math.exp(-((a - 1) ** 2 + ((b or 1.0) - 1) ** 2 / 2))

    cells = [{"values": dict(zip(names, [a, b] if b is not None else [a], strict=True)),
              "mean": f(a, b), "mean_ci": [f(a, b) - 50, f(a, b) + 50]} for a, b in pts]
    w = min(range(len(cells)), key=lambda i: cells[i]["mean"])
    sec: dict[str, Any] = {
        "design": "grid", "episodes": 10,
        "params": [{"name": n, "low": 0.5, "high": 1.5, "mode": "scale", "nominal": 1.0}
                   for n in names],
        "nominal": {"summary": {"mean": hi, "mean_ci": [hi - 40, hi + 40]}},
        "cells": cells,
        "worst_case": {"index": w, "values": cells[w]["values"], "mean": cells[w]["mean"],
                       "lower": cells[w]["mean"] - 80, "upper": cells[w]["mean"] + 30,
                       "mean_ci": [cells[w]["mean"] - 80, cells[w]["mean"] + 30]},
        "average": {"mean": float(np.mean([c["mean"] for c in cells])), "lower": 1.0,
                    "upper": 2.0, "mean_ci": [1.0, 2.0]},
        "uncertainty_set": None, "grid": None,
    }
    if grid and v2 is not None:
        sec["grid"] = {"params": ["torso_mass (scale)", "friction (scale)"],
                       "names": names, "values1": v1, "values2": v2,
                       "mean": [[f(a, b) for b in v2] for a in v1], "nominal": [1.0, 1.0]}
    return sec


def write_synthetic(directory: Path, name: str = "hopper-ppo", **kw: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    p = directory / f"{name}.json"
    p.write_text(json.dumps(synthetic_results(name, **kw), indent=1))
    return p


def write_synthetic_set(directory: Path) -> list[Path]:
    """Three Hopper policies (a robust one, a plain one, one with evaluation only)."""
    return [
        write_synthetic(directory, "hopper-robust", seed=1, stress=True),
        write_synthetic(directory, "hopper-ppo", seed=2, scale=0.9, gate=2000.0),
        write_synthetic(directory, "hopper-sac", seed=3, scale=0.8, sections=("evaluation",)),
    ]


# ---------------------------------------------------------------------------- fixtures
SINGLE_FIGS = ("certificate", "smoothed-quantiles", "attacks", "distributions", "stress")


def _fig_ids(html: str) -> list[str]:
    return re.findall(r'<svg id="(fig-[^"]+)"', html)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("report")
    single = write_synthetic(d / "in", "hopper-robust", seed=1, stress=True)
    multi = write_synthetic_set(d / "multi")
    assert main(["report", str(single), "-o", str(d / "single.html"),
                 "-o", str(d / "single.pdf")]) == 0
    assert main(["report", *map(str, multi), "-o", str(d / "multi.html"),
                 "-o", str(d / "multi.pdf")]) == 0
    return {"dir": d, "single": single, "multi_dir": d / "multi"}


# ---------------------------------------------------------------------------- HTML / PDF content
def test_single_html_has_every_figure_and_section(rendered: dict[str, Path]) -> None:
    html = (rendered["dir"] / "single.html").read_text()
    ids = _fig_ids(html)
    assert html.count("<svg") == len(ids) == len(SINGLE_FIGS)
    for f in SINGLE_FIGS:
        assert f"fig-hopper-robust-hopper-v5-{f}" in ids
    for text in ("Verdict", "Certified return", "Attacks", "Return distributions",
                 "Dynamics stress test", "Provenance", "Glossary", "FAIL: certified return",
                 "optimal", "budget B (ℓ2 over the episode, normalized obs)", "return",
                 "sha256", "certrl certify hopper-robust.zip", "Smoothing σ",
                 # budget audit (largest per-step perturbation) and configuration columns
                 "<td>ℓ∞ 0.0525</td><td class=\"wrap\">eps=0.075, steps=10, norm=linf</td>",
                 "(must be ≤ ε = 0.075)"):
        assert text in html, text
    assert len(set(re.findall(r' id="([^"]+)"', html))) == len(re.findall(r' id="', html))


def test_multi_html_compares_policies_and_states_missing_sections(
        rendered: dict[str, Path]) -> None:
    html = (rendered["dir"] / "multi.html").read_text()
    ids = _fig_ids(html)
    for f in ("intervals", "profiles", "poi"):
        assert f"fig-comparison-{f}" in ids
    # two full files (certificate, quantiles, attacks, distributions), one evaluation-only file
    # (distributions), one stress grid, three comparison figures
    assert len(ids) == 2 * 4 + 1 + 1 + 3
    assert "no certificate in this file: run <code>certrl certify hopper-sac.zip --env hopper" \
        in html
    assert "no attack results in this file: run <code>certrl attack hopper-sac.zip" in html
    assert "P(X &gt; Y)" in html and "Probability of improvement" in html
    assert "is a single run (one trained agent; fewer than 5 runs)" in html


@pytest.mark.parametrize("name", ["single.html", "multi.html"])
def test_html_is_self_contained(rendered: dict[str, Path], name: str) -> None:
    html = (rendered["dir"] / name).read_text()
    low = html.lower()
    assert "http" not in low and "<script" not in low and "src=" not in low
    assert "@import" not in low and "<link" not in low
    assert "@media print" in html and 'name="viewport"' in html


def test_reports_are_deterministic(rendered: dict[str, Path], tmp_path: Path) -> None:
    """Same inputs, same bytes, in a fresh process with another hash seed (set and dict order,
    matplotlib's constraint solver) and with the inputs in another directory."""
    import sys

    again = write_synthetic_set(tmp_path / "again")
    single = write_synthetic(tmp_path / "single", "hopper-robust", seed=1, stress=True)
    script = ("import sys; from certrl.cli import main; "
              "sys.exit(main(sys.argv[1:2] + sys.argv[2:]))")
    for inputs, name in (([single], "single"), (again, "multi")):
        res = subprocess.run(
            [sys.executable, "-c", script, "report", *map(str, inputs),
             "-o", str(tmp_path / f"{name}.html"), "-o", str(tmp_path / f"{name}.pdf")],
            capture_output=True, text=True, timeout=300,
            env={**os.environ, "PYTHONHASHSEED": "12345", "MPLBACKEND": "Agg"})
        assert res.returncode == 0, res.stderr[-2000:]
        for ext in ("html", "pdf"):
            assert (tmp_path / f"{name}.{ext}").read_bytes() == \
                (rendered["dir"] / f"{name}.{ext}").read_bytes(), (name, ext)


def test_pdf_metadata_has_no_dates(rendered: dict[str, Path]) -> None:
    data = (rendered["dir"] / "single.pdf").read_bytes()
    assert data.startswith(b"%PDF")
    assert b"/CreationDate" not in data and b"/ModDate" not in data


def _pdf_pages(pdf: Path, out: Path) -> list[Path]:
    out.mkdir(exist_ok=True)
    subprocess.run([PDFTOPPM, "-r", "30", "-png", str(pdf), str(out / "p")], check=True,
                   timeout=120)
    return sorted(out.glob("p-*.png"))


@pytest.mark.skipif(PDFTOPPM is None, reason="pdftoppm (Debian poppler-utils) is not installed: "
                    ".ci/run installs it")
def test_pdf_pages_render(rendered: dict[str, Path], tmp_path: Path) -> None:
    from certrl.report import build
    from certrl.report.pdf import _items, paginate

    for name, inputs in (("single", [rendered["single"]]),
                         ("multi", write_synthetic_set(tmp_path / "in"))):
        expected = len(paginate(_items(build(inputs))))
        pages = _pdf_pages(rendered["dir"] / f"{name}.pdf", tmp_path / name)
        assert len(pages) == expected >= (4 if name == "single" else 8)
        assert all(p.stat().st_size > 1000 for p in pages)
    text = subprocess.run(["pdftotext", str(rendered["dir"] / "multi.pdf"), "-"],
                          capture_output=True, text=True, check=True).stdout
    for t in ("Verdict", "Certified return", "Probability of improvement", "Glossary",
              "no certificate in this file"):
        assert t in text


# ---------------------------------------------------------------------------- headless Chromium
def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr",
           "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(tmp)})


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines()
            if ":CONSOLE" in line or "Uncaught" in line or "Failed to load resource" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian "
                    "package chromium; .ci/run installs it)")
def test_chromium_renders_html_without_console_errors(rendered: dict[str, Path],
                                                      tmp_path: Path) -> None:
    # the check itself works: a broken page is reported
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom'); nope();</script></body></html>")
    assert _console_errors(_chromium(["--dump-dom", bad.as_uri()], tmp_path).stderr)

    html_path = rendered["dir"] / "multi.html"
    expected = _fig_ids(html_path.read_text())
    res = _chromium(["--dump-dom", html_path.as_uri()], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert not _console_errors(res.stderr)
    dom = res.stdout
    assert sorted(re.findall(r'<svg id="(fig-[^"]+)"', dom)) == sorted(expected)
    for width in (412, 1280):  # phone and desktop
        shot = tmp_path / f"shot-{width}.png"
        res = _chromium(["--hide-scrollbars", f"--window-size={width},3000",
                         f"--screenshot={shot}", html_path.as_uri()], tmp_path)
        assert res.returncode == 0 and not _console_errors(res.stderr)
        from PIL import Image

        with Image.open(shot) as im:
            assert im.size == (width, 3000)
            assert len(im.convert("L").getcolors(256) or []) > 20  # not a blank page


# ---------------------------------------------------------------------------- bad input
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    good = write_synthetic(tmp_path, "ok", seed=0)
    notjson = tmp_path / "x.json"
    notjson.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    cases = [
        (["report", str(tmp_path / "missing.json"), "-o", str(tmp_path / "r.html")],
         "no such results file"),
        (["report", str(notjson), "-o", str(tmp_path / "r.html")], "not a certrl results file"),
        (["report", str(other), "-o", str(tmp_path / "r.pdf")], "not a certrl results file"),
        (["report", str(good), "-o", str(tmp_path / "r.docx")], "unknown report format"),
        (["report", str(good), "-o", str(tmp_path / "nodir" / "r.html")], "does not exist"),
        (["report", str(good)], "required"),
        (["compare", str(good)], "at least two"),
        (["compare", str(good), str(notjson)], "not a certrl results file"),
    ]
    if os.geteuid() != 0:  # root may write anywhere
        cases.append((["report", str(good), "-o", str(ro / "r.html")], "not writable"))
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert msg in err, (argv, err)
        assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "r.html").exists()


def test_report_of_evaluation_only_file(tmp_path: Path) -> None:
    p = write_synthetic(tmp_path, "bare", seed=0, sections=("evaluation",), gate=None)
    out = tmp_path / "bare.html"
    assert main(["report", str(p), "-o", str(out)]) == 0
    html = out.read_text()
    assert _fig_ids(html) == ["fig-bare-hopper-v5-distributions"]
    assert "no certificate in this file: run <code>certrl certify bare.zip --env hopper" in html
    assert "no attack results in this file" in html


# ---------------------------------------------------------------------------- stress layouts
def test_stress_section_layouts(tmp_path: Path) -> None:
    from certrl.report.figures import stress_figure
    from certrl.report.html import render_svg
    from certrl.report.model import _stress_grid, read_policy_results

    v1, v2 = [0.5, 1.0, 1.5], [0.5, 1.0, 2.0]
    full = synthetic_stress(1000.0, v1, v2)
    g = _stress_grid(full)
    assert g is not None and g["kind"] == "grid" and g["nominal_point"] == [1.0, 1.0]
    assert g["mean"].shape == (3, 3) and g["mean"][1, 1] == pytest.approx(1000.0)
    # the same numbers from the cells alone (no grid block)
    c = _stress_grid(synthetic_stress(1000.0, v1, v2, grid=False))
    assert c is not None and c["params"] == ["torso_mass (scale of nominal)",
                                             "friction (scale of nominal)"]
    np.testing.assert_allclose(c["mean"], g["mean"])
    assert list(c["values2"]) == v2 and c["reduced"] == []
    # three parameters: the third is reduced by the minimum (worst case over it)
    three = synthetic_stress(1000.0, v1, v2, grid=False)
    three["params"].append({"name": "damping", "mode": "scale"})
    cells = []
    for cell in three["cells"]:
        for d, drop in ((0.5, 100.0), (2.0, 0.0)):
            cells.append({"values": {**cell["values"], "damping": d},
                          "mean": cell["mean"] - drop})
    three["cells"] = cells
    t = _stress_grid(three)
    assert t is not None and t["reduced"] == ["damping"] and t["cells"] == 18
    np.testing.assert_allclose(t["mean"], g["mean"] - 100.0)
    # one parameter: a line
    one = _stress_grid(synthetic_stress(1000.0, [0.5, 1.0, 1.5, 2.0]))
    assert one is not None and one["values2"] is None
    np.testing.assert_allclose(one["mean"], [1000 * math.exp(-0.25), 1000, 1000 * math.exp(-0.25),
                                             1000 * math.exp(-1)])
    # random samples: a point cloud
    smp = synthetic_stress(1000.0, v1, v2, grid=False)
    smp["design"] = "samples"
    s = _stress_grid(smp)
    assert s is not None and s["kind"] == "samples" and s["points"].shape == (9, 2)
    for sec, name in ((one, "one"), (s, "samples"), (t, "three")):
        pr = read_policy_results(write_synthetic(tmp_path, f"p-{name}", sections=("evaluation",)))
        pr.stress_grid = sec
        spec = stress_figure(pr, f"fig-{name}")
        assert spec is not None
        svg = render_svg(spec)
        assert svg.startswith(f'<svg id="fig-{name}"') and "mean episode return" in svg
    # an unreadable section is reported, with the command that writes one
    d = synthetic_results("odd", sections=("evaluation",), gate=None)
    d["stress"] = {"cells": "?"}
    p = tmp_path / "odd.json"
    p.write_text(json.dumps(d))
    pr = read_policy_results(p)
    assert pr.stress_grid is None
    assert pr.missing["stress"] == ("the stress section has no grid of mean returns this report "
                                    "can read: run `certrl stress odd.zip --env hopper "
                                    "--uncertainty-set rrls-2d`")
    # CartPole has no dynamics stress test: nothing is said to be missing
    cp = read_policy_results(write_synthetic(tmp_path, "cp", env="cartpole",
                                             sections=("evaluation",)))
    assert "stress" not in cp.missing


def test_single_html_stress_summary(rendered: dict[str, Path]) -> None:
    html = (rendered["dir"] / "single.html").read_text()
    # worst cell of the synthetic grid: torso_mass 0.5 (tie with 1.5, first wins), friction 2
    worst = 3300.0 * math.exp(-(0.25 + 0.5))
    assert f"<td>worst point</td><td>{worst:,.1f} [{worst - 80:,.1f}, {worst + 30:,.1f}]" in html
    assert "torso_mass=0.5, friction=2</td>" in html
    assert "<td>nominal model</td><td>3,300.0 [3,260.0, 3,340.0]" in html


# ---------------------------------------------------------------------------- --require
def test_report_require_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_synthetic(tmp_path, "gated", seed=1, gate=None)
    data = json.loads(p.read_text())
    b01 = next(r for r in data["certificates"]["budgets"] if r["budget"] == 0.1)
    bound = b01["expected_return_lower_bound"]
    out = tmp_path / "g.html"
    assert main(["report", str(p), "-o", str(out), "--require",
                 f"certified_return@B=0.1 >= {bound - 1:.3f}"]) == 0
    html = out.read_text()
    assert '<section class="verdict pass">' in html
    assert "PASS: the gate requirement holds" in html
    assert "at B = 0.1 (normalized obs, per-step ℓ2 ≈ 0.003162; the gated budget)" in html
    assert main(["report", str(p), "-o", str(out), "--require",
                 f"certified_return@B=0.1 >= {bound + 1:.3f}", "--require",
                 "worst_case_return >= 0"]) == 0
    html = out.read_text()
    assert '<section class="verdict fail">' in html
    assert (f"FAIL: 1 of 2 gate requirements failed (certified_return@B=0.1 &gt;= "
            f"{bound + 1:.6g}), 1 could not be evaluated") in html
    assert "NOT EVALUATED: worst_case_return &gt;= 0: no stress section" in html
    capsys.readouterr()
    assert main(["report", str(p), "-o", str(out), "--require", "certified_return >= 1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("certrl: error: --require: ") and "needs a budget" in err
    assert len(err.splitlines()) == 1


def test_report_of_a_pixel_certificate(tmp_path: Path) -> None:
    """One-round Pong: budgets spread over the mean episode length (not ALE's 27,000-step cap),
    a one-threshold survival figure drawn against the budget, and no `certrl bound` hint."""
    data = synthetic_results("pong", sections=("evaluation", "certificates"), gate=None)
    data["env"] = {"alias": "pong-one-round", "id": "certrl/PongOneRound-v0", "kwargs": {},
                   "horizon": 27000, "step_reward_bounds": [0.0, 1.0], "bounds_kind": "exact",
                   "return_bounds": [0.0, 1.0], "default_eps": 1 / 255, "frame_stack": 4}
    c = data["certificates"]
    c["horizon"] = 27000
    for r in c["budgets"]:
        r["per_step_eps"] = r["budget"] / math.sqrt(173)
        r["per_step_linf_eps"] = r["budget"] / math.sqrt(173 * 7056)
    bs = [r["budget"] for r in c["budgets"]]
    c["survival"] = {"thresholds": [1.0], "clean_empirical": [0.31],
                     "band": [0.27], "certified": {f"{b:g}": [0.27 * (1 - b)] for b in bs}}
    c["attack_threat"] = {"eps": 1 / 255, "norm": "linf", "space": "normalized",
                          "source": "SA-DQN", "steps": 173,
                          "episode_l2_equivalent": math.sqrt(28224 * 173) / 255 / 2,
                          "comparable": True}
    p = tmp_path / "pong.json"
    p.write_text(json.dumps(data))
    out = tmp_path / "pong.html"
    assert main(["report", str(p), "-o", str(out)]) == 0
    html = out.read_text()
    assert "H = 173, the mean episode length" in html and "H = 27000" not in html
    assert "certified P(R ≥ 1) under attack" in html
    assert "ε = 0.003922 per step (SA-DQN) on each of the mean episode&#39;s 173 steps" in html
    assert "No per-step certificates of pixel policies" in html and "(certrl bound)" not in html
