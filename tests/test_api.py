"""The public Python API (``certrl.load_policy / evaluate / certify / ...``): the same numbers
as the command line, results whose ``to_json()`` is the results-file section, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

import certrl
from certrl.cli import main
from certrl.errors import UsageError
from certrl.results import load_results
from tests._custom_env import make_point_mass
from tests._fixtures import linear_controller


def _only_json(d):
    files = list(d.glob("*.json"))
    assert len(files) == 1, files
    return load_results(files[0])


def test_package_exports_the_api_lazily():
    import certrl.api as api

    for name in api.__all__:
        assert getattr(certrl, name) is getattr(api, name)
    assert "certify" in dir(certrl)
    with pytest.raises(AttributeError):
        certrl.no_such_function  # noqa: B018


def test_evaluate_matches_cli_and_to_json_is_the_results_section(tmp_path):
    policy = certrl.load_policy("demo:cartpole", env="cartpole")
    assert policy.discrete and policy.obs_dim == 4
    res = certrl.evaluate(policy, "cartpole", episodes=6, seed=3, out=tmp_path / "api")
    assert res.episodes == 6 and res.returns.shape == (6,)
    assert res.mean == pytest.approx(res.returns.mean(), rel=1e-12)
    assert res.mean_ci[0] <= res.mean <= res.mean_ci[1]
    data = _only_json(tmp_path / "api")
    assert res.to_json() == data["evaluation"]
    assert res.results_file is not None and res.results_file.is_file()
    assert main(["evaluate", "demo:cartpole", "--env", "cartpole", "--episodes", "6", "--seed",
                 "3", "--workers", "2", "--out", str(tmp_path / "cli")]) == 0
    assert _only_json(tmp_path / "cli")["evaluation"]["returns"] == res.returns.tolist()


def test_certify_matches_cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # out=None must leave nothing behind
    res = certrl.certify("demo:cartpole", env="cartpole", sigma=0.2, budgets=[0.2, 0],
                         episodes=120, attack=False)
    assert res.results_file is None and not list(tmp_path.iterdir())
    assert sorted(res.lower_bounds) == [0.0, 0.2]
    assert res.lower_bound(0) >= res.lower_bound(0.2)
    assert res.sigma == 0.2 and res.alpha == 0.05 and res.space == "raw"
    assert f"{res.lower_bound(0.2):,.2f}" in res.statement
    assert res.to_json()["budgets"][1]["budget"] == 0.2
    with pytest.raises(UsageError, match="certified budgets: 0, 0.2"):
        res.lower_bound(0.3)
    assert main(["certify", "demo:cartpole", "--env", "cartpole", "--sigma", "0.2", "--budgets",
                 "0,0.2", "--episodes", "120", "--no-attack", "--out", str(tmp_path / "c")]) == 0
    cli = _only_json(tmp_path / "c")["certificates"]
    assert [r["expected_return_lower_bound"] for r in cli["budgets"]] == \
        [res.lower_bounds[0.0], res.lower_bounds[0.2]]
    assert cli["smoothed_returns"] == res.to_json()["smoothed_returns"]


def test_bad_input_raises_before_any_episode():
    with pytest.raises(UsageError, match="--sigma must be > 0"):
        certrl.certify("demo:cartpole", env="cartpole", sigma=-1)
    with pytest.raises(UsageError, match="env is required"):
        certrl.evaluate("demo:cartpole", None)  # type: ignore[arg-type]
    from certrl.policies import PolicyError

    with pytest.raises(PolicyError, match="unknown demo policy"):
        certrl.load_policy("demo:nope")


def test_env_factory_and_in_memory_policy(tmp_path):
    from torch import nn

    from certrl.policies import Policy

    pol = Policy(nn.Sequential(linear_controller()), "linear", 2, act_dim=1)
    res = certrl.evaluate(pol, make_point_mass, episodes=4, workers=2)
    assert res.episodes == 4 and np.all(res.returns > 40)
    spec = certrl.make_env(make_point_mass)
    assert spec.horizon == 50 and spec.return_bounds == (0.0, 50.0)
    cert = certrl.certify(pol, make_point_mass, sigma=0.1, budgets=[0, 0.05], episodes=60,
                          attack=False)
    assert 0 < cert.lower_bound(0.05) <= cert.lower_bound(0) <= 50.0


def _strip_timing(sec):
    """Sections without wall-clock fields (seconds, steps/s), which differ run to run."""
    if isinstance(sec, dict):
        return {k: _strip_timing(v) for k, v in sec.items()
                if k not in ("throughput", "timing", "seconds", "fit_seconds")}
    if isinstance(sec, list):
        return [_strip_timing(v) for v in sec]
    return sec


def test_attack_bound_stress_equal_the_cli_sections(tmp_path):
    from tests._fixtures import random_bundle

    att = certrl.attack("demo:cartpole", "cartpole", attacks=["fgsm", "random"], eps=0.2,
                        episodes=4, out=tmp_path / "api")
    assert set(att.means) == {"fgsm", "random"} and att.strongest in att.means
    assert att.strongest_mean == min(att.means.values()) and att.clean_mean == 500.0
    assert att.to_json() == _only_json(tmp_path / "api")["attacks"]
    assert main(["attack", "demo:cartpole", "--env", "cartpole", "--attack", "fgsm,random",
                 "--eps", "0.2", "--episodes", "4", "--workers", "1",
                 "--out", str(tmp_path / "cli")]) == 0
    assert _strip_timing(_only_json(tmp_path / "cli")["attacks"]) == _strip_timing(att.section)

    b = certrl.bound("demo:pendulum", "pendulum", eps=0.01, episodes=2)
    assert b.method == "crown" and b.eps == 0.01 and 0 <= b.certified_fraction <= 1
    assert b.certified_fraction_ci[0] <= b.certified_fraction <= b.certified_fraction_ci[1]
    assert "CROWN proves" in b.statement
    assert main(["bound", "demo:pendulum", "--env", "pendulum", "--eps", "0.01", "--episodes",
                 "2", "--workers", "1", "--out", str(tmp_path / "b")]) == 0
    assert _strip_timing(_only_json(tmp_path / "b")["bounds"]) == _strip_timing(b.section)

    pol = random_bundle(tmp_path, "Hopper-v5", seed=2)
    st = certrl.stress(pol, "hopper", params="torso_mass=1:1.5", grid=2, episodes=2, seed=3)
    assert set(st.worst_case_values) == {"torso_mass"}
    assert st.worst_case_lower <= st.worst_case_mean
    assert main(["stress", str(pol), "--env", "hopper", "--params", "torso_mass=1:1.5",
                 "--grid", "2", "--episodes", "2", "--seed", "3", "--workers", "1",
                 "--out", str(tmp_path / "s")]) == 0
    cli = _only_json(tmp_path / "s")["stress"]
    assert _strip_timing(cli) == _strip_timing(st.section)


def test_api_attack_errors_are_one_line_usage_errors():
    with pytest.raises(UsageError, match="unknown attack 'nope'"):
        certrl.attack("demo:cartpole", "cartpole", attacks="nope", eps=0.1)


def test_unpicklable_policy_object_runs_in_this_process(tmp_path):
    import torch
    from torch import nn

    class Logits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("w", torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, -1.0],
                                                    [0.5, -0.5]]))

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return obs @ self.w

    path = tmp_path / "ts.pt"
    torch.jit.save(torch.jit.script(Logits()), str(path))
    pol = certrl.load_policy(path, env="cartpole")
    with pytest.warns(UserWarning, match="cannot be sent to worker processes"):
        res = certrl.evaluate(pol, "cartpole", episodes=3, workers=2)
    by_path = certrl.evaluate(str(path), "cartpole", episodes=3, workers=2)
    assert res.section["workers"] == 1 and by_path.section["workers"] == 2
    assert res.returns.tolist() == by_path.returns.tolist()


def test_in_memory_policies_are_told_apart(tmp_path):
    """A Policy built in code has no file hash: its weights are hashed instead, so two of them
    neither share a results file nor resume each other's journal."""
    from torch import nn

    from certrl.pipeline.job import build_job
    from certrl.policies import Policy

    jobs = []
    for w in (-2.0, -1.0):
        jobs.append(build_job(Policy(nn.Sequential(linear_controller((w, 0.0))), "linear", 2,
                                     act_dim=1),
                              make_point_mass, episodes=2, workers=1, out=tmp_path))
    a, b = jobs
    assert a.policy.info.sha256 and a.policy.info.sha256 != b.policy.info.sha256
    assert a.results_file != b.results_file
