"""The `certrl` command line: results files, bad input (exit 2, one line), resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from certrl.cli import main
from certrl.results import load_results
from tests._fixtures import random_bundle

CERTRL = [sys.executable, "-m", "certrl.cli"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CI": "true"}
    return subprocess.run([*CERTRL, *args], capture_output=True, text=True, env=env, timeout=300)


def test_evaluate_writes_results_file(tmp_path, capsys):
    pol = random_bundle(tmp_path, "Pendulum-v1")
    out = tmp_path / "res"
    rc = main(["evaluate", str(pol), "--env", "pendulum", "--episodes", "6", "--workers", "1",
               "--out", str(out), "--seed", "3"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "mean" in text and "IQM" in text and "95% CI" in text
    path = out / "Pendulum-v1_policy.json"
    assert f"results: {path}" in text
    data = load_results(path)
    assert data["schema_version"] == 1
    assert data["policy"]["sha256"] and data["policy"]["format"] == "certrl-mlp"
    ev = data["evaluation"]
    assert ev["episodes"] == 6 and len(ev["returns"]) == 6 and ev["seed"] == 3
    assert ev["summary"]["mean"] == pytest.approx(np.mean(ev["returns"]), rel=1e-12)
    lo, hi = ev["summary"]["mean_ci"]
    assert lo <= ev["summary"]["mean"] <= hi
    assert set(data["versions"]) >= {"certrl", "torch", "gymnasium", "mujoco"}
    assert data["commands"][-1].startswith("certrl evaluate")
    assert not list((out / ".journal").glob("*.jsonl"))  # journal removed once saved


def test_workers_give_identical_results(tmp_path):
    pol = random_bundle(tmp_path, "Pendulum-v1")
    rets = []
    for w in ("1", "2"):
        out = tmp_path / f"w{w}"
        assert main(["evaluate", str(pol), "--env", "pendulum", "--episodes", "5", "--workers", w,
                     "--batch-size", "2", "--stochastic", "--out", str(out)]) == 0
        rets.append(load_results(out / "Pendulum-v1_policy.json")["evaluation"]["returns"])
    assert rets[0] == rets[1]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["evaluate", "missing.zip", "--env", "hopper"], "missing.zip"),
        (["evaluate", "demo:nope", "--env", "hopper"], "demo"),
        (["evaluate", "demo:cartpole", "--env", "no-such-env"], "unknown environment"),
        (["evaluate", "demo:cartpole", "--env", "hopper"], "observations"),
        (["evaluate", "demo:cartpole", "--env", "cartpole", "--episodes", "0"], "--episodes"),
        (["evaluate", "demo:cartpole", "--env", "cartpole", "--env-kwargs", "{bad"], "JSON"),
        (["evaluate", "demo:cartpole", "--env", "cartpole", "--out", "/proc/nope"], "--out"),
        (["evaluate", "demo:cartpole"], "--env"),
        (["certify", "demo:cartpole", "--env", "cartpole", "--sigma", "-1"], "--sigma"),
        (["certify", "demo:cartpole", "--env", "cartpole", "--budgets", "0,x"], "--budgets"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, needle, tmp_path, capsys):
    if "--out" not in args:
        args = [*args, "--out", str(tmp_path)]
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    msg = [line for line in err if line.startswith("certrl: error")]
    assert len(msg) == 1, err
    assert needle in msg[0]
    assert not any("Traceback" in line for line in err)


def test_corrupt_file_and_nan_policy(tmp_path, capsys):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 this is not really a zip")
    assert main(["evaluate", str(bad), "--env", "hopper", "--out", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err
    # a policy whose weights contain NaN
    from safetensors.torch import load_file, save_file

    pol = random_bundle(tmp_path, "Pendulum-v1", name="nanpol")
    w = load_file(str(pol.with_suffix(".safetensors")))
    w["net.0.weight"][0, 0] = float("nan")
    save_file(w, str(pol.with_suffix(".safetensors")))
    rc = main(["evaluate", str(pol), "--env", "pendulum", "--episodes", "2", "--workers", "1",
               "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "non-finite action" in err and "Traceback" not in err


def test_debug_shows_traceback(tmp_path):
    r = run_cli("evaluate", "missing.zip", "--env", "hopper", "--out", str(tmp_path), "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_resume_after_kill_loses_no_finished_episode(tmp_path):
    pol = random_bundle(tmp_path, "Pendulum-v1")
    out = tmp_path / "res"
    args = ["evaluate", str(pol), "--env", "pendulum", "--episodes", "60", "--workers", "1",
            "--batch-size", "1", "--out", str(out)]
    env = {**os.environ, "CI": "true"}
    proc = subprocess.Popen([*CERTRL, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    journal_dir = out / ".journal"
    deadline = time.time() + 120
    lines = 0
    while time.time() < deadline:
        files = list(journal_dir.glob("*.jsonl")) if journal_dir.exists() else []
        if files:
            lines = len(files[0].read_text().splitlines())
            if lines >= 6:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lines >= 6, "the run never journaled episodes"
    saved = len(list(journal_dir.glob("*.jsonl"))[0].read_text().splitlines()) - 1
    assert 5 <= saved < 60
    r = run_cli(*args, "--resume")
    assert r.returncode == 0, r.stderr
    data = load_results(out / "Pendulum-v1_policy.json")
    assert data["evaluation"]["throughput"]["resumed_episodes"] >= saved - 1
    # identical to an uninterrupted run
    fresh = tmp_path / "fresh"
    assert main([*args[:-1], str(fresh)]) == 0
    ref = load_results(fresh / "Pendulum-v1_policy.json")["evaluation"]["returns"]
    assert data["evaluation"]["returns"] == ref


def test_results_file_is_atomic_and_merged(tmp_path):
    from certrl.results import atomic_write_json, update_results

    p = tmp_path / "r.json"
    env = {"id": "X-v0", "kwargs": {}}
    update_results(p, command="a", env=env, policy={"sha256": "1"}, sections={"evaluation": 1})
    update_results(p, command="b", env=env, policy={"sha256": "1"}, sections={"attacks": 2})
    d = json.loads(p.read_text())
    assert d["evaluation"] == 1 and d["attacks"] == 2 and d["commands"] == ["a", "b"]
    # another policy under the same name replaces the file instead of mixing results
    update_results(p, command="c", env=env, policy={"sha256": "2"}, sections={"attacks": 3})
    d = json.loads(p.read_text())
    assert "evaluation" not in d and d["commands"] == ["c"]
    atomic_write_json(p, {"schema_version": 1, "x": float("nan")})
    assert json.loads(p.read_text())["x"] is None
    assert [f.name for f in tmp_path.iterdir()] == ["r.json"]  # no temp files left


def test_envs_and_policy_info(capsys):
    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "Hopper-v5" in out and "0.075" in out and "CartPole-v1" in out
    assert main(["policy-info", "demo:cartpole", "--env", "cartpole", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n_actions"] == 2 and len(info["sha256"]) == 64
