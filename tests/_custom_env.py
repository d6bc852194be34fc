"""Environments defined in the test suite (``--env tests._custom_env:...``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class PointMass(gym.Env):
    """Drive a point on a line to the origin: ``x += 0.1 a``, reward ``1 - min(|x|, 1)`` in
    ``[0, 1]``; terminates when ``|x| > 2``. Declares its horizon and reward bounds."""

    reward_bounds = (0.0, 1.0)
    max_episode_steps = 50

    def __init__(self, start: float = 1.0, render_mode: str | None = None) -> None:
        self.start = float(start)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.x = self.v = 0.0

    def _obs(self) -> np.ndarray:
        return np.array([self.x, self.v], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.x = self.start + float(self.np_random.uniform(-0.1, 0.1))
        self.v = 0.0
        return self._obs(), {}

    def step(self, action: Any):
        a = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        self.v = 0.1 * a
        self.x += self.v
        reward = 1.0 - min(abs(self.x), 1.0)
        return self._obs(), reward, bool(abs(self.x) > 2.0), False, {}


def make_point_mass(start: float = 1.0) -> PointMass:
    """A factory (``--env tests._custom_env:make_point_mass``)."""
    return PointMass(start=start)


class Unbounded(PointMass):
    """The same dynamics without declared horizon or reward bounds."""

    reward_bounds = None  # type: ignore[assignment]
    max_episode_steps = None  # type: ignore[assignment]


class Discrete(gym.Env):
    """Two actions (left/right); obs of size 4; reward 1 per step (CartPole-like bounds)."""

    reward_bounds = (1.0, 1.0)
    max_episode_steps = 30

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.s = np.zeros(4, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.s = self.np_random.uniform(-0.05, 0.05, 4).astype(np.float32)
        return self.s.copy(), {}

    def step(self, action: Any):
        self.s[0] += 0.05 if int(action) == 1 else -0.05
        return self.s.copy(), 1.0, bool(abs(self.s[0]) > 0.5), False, {}


class NotAnEnv:
    """Has no reset/step: ``--env`` must refuse it with one line."""


class ResetRaises(PointMass):
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        raise RuntimeError("reset exploded")


class WrongObs(PointMass):
    """Returns 3 numbers where its observation_space says 2."""

    def step(self, action: Any):
        obs, r, te, tr, info = super().step(action)
        return np.append(obs, 0.0), r, te, tr, info


def broken_factory() -> PointMass:
    raise RuntimeError("simulator licence not found")


gym.register("CertrlTestPointMass-v0", entry_point="tests._custom_env:PointMass",
             max_episode_steps=40)
