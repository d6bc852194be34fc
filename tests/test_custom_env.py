"""Custom environments (``--env package.module:ClassOrFactory``, factories in the API), and
loaders that take what the file does not say from the environment's spaces."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from certrl.cli import main
from certrl.envs import EnvError, EnvSpec, resolve_env
from certrl.results import load_results
from tests._custom_env import PointMass, make_point_mass
from tests._fixtures import scripted_controller

ENTRY = "tests._custom_env:PointMass"


class _MatmulLogits(nn.Module):
    """``obs @ self.w`` with ``w`` a [4, 2] buffer: no Linear weight to read obs_dim from."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, -1.0],
                                                [0.5, -0.5]]))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return obs @ self.w


def _script(module: nn.Module, path) -> str:
    torch.jit.save(torch.jit.script(module), str(path))
    return str(path)


def test_entry_point_spec_reads_horizon_and_declared_bounds():
    spec = resolve_env(ENTRY, {"start": 0.5})
    assert spec.custom and spec.entry_point == ENTRY
    assert spec.horizon == 50 and spec.bounds_kind == "env"
    assert spec.step_reward_bounds == (0.0, 1.0) and spec.return_bounds == (0.0, 50.0)
    env = spec.make()
    obs, _ = env.reset(seed=1)
    assert env.unwrapped.start == 0.5 and obs.shape == (2,)
    steps = 0
    done = False
    while not done:  # the TimeLimit certrl adds truncates at the declared horizon
        obs, r, term, trunc, _ = env.step(np.zeros(1, dtype=np.float32))
        steps += 1
        done = term or trunc
    assert steps == 50 and trunc
    j = spec.to_json()
    assert j["entry_point"] == ENTRY and j["return_bounds"] == [0.0, 50.0]


def test_factory_and_max_episode_steps_kwarg():
    spec = resolve_env("tests._custom_env:make_point_mass", {"max_episode_steps": 7})
    assert spec.horizon == 7 and spec.return_bounds == (0.0, 7.0)
    api_spec = resolve_env(make_point_mass)
    assert api_spec.factory is make_point_mass and api_spec.factory_picklable()
    assert api_spec.to_json()["entry_point"] == "tests._custom_env:make_point_mass"
    lam = resolve_env(lambda: PointMass(start=0.2))
    assert not lam.factory_picklable() and lam.make().unwrapped.start == 0.2


def test_gymnasium_module_colon_id_syntax_reads_declared_bounds():
    spec = resolve_env("tests._custom_env:CertrlTestPointMass-v0")
    assert spec.horizon == 40 and spec.bounds_kind == "env"
    assert spec.step_reward_bounds == (0.0, 1.0) and spec.return_bounds == (0.0, 40.0)
    assert isinstance(spec.make().unwrapped, PointMass)
    generic = resolve_env("Acrobot-v1")  # registered, no alias, no declared bounds
    assert not generic.bounds_known and generic.to_json()["step_reward_bounds"] == [None, None]


@pytest.mark.parametrize("entry, match", [
    ("tests._custom_env:Unbounded", "no horizon"),
    ("tests._custom_env:NotAnEnv", "not a gymnasium.Env"),
    ("tests._custom_env:broken_factory", "simulator licence not found"),
    ("tests._custom_env:Missing", "has no attribute 'Missing'"),
    ("no_such_pkg_certrl.envs:Walk", "cannot import no_such_pkg_certrl"),
    (":Foo", "is not a module name"),
])
def test_bad_custom_env_is_one_line_env_error(entry, match):
    with pytest.raises(EnvError, match=match) as e:
        resolve_env(entry)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("steps", ["x", 2.5, 0, True])
def test_bad_max_episode_steps_is_one_line(steps):
    for env in (ENTRY, "pendulum", "Acrobot-v1"):
        with pytest.raises(EnvError, match="max_episode_steps must be a positive integer"):
            resolve_env(env, {"max_episode_steps": steps})


def test_factories_with_different_arguments_get_different_names(tmp_path):
    """The name keys the results file and the journal: two partials (or closures) of the same
    class must not share it, or --resume would mix their episodes."""
    import functools

    a = resolve_env(functools.partial(PointMass, start=0.2))
    b = resolve_env(functools.partial(PointMass, start=1.5))
    assert a.gym_id != b.gym_id and a.to_json() != b.to_json()
    assert a.gym_id == resolve_env(functools.partial(PointMass, start=0.2)).gym_id  # stable
    assert a.gym_id.startswith("tests._custom_env:PointMass#")

    def closure(start):
        return lambda: PointMass(start=start)

    assert resolve_env(closure(0.2)).gym_id != resolve_env(closure(1.5)).gym_id
    assert resolve_env(make_point_mass).gym_id == "tests._custom_env:make_point_mass"


@pytest.mark.parametrize("entry, match", [
    ("tests._custom_env:ResetRaises", "reset raised RuntimeError: reset exploded"),
    ("tests._custom_env:WrongObs", "returned an observation of 3 values"),
])
def test_environment_failures_are_exit_2_naming_the_environment(tmp_path, capsys, entry,
                                                                 match):
    pol = scripted_controller(tmp_path / "p.pt")
    for workers in ("1", "2"):
        assert main(["evaluate", pol, "--env", entry, "--episodes", "2", "--workers", workers,
                     "--out", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("certrl: error: ") and match in err and entry in err


def test_bad_env_kwargs_for_a_class():
    with pytest.raises(EnvError, match="bad --env-kwargs"):
        resolve_env(ENTRY, {"no_such_kwarg": 1})


def test_unknown_bounds_need_reward_bounds_for_certify(tmp_path, capsys):
    pol = scripted_controller(tmp_path / "p.pt")
    args = ["certify", pol, "--env", "tests._custom_env:Unbounded", "--env-kwargs",
            '{"max_episode_steps": 20}', "--episodes", "20", "--no-attack", "--workers", "1",
            "--out", str(tmp_path / "r")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--reward-bounds" in err and "certify" in err
    assert main([*args, "--reward-bounds", "0,1"]) == 0
    data = load_results(next((tmp_path / "r").glob("*.json")))
    cert = data["certificates"]
    assert cert["bounds_kind"] == "user" and cert["reward_lower_bound"] == 0.0
    assert data["env"]["entry_point"] == "tests._custom_env:Unbounded"


def test_cli_evaluate_and_certify_custom_env_with_workers(tmp_path, capsys):
    """Workers (spawned processes) re-import the custom environment's module."""
    pol = scripted_controller(tmp_path / "p.pt")
    out = tmp_path / "r"
    assert main(["evaluate", pol, "--env", ENTRY, "--env-kwargs", '{"start": 0.5}',
                 "--episodes", "6", "--workers", "2", "--out", str(out)]) == 0
    rets_w2 = load_results(next(out.glob("*.json")))["evaluation"]["returns"]
    assert main(["evaluate", pol, "--env", ENTRY, "--env-kwargs", '{"start": 0.5}',
                 "--episodes", "6", "--workers", "1", "--out", str(tmp_path / "r1")]) == 0
    assert load_results(next((tmp_path / "r1").glob("*.json")))["evaluation"]["returns"] \
        == rets_w2
    # the controller keeps the point near the origin: reward close to 1 on most steps
    assert min(rets_w2) > 40.0
    assert main(["certify", pol, "--env", ENTRY, "--sigma", "0.1", "--budgets", "0,0.1",
                 "--episodes", "100", "--attack-episodes", "4", "--workers", "2",
                 "--out", str(out)]) == 0
    cert = load_results(next(out.glob("*.json")))["certificates"]
    assert cert["bounds_kind"] == "env" and cert["reward_upper_bound"] == 50.0
    lb = cert["budgets"][1]["expected_return_lower_bound"]
    assert 0.0 < lb < np.mean(cert["smoothed_returns"])


def test_torchscript_takes_obs_size_and_head_from_the_env(tmp_path, capsys):
    """The issue's case: ``obs @ self.w`` has no Linear weight; --env cartpole says 4."""
    path = _script(_MatmulLogits(), tmp_path / "ts.pt")
    from certrl.policies import PolicyError, load_policy

    with pytest.raises(PolicyError, match="pass --env"):
        load_policy(path)
    env = gym.make("CartPole-v1")
    pol = load_policy(path, observation_space=env.observation_space,
                      action_space=env.action_space)
    assert pol.obs_dim == 4 and pol.head == "categorical" and pol.n_actions == 2
    obs = np.random.default_rng(0).normal(size=(9, 4)).astype(np.float32)
    want = np.argmax(obs @ _MatmulLogits().w.numpy(), axis=1)
    assert np.array_equal(pol.predict(obs), want)
    assert main(["evaluate", path, "--env", "cartpole", "--episodes", "3", "--workers", "1",
                 "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main(["policy-info", path, "--env", "cartpole"]) == 0
    text = capsys.readouterr().out
    assert "torchscript" in text and "categorical" in text


def test_envspec_passed_through_and_kwargs_merge():
    spec = resolve_env(ENTRY)
    assert resolve_env(spec) is spec
    merged = resolve_env(spec, {"start": 0.25})
    assert merged.kwargs == {"start": 0.25} and merged.custom
    assert isinstance(merged, EnvSpec) and math.isfinite(merged.return_bounds[1])
