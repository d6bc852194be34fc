"""``certrl attack`` end to end: results-section schema (as the report and the gate read it),
the table and the strongest attack, ``all`` on a small registry, exit codes 2 and 3, resume and
merging, smoothing, and batch-size invariance. Tiny bundles and few, short episodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import certrl.runner as runner_mod
from certrl.attacks.base import ATTACKS, AttackEntry, ThreatModel
from certrl.cli import main
from certrl.evaluator import ObservationHook, StepContext
from certrl.pipeline.attack import check_budget, load_registry, parse_opts, select_attacks
from tests._fixtures import random_bundle

torch.set_num_threads(1)

TINY_CRITIC = ["--opt", "critic:samples=1024", "--opt", "critic:train_steps=100",
               "--opt", "critic:n_envs=4"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_bundle(tmp_path_factory.mktemp("pol"), "Pendulum-v1", seed=1)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _load(out: Path) -> dict[str, Any]:
    (f,) = out.glob("*.json")
    return json.loads(f.read_text())


def test_registry_and_parsing() -> None:
    reg = load_registry()
    for name in ("critic", "rs", "rs+mad", "optimal", "pa-ad"):
        assert reg[name].kind == "obs" and reg[name].options.get("learned")
    obs = select_attacks("all", reg)
    assert obs == sorted(n for n, e in reg.items() if e.kind == "obs") and "rs" in obs
    assert select_attacks("rs,critic,rs", reg) == ["rs", "critic"]
    opts = parse_opts(["steps=3", "rs+mad:mad_weight=2", "critic:cache_dir=a:b"],
                      ["rs+mad", "critic"])
    assert opts == {"rs+mad": {"steps": "3", "mad_weight": "2"},
                    "critic": {"steps": "3", "cache_dir": "a:b"}}
    # learned attacks get the cache, --retrain and the victim's mode; others nothing extra
    from argparse import Namespace

    from certrl.pipeline.attack import _hook_options

    args = Namespace(retrain=True, alpha=None)
    job = Namespace(progress=None, deterministic=False)
    assert _hook_options("rs", reg["rs"], {"seed": "2"}, args, job, "C") == {
        "seed": "2", "cache_dir": "C", "retrain": "true", "deterministic": "false"}
    assert _hook_options("optimal", reg["optimal"], {}, args, job, "C")[
        "victim_deterministic"] == "false"
    assert _hook_options("pgd", reg["pgd"], {"steps": "3"}, args, job, "C") == {"steps": "3"}
    # the normalized-space sanity rule: 2 (l_inf), 2 sqrt(d) (l2); raw is not checked
    check_budget(ThreatModel(eps=2.0), 11)
    check_budget(ThreatModel(eps=6.6, norm="l2"), 11)
    check_budget(ThreatModel(eps=50.0, space="raw"), 11)
    with pytest.raises(ValueError, match="larger than 2"):
        check_budget(ThreatModel(eps=2.01), 11)
    with pytest.raises(ValueError, match="larger than 6.63"):
        check_budget(ThreatModel(eps=6.7, norm="l2"), 11)


def test_attack_end_to_end_schema_report_gate(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "res"
    rc, text, err = _run(capsys, "attack", str(bundle), "--env", "pendulum", "--attack",
                         "pgd,critic", "--eps", "0.3", "--episodes", "3", "--workers", "1",
                         "--out", str(out), *TINY_CRITIC)
    assert rc == 0, err
    data = _load(out)
    sec = data["attacks"]
    assert sec["threat"] == {"eps": 0.3, "norm": "linf", "space": "normalized",
                             "episode_budget": None, "eps_bar": None}
    clean = np.array(sec["clean"]["returns"])
    assert clean.shape == (3,) and sec["episodes"] == 3
    assert set(sec["results"]) == {"pgd", "critic"}
    for name, r in sec["results"].items():
        rets = np.array(r["returns"])
        assert rets.shape == (3,) and r["kind"] == "obs"
        assert r["summary"]["mean"] == pytest.approx(rets.mean())
        assert r["summary"]["n"] == 3 and len(r["summary"]["iqm_ci"]) == 2
        # drop is paired on the same episode seeds
        assert r["drop_mean"] == pytest.approx(float(np.mean(clean - rets)))
        assert r["drop_ci"][0] <= r["drop_mean"] <= r["drop_ci"][1]
        assert 0 < r["audit"]["obs_linf_max"] <= 0.3 + 1e-6
        assert r["config"]["name"] == name and r["threat"]["eps"] == 0.3
    crit = sec["results"]["critic"]
    assert crit["options"]["samples"] == "1024" and crit["config"]["cached"] is False
    assert len(crit["config"]["weights_sha256"]) == 64
    means = {k: v["summary"]["mean"] for k, v in sec["results"].items()}
    strongest = min(means, key=means.get)  # type: ignore[arg-type]
    assert sec["min"]["name"] == strongest and sec["min"]["mean"] == means[strongest]
    # the table: clean first, attacks from strongest to weakest, then the minimum
    lines = text.splitlines()
    rows = [ln.split()[0] for ln in lines[3:6]]
    assert rows[0] == "clean" and rows[1:] == sorted(means, key=means.get)  # type: ignore[arg-type]
    assert f"strongest attack: {strongest}" in text
    # the trained critic is cached under <out>/.cache
    assert list((out / ".cache").glob("critic-*.safetensors"))
    # what the report and the gate read
    from certrl.gate import parse_requirement, resolve_metric
    from certrl.report.model import read_policy_results

    (path,) = out.glob("*.json")
    pr = read_policy_results(path)
    assert [a.name for a in pr.attack_list] == sorted(means, key=means.get)  # type: ignore[arg-type]
    assert pr.strongest is not None and pr.strongest.name == strongest
    assert "ε = 0.3" in pr.threat_text()
    mv = resolve_metric(data, parse_requirement("attack_min >= 0"))
    lows = [r["summary"]["mean_ci"][0] for r in sec["results"].values()]
    assert mv.value == pytest.approx(min(lows)) and "CI" in mv.kind


def test_all_small_registry_on_cartpole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    load_registry()
    for name in list(ATTACKS):
        if name not in ("random", "pgd"):
            monkeypatch.delitem(ATTACKS, name)
    out = tmp_path / "cp"
    rc, text, err = _run(capsys, "attack", "demo:cartpole", "--env", "cartpole", "--attack",
                         "all", "--eps", "0.2", "--episodes", "4", "--workers", "1",
                         "--out", str(out))
    assert rc == 0, err
    sec = _load(out)["attacks"]
    assert sec["threat"]["space"] == "raw"  # demo:cartpole has no normalization
    assert set(sec["results"]) == {"random", "pgd"}
    clean = sec["clean"]["summary"]["mean"]
    pgd = sec["results"]["pgd"]["summary"]["mean"]
    rand = sec["results"]["random"]["summary"]["mean"]
    # measured (eps 0.2 raw): clean 500, uniform noise 67.75, PGD 11 (the pole falls at once;
    # at eps 0.1 both leave 500)
    assert clean == 500.0 and pgd < 20 and rand > pgd + 20 and sec["min"]["name"] == "pgd"
    assert sec["results"]["pgd"]["drop_mean"] == pytest.approx(500.0 - pgd)
    assert "strongest attack: pgd" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--attack", "nosuch", "--eps", "0.1"], "unknown attack 'nosuch'"),
        (["--attack", "pgd", "--eps", "-0.1"], "--eps must be a finite number >= 0"),
        (["--attack", "pgd", "--eps", "5"], "larger than 2 in the normalized"),
        (["--attack", "pgd"], "no published default budget"),
        (["--attack", "pgd", "--eps", "0.1", "--opt", "nosuch_option=1"], "unknown option"),
        (["--attack", "critic", "--eps", "0.1", "--opt", "sarsa_epsilon=1"], "unknown option"),
        (["--attack", "pgd", "--eps", "0.1", "--opt", "oops"], "expected key=value"),
        (["--attack", "pgd", "--eps", "0.1", "--opt", "rs:steps=2"], "not among the selected"),
        (["--attack", "pgd", "--eps", "0.1", "--alpha", "2"], "--alpha must be in [0, 1]"),
        (["--attack", "pgd", "--eps", "0.1", "--norm", "l3"], "invalid choice"),
        (["--attack", "pgd", "--eps", "0.1", "--smoothing-sigma", "0"], "must be > 0"),
    ],
)
def test_bad_input_exits_2(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
    message: str,
) -> None:
    rc, _, err = _run(capsys, "attack", str(bundle), "--env", "pendulum", "--episodes", "2",
                      "--out", str(tmp_path), *extra)
    assert rc == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("certrl: error:") and message in lines[-1]
    assert "Traceback" not in err
    assert not list(tmp_path.glob("*.json"))  # nothing ran, nothing written


class _Cheater(ObservationHook):
    """A buggy attack: twice its budget."""

    name = "cheater"

    def __init__(self, eps: float) -> None:
        self.eps = eps

    def __call__(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return x + 2 * self.eps


def test_budget_violation_exits_3(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(ATTACKS, "cheater", AttackEntry(
        "cheater", lambda threat, policy, spec, **o: _Cheater(threat.eps), "obs"))
    rc, _, err = _run(capsys, "attack", str(bundle), "--env", "pendulum", "--attack", "cheater",
                      "--eps", "0.1", "--episodes", "2", "--workers", "1", "--out",
                      str(tmp_path))
    assert rc == 3
    assert "budget violation" in err and "exceeds eps=0.1" in err
    assert not list(tmp_path.glob("*.json"))


def test_resume_reuses_journal_and_merge_keeps_results(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ["attack", str(bundle), "--env", "pendulum", "--eps", "0.2", "--episodes", "3",
            "--workers", "1", "--out", str(tmp_path)]
    # first run "crashes" after every episode is journaled (the journals are not removed)
    monkeypatch.setattr(runner_mod, "finish_journal", lambda job, section: None)
    rc, _, err = _run(capsys, *args, "--attack", "pgd")
    assert rc == 0, err
    first = _load(tmp_path)["attacks"]
    ran: list[int] = []
    real = runner_mod.run_local

    def counting(policy: Any, spec: Any, todo: list[int], *a: Any, **k: Any) -> Any:
        ran.extend(todo)
        return real(policy, spec, todo, *a, **k)

    monkeypatch.setattr(runner_mod, "run_local", counting)
    rc, text, err = _run(capsys, *args, "--attack", "pgd", "--resume")
    assert rc == 0, err
    assert ran == []  # clean and pgd episodes all came from the journal
    again = _load(tmp_path)["attacks"]
    assert again["results"]["pgd"]["returns"] == first["results"]["pgd"]["returns"]
    assert again["clean"]["returns"] == first["clean"]["returns"]
    # a later run with the same configuration adds its attack and keeps pgd
    rc, text, err = _run(capsys, *args, "--attack", "random")
    assert rc == 0, err
    merged = _load(tmp_path)["attacks"]
    assert set(merged["results"]) == {"pgd", "random"}
    assert "kept 1 earlier attack result(s) of the same configuration: pgd" in text
    assert merged["results"]["pgd"]["returns"] == first["results"]["pgd"]["returns"]
    # another threat model replaces them
    rc, text, err = _run(capsys, *args[:-6], "--eps", "0.1", *args[-4:], "--attack", "random")
    assert rc == 0, err
    assert set(_load(tmp_path)["attacks"]["results"]) == {"random"}
    assert "replaced 1 earlier attack result(s)" in text


def test_batch_size_invariance_and_smoothing(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rets = []
    for bs in ("1", "3"):
        out = tmp_path / f"bs{bs}"
        rc, _, err = _run(capsys, "attack", str(bundle), "--env", "pendulum", "--attack",
                          "pgd,critic", "--eps", "0.2", "--episodes", "3", "--workers", "1",
                          "--batch-size", bs, "--out", str(out), "--smoothing-sigma", "0.1",
                          "--cache-dir", str(tmp_path / "cache"), *TINY_CRITIC)
        assert rc == 0, err
        sec = _load(out)["attacks"]
        assert sec["clean"]["smoothing"] == {"name": "gaussian-smoothing", "sigma": 0.1,
                                             "space": "normalized"}
        for r in sec["results"].values():
            assert r["eot"] is True
        assert sec["results"]["critic"]["config"]["smoothing_sigma"] == 0.1
        rets.append({k: r["returns"] for k, r in sec["results"].items()}
                    | {"clean": sec["clean"]["returns"]})
    assert rets[0] == rets[1]


def test_action_attacks_alpha_and_discrete_skip(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    load_registry()
    if "action-nr" not in ATTACKS:
        pytest.skip("no action attacks in this installation")
    out = tmp_path / "pend"
    rc, text, err = _run(capsys, "attack", str(bundle), "--env", "pendulum", "--attack",
                         "all-action", "--alpha", "0.25", "--eps", "0.3", "--episodes", "2",
                         "--workers", "1", "--out", str(out))
    assert rc == 0, err
    sec = _load(out)["attacks"]
    acts = sorted(n for n, e in ATTACKS.items() if e.kind == "action")
    assert sorted(sec["results"]) == acts
    assert sec["threat"]["space"] == "action" and "alpha=0.25" in sec["threat_text"]
    nr = sec["results"]["action-nr"]
    # --alpha reaches the attacks that take it (NR: |delta| <= alpha (high - low) = 0.25 * 4)
    assert nr["options"]["alpha"] == 0.25 and nr["config"]["alpha"] == 0.25
    assert 0 < nr["audit"]["act_linf_max"] <= 1.0 + 1e-6
    assert "alpha" not in sec["results"]["mas"]["options"]  # mas has no alpha: not passed
    assert all(r["kind"] == "action" for r in sec["results"].values())
    assert "action-nr*" in text
    # a discrete policy: the continuous-only action attacks are skipped, with a note
    rc, text, err = _run(capsys, "attack", "demo:cartpole", "--env", "cartpole", "--attack",
                         "all-action", "--alpha", "0.2", "--eps", "0.2", "--episodes", "2",
                         "--workers", "1", "--out", str(tmp_path / "cp"))
    assert rc == 0, err
    assert "skipping" in err and "continuous actions only" in err
    kept = [n for n in acts if not ATTACKS[n].options.get("continuous_only")]
    assert sorted(_load(tmp_path / "cp")["attacks"]["results"]) == kept


def test_alpha_sized_action_attacks_need_no_eps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CartPole has no published observation budget; action-pr is sized by --alpha alone."""
    bundle = random_bundle(tmp_path, "CartPole-v1", normalize=False)
    out = tmp_path / "o"
    rc, _, err = _run(capsys, "attack", str(bundle), "--env", "cartpole", "--attack",
                      "action-pr", "--alpha", "0.5", "--episodes", "4", "--workers", "1",
                      "--out", str(out))
    assert rc == 0, err
    res = _load(out)["attacks"]["results"]["action-pr"]
    assert res["kind"] == "action" and len(res["returns"]) == 4
    rc, _, err = _run(capsys, "attack", str(bundle), "--env", "cartpole", "--attack", "pgd",
                      "--episodes", "2", "--workers", "1", "--out", str(out))
    assert rc == 2 and "no published default budget" in err
