"""Small policies made in the tests (random weights, real files in certrl's bundle format)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from certrl.policies.base import ObsNormalization, Policy, build_mlp
from certrl.policies.bundle import save_bundle


def random_bundle(
    tmp: Path, env_id: str, hidden: int = 32, seed: int = 0, normalize: bool = True,
    name: str = "policy", log_std: float = -0.5,
) -> Path:
    """A random-weight MLP policy for ``env_id`` saved as a certrl bundle; returns the .json."""
    env = gym.make(env_id)
    obs_dim = int(env.observation_space.shape[0])
    space = env.action_space
    env.close()
    torch.manual_seed(seed)
    discrete = isinstance(space, gym.spaces.Discrete)
    out = int(space.n) if discrete else int(space.shape[0])
    net = build_mlp([obs_dim, hidden, hidden, out], "tanh")
    state = {k: v for k, v in net.state_dict().items()}
    if not discrete:
        state["log_std"] = torch.full((out,), log_std)
    rng = np.random.default_rng(seed)
    norm = (
        ObsNormalization(rng.normal(size=obs_dim), rng.uniform(0.5, 2.0, obs_dim))
        if normalize
        else None
    )
    return save_bundle(
        tmp / f"{name}.json",
        state=state,
        layers=[obs_dim, hidden, hidden, out],
        activation="tanh",
        head="categorical" if discrete else "gaussian",
        action_space={"type": "discrete", "n": out} if discrete else {
            "type": "box", "low": space.low.tolist(), "high": space.high.tolist()},
        obs_norm=norm,
        env_id=env_id,
    )


def random_policy(env_id: str, seed: int = 0, normalize: bool = True) -> Policy:
    import tempfile

    from certrl.policies.bundle import load_bundle

    with tempfile.TemporaryDirectory() as d:
        return load_bundle(random_bundle(Path(d), env_id, seed=seed, normalize=normalize))


def linear_controller(w: tuple[float, ...] | list[float] = (-2.0, 0.0)) -> torch.nn.Linear:
    """``a = w . obs`` (one output, zero bias): a policy whose Jacobian is known exactly."""
    lin = torch.nn.Linear(len(w), 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([list(w)], dtype=torch.float32))
        lin.bias.zero_()
    return lin


def scripted_controller(path: Path, w: tuple[float, ...] | list[float] = (-2.0, 0.0)) -> str:
    """:func:`linear_controller` saved as a TorchScript file (a raw-observation policy)."""
    torch.jit.save(torch.jit.script(torch.nn.Sequential(linear_controller(w))), str(path))
    return str(path)
