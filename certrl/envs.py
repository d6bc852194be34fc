"""Supported environments: aliases, horizons, reward bounds and default attack budgets.

Reward bounds ``[lo, hi]`` per step are what certificates need (the expected-return certificate
requires a true lower bound ``a`` on the episode return). They come in two kinds, recorded in
``EnvSpec.bounds_kind``:

* ``exact`` — the reward function is bounded by construction (CartPole: 1 per step; Pendulum:
  ``-(pi^2 + 0.1 * 8^2 + 0.001 * 2^2) <= r <= 0``; MountainCar: -1 per step; InvertedPendulum-v5:
  ``r = 1`` while alive). The episode bounds follow from the horizon:
  ``a = min(0, lo) * H`` if ``lo < 0`` else ``lo`` (an episode lasts at least one step),
  ``b = max(0, hi) * H``.
* ``clip`` — locomotion rewards contain the forward velocity, which has no hard bound. certrl
  then *defines* the certified quantity as the return with per-step rewards clipped to
  ``[lo, hi]`` (chosen well outside what trained agents reach: several times the largest
  per-step reward of strong published policies), counts the clipped steps (it should be 0;
  a non-zero count is printed and stored) and derives ``a``, ``b`` from the horizon as above.
  Clipping from above can only lower the return, so a certificate on the clipped return is a
  certificate on the true return whenever no step falls below ``lo``.

Users override both with ``--reward-bounds LO,HI`` (per step) on the command line.

Default attack budgets are the l_inf radii in *normalized* observation space of SA-PPO / ATLA /
PA-AD (Zhang et al. 2020, 2021; Sun et al. 2022): Hopper 0.075, Walker2d 0.05,
HalfCheetah 0.15, Ant 0.15, Humanoid 0.075; InvertedPendulum 0.3 from SA-DDPG. Environments the
literature has no budget for get ``None`` and the user must pass ``--eps``.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym


class EnvError(ValueError):
    """Unknown environment or bad environment arguments (exit code 2)."""


@dataclass(frozen=True)
class EnvSpec:
    alias: str
    gym_id: str
    horizon: int
    step_reward_bounds: tuple[float, float]
    bounds_kind: str  # "exact" | "clip"
    default_eps: float | None = None
    eps_source: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    episode_bounds: tuple[float, float] | None = None

    @property
    def return_bounds(self) -> tuple[float, float]:
        """Bounds ``(a, b)`` on the episode return implied by the per-step bounds (or the
        environment's known episode bounds when tighter ones are derived by hand)."""
        if self.episode_bounds is not None:
            return self.episode_bounds
        lo, hi = self.step_reward_bounds
        a = lo * self.horizon if lo < 0 else lo
        b = hi * self.horizon if hi > 0 else hi
        return float(a), float(b)

    def make(self, **extra: Any) -> gym.Env:
        kwargs = {**self.kwargs, **extra}
        try:
            with warnings.catch_warnings():
                # an alias names a deliberate version (cartpole-v0 is Kumar et al.'s setting):
                # gymnasium's "out of date" warning would repeat for every environment
                warnings.filterwarnings("ignore", message=".*is out of date.*")
                return gym.make(self.gym_id, disable_env_checker=True, **kwargs)
        except TypeError as e:
            raise EnvError(f"{self.gym_id}: bad --env-kwargs ({e})") from None

    def to_json(self) -> dict[str, Any]:
        a, b = self.return_bounds
        return {
            "alias": self.alias,
            "id": self.gym_id,
            "kwargs": dict(self.kwargs),
            "horizon": self.horizon,
            "step_reward_bounds": list(self.step_reward_bounds),
            "bounds_kind": self.bounds_kind,
            "return_bounds": [a, b],
            "default_eps": self.default_eps,
        }


_PENDULUM_LO = -(math.pi**2 + 0.1 * 8.0**2 + 0.001 * 2.0**2)

_SA = "SA-PPO/ATLA/PA-AD, l_inf on normalized observations"

ALIASES: dict[str, EnvSpec] = {
    s.alias: s
    for s in [
        EnvSpec("hopper", "Hopper-v5", 1000, (-5.0, 10.0), "clip", 0.075, _SA),
        EnvSpec("walker2d", "Walker2d-v5", 1000, (-5.0, 10.0), "clip", 0.05, _SA),
        EnvSpec("halfcheetah", "HalfCheetah-v5", 1000, (-20.0, 25.0), "clip", 0.15, _SA),
        EnvSpec("ant", "Ant-v5", 1000, (-10.0, 15.0), "clip", 0.15, _SA),
        EnvSpec("humanoid", "Humanoid-v5", 1000, (-10.0, 25.0), "clip", 0.075, _SA),
        EnvSpec("swimmer", "Swimmer-v5", 1000, (-2.0, 2.0), "clip", None),
        EnvSpec(
            "inverted-pendulum", "InvertedPendulum-v5", 1000, (0.0, 1.0), "exact", 0.3,
            "SA-DDPG, l_inf on normalized observations",
        ),
        EnvSpec("cartpole", "CartPole-v1", 500, (1.0, 1.0), "exact", None),
        EnvSpec(
            "cartpole-v0", "CartPole-v0", 200, (1.0, 1.0), "exact", None,
            notes="the 200-step CartPole of Kumar et al. (2022)",
        ),
        EnvSpec("mountaincar", "MountainCar-v0", 200, (-1.0, -1.0), "exact", None),
        EnvSpec(
            "mountaincar-continuous", "MountainCarContinuous-v0", 999, (-0.1, 100.0), "exact",
            None, notes="reward = 100 once at the goal (ends the episode) - 0.1 a^2 per step",
            episode_bounds=(-0.1 * 999, 100.0),
        ),
        EnvSpec("pendulum", "Pendulum-v1", 200, (_PENDULUM_LO, 0.0), "exact", None),
    ]
}
_BY_ID = {s.gym_id: s for s in ALIASES.values()}


def resolve_env(name: str, env_kwargs: dict[str, Any] | str | None = None) -> EnvSpec:
    """An alias (``hopper``), a known Gymnasium id (``Hopper-v5``) or any registered id.

    Unknown registered ids get clip bounds of ``[-1e6, 1e6]`` per step and no default budget:
    pass ``--reward-bounds`` for a meaningful certificate."""
    if isinstance(env_kwargs, str):
        try:
            env_kwargs = json.loads(env_kwargs) if env_kwargs.strip() else {}
        except json.JSONDecodeError as e:
            raise EnvError(
                f"--env-kwargs is not valid JSON ({e.msg}); e.g. '{{\"key\": 1}}'"
            ) from None
        if not isinstance(env_kwargs, dict):
            raise EnvError("--env-kwargs must be a JSON object, e.g. '{\"key\": 1}'")
    kwargs = dict(env_kwargs or {})
    spec = ALIASES.get(name.lower()) or _BY_ID.get(name)
    if spec is None:
        if name not in gym.registry:
            close = [a for a in ALIASES if name.lower()[:4] in a] + [
                k for k in gym.registry if name.lower()[:5] in k.lower()
            ][:5]
            hint = f" (did you mean {', '.join(close[:5])}?)" if close else ""
            raise EnvError(
                f"unknown environment {name!r}{hint}; `certrl envs` lists the supported ones, "
                "and any registered Gymnasium id is accepted"
            )
        reg = gym.registry[name]
        horizon = int(reg.max_episode_steps or 1000)
        spec = EnvSpec(name, name, horizon, (-1e6, 1e6), "clip", None, notes="generic bounds")
    if kwargs:
        horizon = int(kwargs.get("max_episode_steps", spec.horizon))
        spec = EnvSpec(
            spec.alias, spec.gym_id, horizon, spec.step_reward_bounds, spec.bounds_kind,
            spec.default_eps, spec.eps_source, {**spec.kwargs, **kwargs}, spec.notes,
            spec.episode_bounds if horizon == spec.horizon else None,
        )
    return spec


def with_reward_bounds(spec: EnvSpec, lo: float, hi: float) -> EnvSpec:
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise EnvError(f"--reward-bounds {lo},{hi}: need finite LO <= HI (per-step rewards)")
    return EnvSpec(
        spec.alias, spec.gym_id, spec.horizon, (float(lo), float(hi)), "user",
        spec.default_eps, spec.eps_source, spec.kwargs, spec.notes,
    )


def env_table() -> list[dict[str, Any]]:
    """Rows for ``certrl envs``: alias, id, spaces, horizon, bounds, default budget."""
    rows = []
    for spec in ALIASES.values():
        row = spec.to_json()
        try:
            env = spec.make()
            row["obs_dim"] = int(env.observation_space.shape[0])  # type: ignore[index]
            space = env.action_space
            row["action"] = (
                f"Discrete({space.n})" if isinstance(space, gym.spaces.Discrete)
                else f"Box{tuple(space.shape)}"  # type: ignore[arg-type]
            )
            env.close()
        except Exception as e:  # pragma: no cover - missing optional physics
            row["obs_dim"] = None
            row["action"] = f"unavailable ({type(e).__name__})"
        rows.append(row)
    return rows
