"""Policy loaders: every format reproduces its library's deterministic action, and bad inputs
fail with one clear line. All policy files are created here, in ``tmp_path``."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from certrl.policies import (
    Policy,
    PolicyError,
    available_demos,
    load_bundle,
    load_policy,
    policy_summary,
    save_bundle,
    validate_spaces,
)
from certrl.policies.base import ObsNormalization
from certrl.policies.vecnormalize import load_vecnormalize

sb3 = pytest.importorskip("stable_baselines3")
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.vec_env import VecNormalize  # noqa: E402

torch.set_num_threads(1)


def _obs(n: int, d: int, seed: int = 0, scale: float = 2.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, d)) * scale).astype(np.float32)


def _one_line(err: pytest.ExceptionInfo[PolicyError]) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg, msg
    return msg


def _assert_matches(policy: Policy, model: Any, obs: np.ndarray, model_obs: np.ndarray) -> None:
    ref, _ = model.predict(model_obs, deterministic=True)
    got = policy.predict(obs)
    if policy.discrete:
        np.testing.assert_array_equal(got, np.asarray(ref).reshape(got.shape))
    else:
        np.testing.assert_allclose(got, np.asarray(ref).reshape(got.shape), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- SB3
SB3_CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "ppo_box": ("PPO", "Pendulum-v1", {"n_steps": 64, "batch_size": 32}),
    "ppo_discrete": ("PPO", "CartPole-v1", {"n_steps": 64, "batch_size": 32}),
    "ppo_relu_arch": ("PPO", "Pendulum-v1", {"n_steps": 64, "batch_size": 32, "policy_kwargs": {
        "activation_fn": nn.ReLU, "net_arch": {"pi": [32, 16, 8], "vf": [8]}}}),
    "ppo_sde_squash": ("PPO", "Pendulum-v1", {"n_steps": 64, "batch_size": 32, "use_sde": True,
                                              "policy_kwargs": {"squash_output": True}}),
    "a2c": ("A2C", "Pendulum-v1", {}),
    "a2c_discrete": ("A2C", "CartPole-v1", {}),
    "sac": ("SAC", "Pendulum-v1", {"policy_kwargs": {"net_arch": [32, 32]}}),
    "sac_sde": ("SAC", "Pendulum-v1", {"use_sde": True, "policy_kwargs": {"net_arch": [16]}}),
    "td3": ("TD3", "Pendulum-v1", {"policy_kwargs": {"net_arch": [32, 32]}}),
    "ddpg": ("DDPG", "Pendulum-v1", {"policy_kwargs": {"net_arch": [16]}}),
    "dqn": ("DQN", "CartPole-v1", {"policy_kwargs": {"net_arch": [32, 32]}}),
}


def _perturb(model: Any) -> None:
    """Untrained SB3 weights have zero-ish heads (orthogonal init gain 0.01); make every tensor
    matter so the comparison is meaningful."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("case", sorted(SB3_CASES))
def test_sb3_matches_predict(case: str, tmp_path: Path) -> None:
    algo, env_id, kwargs = SB3_CASES[case]
    cls = getattr(sb3, algo)
    model = cls("MlpPolicy", env_id, seed=0, device="cpu", **kwargs)
    _perturb(model)
    model.save(tmp_path / "model.zip")
    policy = load_policy(tmp_path / "model.zip")
    assert policy.info.format == "sb3"
    assert policy.info.algorithm == algo
    assert policy.info.sha256 and policy.info.path.endswith("model.zip")
    obs = _obs(200, policy.obs_dim)
    _assert_matches(policy, model, obs, obs)
    env = gym.make(env_id)
    assert validate_spaces(policy, env.observation_space, env.action_space, env_id) is policy


def test_sb3_vecnormalize_beside_and_explicit(tmp_path: Path) -> None:
    venv = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0), clip_obs=3.0)
    venv.reset()
    for _ in range(30):
        venv.step(np.stack([venv.action_space.sample() for _ in range(2)]))
    model = sb3.PPO("MlpPolicy", venv, n_steps=64, batch_size=32, seed=0, device="cpu")
    _perturb(model)
    model.save(tmp_path / "ppo.zip")
    venv.save(str(tmp_path / "ppo_vecnormalize.pkl"))
    obs = _obs(300, 3, scale=5.0)  # large enough that clip_obs=3 matters
    ref_obs = venv.normalize_obs(obs)

    auto = load_policy(tmp_path / "ppo.zip")
    assert auto.has_normalization
    assert auto.info.details["vecnormalize"].endswith("ppo_vecnormalize.pkl")
    _assert_matches(auto, model, obs, ref_obs)

    # explicit path, different name; the hash covers both files
    other = tmp_path / "stats.pkl"
    other.write_bytes((tmp_path / "ppo_vecnormalize.pkl").read_bytes())
    explicit = load_policy(tmp_path / "ppo.zip", vecnormalize=other)
    _assert_matches(explicit, model, obs, ref_obs)
    assert explicit.info.sha256 == auto.info.sha256 != load_policy(
        tmp_path / "ppo.zip", vecnormalize=None, obs_stats=_npz(tmp_path, 3)).info.sha256

    # norm_obs=False: statistics are ignored, as SB3 does
    venv.norm_obs = False
    venv.save(str(tmp_path / "off.pkl"))
    off = load_policy(tmp_path / "ppo.zip", vecnormalize=tmp_path / "off.pkl")
    assert not off.has_normalization
    _assert_matches(off, model, obs, obs)


def _npz(tmp_path: Path, d: int, **extra: Any) -> Path:
    path = tmp_path / "stats.npz"
    rng = np.random.default_rng(3)
    np.savez(path, mean=rng.standard_normal(d), var=rng.uniform(0.5, 2.0, d), **extra)
    return path


def test_sb3_without_recorded_bounds_takes_them_from_env(tmp_path: Path) -> None:
    model = sb3.TD3("MlpPolicy", "Pendulum-v1", seed=0, device="cpu",
                    policy_kwargs={"net_arch": [16]})
    _perturb(model)
    model.save(tmp_path / "td3.zip")
    # Drop the printed bounds from `data`, as for a space SB3 could only pickle.
    with zipfile.ZipFile(tmp_path / "td3.zip") as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    data = json.loads(members["data"])
    for key in ("low", "high"):
        data["action_space"].pop(key)
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(tmp_path / "nobounds.zip", "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    policy = load_policy(tmp_path / "nobounds.zip")
    assert not policy.bounds_known
    assert policy_summary(policy)["action_bounds"] == "from the environment"
    with pytest.raises(PolicyError, match="action bounds"):
        policy.act(torch.zeros(2, 3))
    env = gym.make("Pendulum-v1")
    policy = validate_spaces(policy, env.observation_space, env.action_space, "Pendulum-v1")
    obs = _obs(100, 3)
    _assert_matches(policy, model, obs, obs)


def test_vecnormalize_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple[Any, ...]:
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "vecnormalize.pkl"
    bad.write_bytes(pickle.dumps({"obs_rms": Evil()}))
    with pytest.raises(PolicyError) as err:
        load_vecnormalize(bad)
    assert "refused" in _one_line(err) and "system" in str(err.value)
    assert not marker.exists()

    class EvalCall:
        def __reduce__(self) -> tuple[Any, ...]:
            return (eval, (f"open({str(marker)!r}, 'w')",))

    bad.write_bytes(pickle.dumps(EvalCall(), protocol=2))
    with pytest.raises(PolicyError):
        load_vecnormalize(bad)
    assert not marker.exists()

    # the malicious file beside an SB3 zip is refused during load_policy too
    sb3.DQN("MlpPolicy", "CartPole-v1", device="cpu").save(tmp_path / "model.zip")
    with pytest.raises(PolicyError):
        load_policy(tmp_path / "model.zip")
    assert not marker.exists()
    # a pickle of something that is not a VecNormalize
    bad.write_bytes(pickle.dumps({"mean": [1.0]}))
    with pytest.raises(PolicyError, match="not an SB3 VecNormalize"):
        load_vecnormalize(bad)


# ----------------------------------------------------------------------------- CleanRL
class CleanRLAgent(nn.Module):
    """CleanRL ppo_continuous_action.py's Agent (the parts that matter here)."""

    def __init__(self, obs_dim: int, act_dim: int) -> None:
        super().__init__()
        self.critic = nn.Sequential(nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 64),
                                    nn.Tanh(), nn.Linear(64, 1))
        self.actor_mean = nn.Sequential(nn.Linear(obs_dim, 64), nn.Tanh(), nn.Linear(64, 64),
                                        nn.Tanh(), nn.Linear(64, act_dim))
        self.actor_logstd = nn.Parameter(torch.full((1, act_dim), -0.5))


class CleanRLTD3Actor(nn.Module):
    def __init__(self, obs_dim: int, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.fc1 = nn.Linear(obs_dim, 32)
        self.fc2 = nn.Linear(32, 32)
        self.fc_mu = nn.Linear(32, low.size)
        self.register_buffer("action_scale", torch.tensor((high - low) / 2.0, dtype=torch.float32))
        self.register_buffer("action_bias", torch.tensor((high + low) / 2.0, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc2(torch.relu(self.fc1(x))))
        return torch.tanh(self.fc_mu(x)) * self.action_scale + self.action_bias


def test_cleanrl_ppo_continuous_with_obs_stats(tmp_path: Path) -> None:
    torch.manual_seed(0)
    agent = CleanRLAgent(11, 3)
    torch.save(agent.state_dict(), tmp_path / "ppo.cleanrl_model")
    policy = load_policy(tmp_path / "ppo.cleanrl_model")
    assert policy.info.format == "cleanrl" and policy.head == "gaussian"
    low, high = -np.ones(3, np.float32), np.ones(3, np.float32)
    box = spaces.Box(-np.inf, np.inf, (11,), np.float64)
    policy = validate_spaces(policy, box, spaces.Box(low, high), "Hopper-v5")
    obs = _obs(100, 11)
    with torch.no_grad():
        ref = agent.actor_mean(torch.as_tensor(obs)).clamp(-1, 1).numpy()
    np.testing.assert_allclose(policy.predict(obs), ref, atol=1e-6)
    torch.testing.assert_close(policy.log_std, agent.actor_logstd.detach().ravel())

    stats = _npz(tmp_path, 11, clip=np.float64(5.0))
    normed = load_policy(tmp_path / "ppo.cleanrl_model", obs_stats=stats)
    normed = validate_spaces(normed, box, spaces.Box(low, high), "Hopper-v5")
    z = np.load(stats)
    nobs = np.clip((obs - z["mean"]) / np.sqrt(z["var"] + 1e-8), -5, 5).astype(np.float32)
    with torch.no_grad():
        ref = agent.actor_mean(torch.as_tensor(nobs)).clamp(-1, 1).numpy()
    np.testing.assert_allclose(normed.predict(obs), ref, atol=1e-5)
    assert policy_summary(normed)["normalization"] == "yes"


def test_cleanrl_td3_tuple_and_dqn(tmp_path: Path) -> None:
    torch.manual_seed(0)
    low, high = np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32)
    actor = CleanRLTD3Actor(5, low, high)
    qf = nn.Sequential(nn.Linear(7, 8))
    torch.save((actor.state_dict(), qf.state_dict(), qf.state_dict()), tmp_path / "td3.pt")
    policy = load_policy(tmp_path / "td3.pt")
    assert policy.bounds_known and policy.head == "deterministic"
    obs = _obs(64, 5)
    with torch.no_grad():
        ref = actor(torch.as_tensor(obs)).numpy()
    np.testing.assert_allclose(policy.predict(obs), ref, atol=1e-6)

    net = nn.Sequential(nn.Linear(4, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                        nn.Linear(84, 2))
    torch.save({"network": {f"network.{k}": v for k, v in net.state_dict().items()}},
               tmp_path / "dqn.pt")
    dqn = load_policy(tmp_path / "dqn.pt", fmt="cleanrl")
    assert dqn.head == "qvalues" and dqn.n_actions == 2
    obs = _obs(64, 4)
    with torch.no_grad():
        ref = net(torch.as_tensor(obs)).argmax(-1).numpy()
    np.testing.assert_array_equal(dqn.predict(obs), ref)


# ----------------------------------------------------------------------------- TorchScript
class _Actor(nn.Module):
    def __init__(self, obs_dim: int, out: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(obs_dim, 16), nn.Tanh(), nn.Linear(16, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_torchscript_continuous_and_discrete(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cont = _Actor(3, 1)
    torch.jit.save(torch.jit.script(cont), str(tmp_path / "pendulum.pt"))
    policy = load_policy(tmp_path / "pendulum.pt")
    assert policy.info.format == "torchscript" and policy.head == "linear"
    env = gym.make("Pendulum-v1")
    policy = validate_spaces(policy, env.observation_space, env.action_space, "Pendulum-v1")
    obs = _obs(50, 3, scale=3.0)
    with torch.no_grad():
        ref = cont(torch.as_tensor(obs)).clamp(-2, 2).numpy()
    np.testing.assert_allclose(policy.predict(obs), ref, atol=1e-6)

    disc = _Actor(4, 2)
    torch.jit.save(torch.jit.script(disc), str(tmp_path / "cartpole.pt"))
    policy = load_policy(tmp_path / "cartpole.pt")
    env = gym.make("CartPole-v1")
    policy = validate_spaces(policy, env.observation_space, env.action_space, "CartPole-v1")
    assert policy.head == "categorical" and policy.n_actions == 2
    obs = _obs(50, 4)
    with torch.no_grad():
        ref = disc(torch.as_tensor(obs)).argmax(-1).numpy()
    np.testing.assert_array_equal(policy.predict(obs), ref)
    # logits of the wrong width for the env
    with pytest.raises(PolicyError) as err:
        validate_spaces(load_policy(tmp_path / "pendulum.pt"), spaces.Box(-1, 1, (3,)),
                        spaces.Discrete(2), "X-v0")
    _one_line(err)


# ----------------------------------------------------------------------------- bundle
def _bundle(tmp_path: Path, head: str = "gaussian") -> Path:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(11, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                        nn.Linear(32, 3))
    state = dict(net.state_dict())
    state["log_std"] = torch.full((3,), -0.7)
    norm = ObsNormalization(mean=np.linspace(-1, 1, 11), var=np.linspace(0.5, 2, 11), clip=5.0)
    return save_bundle(tmp_path / "hop.json", state=state, layers=[11, 32, 32, 3],
                       activation="tanh", head=head, obs_norm=norm, env_id="Hopper-v5",
                       action_space={"type": "box", "low": [-1.0] * 3, "high": [1.0] * 3})


def test_bundle_round_trip(tmp_path: Path) -> None:
    manifest = _bundle(tmp_path)
    direct = load_bundle(manifest)
    via_json = load_policy(manifest)
    via_weights = load_policy(manifest.with_suffix(".safetensors"))
    obs = torch.as_tensor(_obs(100, 11))
    a = direct.act(obs)
    for other in (via_json, via_weights):
        assert torch.equal(other.act(obs), a)
        assert other.info.sha256 == direct.info.sha256
    # re-save from the loaded policy: identical outputs
    state = {k[4:]: v for k, v in via_json.state_dict().items() if k.startswith("net.")}
    state["log_std"] = via_json.log_std.detach()
    again = save_bundle(tmp_path / "again.json", state=state, layers=[11, 32, 32, 3],
                        activation="tanh", head="gaussian", obs_norm=via_json.obs_norm,
                        action_space={"type": "box", "low": [-1.0] * 3, "high": [1.0] * 3})
    assert torch.equal(load_policy(again).act(obs), a)
    s = policy_summary(via_json)
    for key in ("format", "algorithm", "obs_dim", "act_dim", "head", "normalization", "sha256",
                "path", "parameters"):
        assert key in s
    assert s["normalization"] == "yes" and s["parameters"] == 11 * 32 + 32 + 32 * 32 + 32 + 99 + 3


def test_batch_invariance(tmp_path: Path) -> None:
    policy = load_policy(_bundle(tmp_path))
    obs = torch.as_tensor(_obs(1000, 11, seed=5))
    with torch.no_grad():
        ref = policy.act(obs)
        for bs in (1, 3, 7, 64, 1000):
            got = torch.cat([policy.act(obs[i:i + bs]) for i in range(0, 1000, bs)])
            assert torch.equal(got, ref), bs


def test_gradients_flow_through_gaussian_policy(tmp_path: Path) -> None:
    policy = load_policy(_bundle(tmp_path))
    assert policy.head == "gaussian"
    obs = torch.as_tensor(_obs(4, 11, scale=0.1)).requires_grad_()
    with torch.enable_grad():
        policy.act(obs).sum().backward()
    assert obs.grad is not None and obs.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- pickle
def test_unsafe_pickle_needs_the_flag(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    torch.save(module, tmp_path / "whole.pt")
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "whole.pt")
    assert "--unsafe-pickle" in _one_line(err)
    policy = load_policy(tmp_path / "whole.pt", unsafe_pickle=True)
    assert policy.info.format == "pickle"
    policy = validate_spaces(policy, spaces.Box(-1, 1, (4,)), spaces.Discrete(2), "CartPole-v1")
    obs = _obs(30, 4)
    with torch.no_grad():
        ref = module(torch.as_tensor(obs)).argmax(-1).numpy()
    np.testing.assert_array_equal(policy.predict(obs), ref)


# ----------------------------------------------------------------------------- bad inputs
def test_bad_files_fail_with_one_line(tmp_path: Path) -> None:
    sb3.DQN("MlpPolicy", "CartPole-v1", device="cpu").save(tmp_path / "ok.zip")
    full = (tmp_path / "ok.zip").read_bytes()
    (tmp_path / "truncated.zip").write_bytes(full[: len(full) // 2])
    (tmp_path / "empty.zip").write_bytes(b"")
    (tmp_path / "random.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "other.json").write_text('{"hello": 1}')
    zf = zipfile.ZipFile(tmp_path / "notpolicy.zip", "w")
    zf.writestr("readme.txt", "hi")
    zf.close()
    cases = {
        "missing.zip": "not found",
        "empty.zip": "empty",
        "random.bin": "not a recognised policy file",
        "truncated.zip": "damaged zip",
        "other.json": "not a certrl-mlp bundle",
        "notpolicy.zip": "not a policy",
    }
    for name, expected in cases.items():
        with pytest.raises(PolicyError) as err:
            load_policy(tmp_path / name)
        assert expected in _one_line(err), name
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "random.bin", fmt="sb3")
    _one_line(err)
    with pytest.raises(PolicyError) as err:
        load_policy(tmp_path / "random.bin", fmt="cleanrl")
    _one_line(err)
    with pytest.raises(PolicyError) as err:
        load_policy("demo:no-such-policy")
    msg = _one_line(err)
    assert "available demos" in msg and "cartpole" in msg


def test_dims_mismatch_messages(tmp_path: Path) -> None:
    torch.manual_seed(0)
    agent = CleanRLAgent(27, 8)
    torch.save(agent.state_dict(), tmp_path / "ant.pt")
    policy = load_policy(tmp_path / "ant.pt")
    env = gym.make("Ant-v5")
    with pytest.raises(PolicyError) as err:
        validate_spaces(policy, env.observation_space, env.action_space, "Ant-v5")
    msg = _one_line(err)
    assert "expects 27 observations but Ant-v5 gives 105" in msg
    assert "v4 policy" in msg and "include_cfrc_ext_in_observation" in msg
    # ... and the hint is right: the v4-sized policy fits Ant-v5 without cfrc_ext
    env = gym.make("Ant-v5", include_cfrc_ext_in_observation=False)
    fitted = validate_spaces(policy, env.observation_space, env.action_space, "Ant-v5")
    assert fitted.bounds_known and fitted.act(torch.zeros(2, 27)).shape == (2, 8)
    hum = CleanRLAgent(376, 17)
    torch.save(hum.state_dict(), tmp_path / "hum.pt")
    with pytest.raises(PolicyError) as err:
        validate_spaces(load_policy(tmp_path / "hum.pt"), spaces.Box(-1, 1, (348,)),
                        spaces.Box(-1, 1, (17,)), "Humanoid-v5")
    assert "Humanoid-v4" in _one_line(err)
    # wrong action size, discrete policy on a Box env, continuous policy on a Discrete env
    with pytest.raises(PolicyError) as err:
        validate_spaces(policy, spaces.Box(-1, 1, (27,)), spaces.Box(-1, 1, (6,)), "X-v0")
    assert "8 actions" in _one_line(err)
    dqn = load_policy(_save_dqn(tmp_path))
    with pytest.raises(PolicyError) as err:
        validate_spaces(dqn, spaces.Box(-1, 1, (4,)), spaces.Box(-1, 1, (1,)), "X-v0")
    assert "discrete" in _one_line(err)
    with pytest.raises(PolicyError) as err:
        validate_spaces(policy, spaces.Box(-1, 1, (27,)), spaces.Discrete(8), "X-v0")
    assert "continuous" in _one_line(err)


def _save_dqn(tmp_path: Path) -> Path:
    sb3.DQN("MlpPolicy", "CartPole-v1", device="cpu",
            policy_kwargs={"net_arch": [8]}).save(tmp_path / "dqn.zip")
    return tmp_path / "dqn.zip"


def test_demo_policies_load() -> None:
    demos = available_demos()
    if not demos:
        pytest.skip("no demo policies packaged yet")
    for name in demos:
        policy = load_policy(f"demo:{name}")
        pixels = name in ("pong", "freeway")
        assert policy.info.format == ("certrl-cnn" if pixels else "certrl-mlp")
        assert (policy.obs_shape is not None and len(policy.obs_shape) == 3) == pixels
        assert policy_summary(policy)["sha256"] == policy.info.sha256
