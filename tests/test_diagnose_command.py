"""``certrl diagnose`` end to end: the section's numbers on a policy whose answers are known in
closed form, determinism across workers, the comparison, the report section, the API."""

from __future__ import annotations

import numpy as np
import pytest

import certrl
from certrl.cli import main
from certrl.results import load_results
from tests._fixtures import scripted_controller


def _only(d):
    files = list(d.glob("*.json"))
    assert len(files) == 1
    return load_results(files[0])


def test_linear_policy_matches_the_closed_form(tmp_path, capsys):
    """a = -2x + 0.5v on the point mass: J = [-2, 0.5] at every state, so the sensitivity is
    ||W||_2, the fragile direction is W / ||W|| (shares 4/4.25 and 0.25/4.25), it never moves
    (|cos| 1), and the smallest l_inf perturbation moving the action by tol = 0.1 is
    tol / ||W||_1 = 0.04 wherever the action is not clipped."""
    pol = scripted_controller(tmp_path / "lin.pt", (-2.0, 0.5))
    entry = "tests._custom_env:PointMass"
    assert main(["diagnose", pol, "--env", entry, "--episodes", "2", "--workers", "1",
                 "--out", str(tmp_path / "r")]) == 0
    text = capsys.readouterr().out
    assert "obs[0]" in text and "Empirical, no guarantee" in text
    d = _only(tmp_path / "r")["diagnosis"]
    assert d["space"] == "raw" and d["states"] == 100 and d["tol"] == pytest.approx(0.1)
    assert d["sensitivity"]["0.5"] == pytest.approx(np.hypot(2.0, 0.5), rel=1e-5)
    assert d["linf_gain"]["0.5"] == pytest.approx(2.5, rel=1e-5)
    shares = {r["name"]: r["share"] for r in d["dimension_shares"]}
    assert shares["obs[0]"] == pytest.approx(4 / 4.25, rel=1e-4)
    assert d["top_direction_cos_between_steps"]["0.1"] == pytest.approx(1.0, abs=1e-5)
    ms = d["min_perturbation"]
    assert ms["found_fraction"] == 1.0
    # x starts near 1: a = -2x saturates at -1 for x > 0.5, where moving by 0.1 needs more
    unclipped = [v for tr in d["traces"] for v, a in zip(tr["min_perturbation"],
                                                         tr["t"], strict=True) if a > 20]
    assert np.median(unclipped) == pytest.approx(0.1 / 2.5, rel=0.02)
    assert min(v for tr in d["traces"] for v in tr["min_perturbation"]) >= 0.04 * (1 - 1e-3)
    basis = d["unstable_subspace"][0]["vector"]
    assert np.allclose(np.abs(basis), np.array([2.0, 0.5]) / np.hypot(2.0, 0.5), atol=1e-5)


def test_discrete_workers_invariant_and_self_comparison(tmp_path, capsys):
    outs = []
    for w in ("1", "2"):
        out = tmp_path / f"w{w}"
        assert main(["diagnose", "demo:cartpole", "--env", "cartpole", "--episodes", "2",
                     "--workers", w, "--search-states", "300", "--compare", "demo:cartpole",
                     "--out", str(out)]) == 0
        d = _only(out)["diagnosis"]
        d.pop("rollout")
        outs.append(d)
    assert outs[0] == outs[1]
    d = outs[0]
    assert d["discrete"] and [r["name"] for r in d["dimension_shares"]][0] in (
        "cart position", "cart velocity", "pole angle", "pole angular velocity")
    assert sum(r["share"] for r in d["dimension_shares"]) == pytest.approx(1.0, abs=1e-6)
    cmp = d["comparison"]
    assert cmp["subspace_overlap"] == pytest.approx(1.0, abs=1e-5)
    assert max(cmp["principal_angles_deg"]) < 0.5
    assert d["min_perturbation"]["states"] == 300
    assert len(d["similarity_heatmap"]["steps"]) <= 120
    capsys.readouterr()
    assert main(["report", str(next((tmp_path / "w1").glob("*.json"))), "-o",
                 str(tmp_path / "rep.html")]) == 0
    html = (tmp_path / "rep.html").read_text()
    assert "Where the policy is fragile" in html and "Direction similarity over time" in html


def test_api_diagnose_equals_the_cli_section(tmp_path):
    res = certrl.diagnose("demo:pendulum", "pendulum", episodes=1, search_states=100,
                          out=tmp_path / "api")
    sec = _only(tmp_path / "api")["diagnosis"]
    assert res.to_json() == sec
    assert set(res.dimension_shares) == {"cos(theta)", "sin(theta)", "theta dot"}
    assert res.min_perturbation_median == sec["min_perturbation"]["quantiles"]["0.5"]
    assert res.subspace_overlap is None and "no guarantee" in res.statement


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    assert main(["diagnose", "demo:cartpole", "--env", "cartpole", "--directions", "0"]) == 2
    assert "--directions" in capsys.readouterr().err
    assert main(["diagnose", "demo:cartpole", "--env", "cartpole", "--episodes", "1",
                 "--compare", "demo:pendulum", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--compare demo:pendulum" in err
