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
    import torch
    from torch import nn

    from certrl.policies import Policy

    net = nn.Linear(2, 1)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[-2.0, 0.0]]))
        net.bias.zero_()
    pol = Policy(nn.Sequential(net), "linear", 2, act_dim=1)
    res = certrl.evaluate(pol, make_point_mass, episodes=4, workers=2)
    assert res.episodes == 4 and np.all(res.returns > 40)
    spec = certrl.make_env(make_point_mass)
    assert spec.horizon == 50 and spec.return_bounds == (0.0, 50.0)
    cert = certrl.certify(pol, make_point_mass, sigma=0.1, budgets=[0, 0.05], episodes=60,
                          attack=False)
    assert 0 < cert.lower_bound(0.05) <= cert.lower_bound(0) <= 50.0
