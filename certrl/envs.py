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

* ``user`` — given with ``--reward-bounds LO,HI`` (per step; ``reward_bounds=`` in the API),
  which overrides the others.
* ``env`` — declared by a custom environment as a ``reward_bounds = (lo, hi)`` attribute (per
  step; the environment's author vouches for them).
* ``unknown`` — any other registered id or custom environment: evaluation and attacks run, but a
  certificate (which needs a true bound on the return) stops with a one-line error asking for
  ``--reward-bounds``.

Custom environments (``--env package.module:ClassOrFactory``, ``--env-kwargs`` for its keyword
arguments, or an environment factory in the API) are made through Gymnasium's own
:class:`gymnasium.envs.registration.EnvSpec` (so they get the usual ``TimeLimit`` and
``OrderEnforcing`` wrappers); ``package.module:EnvId-v0`` is Gymnasium's own syntax (import the
module, which registers the id, then make it). The horizon comes from ``max_episode_steps`` in
``--env-kwargs``, else the environment's ``spec.max_episode_steps``, else a ``TimeLimit`` the
factory applied, else a ``max_episode_steps`` attribute; a custom environment without one is an
error (certificates need the horizon).

Default attack budgets are the l_inf radii in *normalized* observation space of SA-PPO / ATLA /
PA-AD (Zhang et al. 2020, 2021; Sun et al. 2022): Hopper 0.075, Walker2d 0.05,
HalfCheetah 0.15, Ant 0.15, Humanoid 0.075; InvertedPendulum 0.3 from SA-DDPG. Environments the
literature has no budget for get ``None`` and the user must pass ``--eps``.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import pickle
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import gymnasium as gym
import numpy as np


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
    #: ``"package.module:ClassOrFactory"`` of a custom environment (``None``: a Gymnasium id)
    entry_point: str | None = None
    #: an environment factory given through the API (``None`` otherwise)
    factory: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    #: frames per observation when the observation is a stack of the last frames, channels
    #: first (Atari: 4); 0 otherwise. Smoothing noise is then drawn once per *frame*
    #: (:class:`certrl.smoothing.FrameSmoothing`), as Kumar et al. add it before stacking.
    frame_stack: int = 0
    #: every return is a multiple of this (Atari game scores: 1); lets ``certify`` use the
    #: Clopper-Pearson lattice band when the lattice is small (``None``: not known)
    return_step: float | None = None

    @property
    def custom(self) -> bool:
        """Whether this is a custom environment (an entry point or a factory)."""
        return self.entry_point is not None or self.factory is not None

    @property
    def bounds_known(self) -> bool:
        """Whether the per-step reward bounds are known (certificates need them)."""
        return self.bounds_kind != "unknown"

    def require_bounds(self, what: str = "a certificate") -> None:
        """Raise :class:`EnvError` (one line) when the reward bounds are unknown."""
        if not self.bounds_known:
            raise EnvError(
                f"{what} needs per-step reward bounds, and {self.gym_id} does not document "
                "them: pass --reward-bounds LO,HI (reward_bounds=(lo, hi) in the API), or give "
                "the environment a reward_bounds = (lo, hi) attribute"
            )

    def factory_picklable(self) -> bool:
        """Whether the factory can be sent to worker processes (module-level callables can)."""
        return self.factory is None or picklable(self.factory)

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
        if self.custom:
            return _make_custom(self, kwargs)
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
        out = {
            "alias": self.alias,
            "id": self.gym_id,
            "kwargs": dict(self.kwargs),
            "horizon": self.horizon,
            "step_reward_bounds": [_finite_or_none(v) for v in self.step_reward_bounds],
            "bounds_kind": self.bounds_kind,
            "return_bounds": [_finite_or_none(a), _finite_or_none(b)],
            "default_eps": self.default_eps,
        }
        if self.custom:
            out["entry_point"] = self.entry_point or _callable_name(self.factory)
        if self.frame_stack:
            out["frame_stack"] = self.frame_stack
        return out


def picklable(obj: Any) -> bool:
    """Whether ``obj`` can be sent to a worker process (lambdas, closures, local classes and
    TorchScript modules cannot)."""
    try:
        pickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001 - any pickling failure means "no"
        return False


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _callable_name(fn: Any) -> str:
    """A name for an environment factory that tells different factories apart (it names the
    results file and keys the journal): ``module:qualname`` for a module-level function or
    class, plus ``#`` and a fingerprint of what it holds for anything else (a
    ``functools.partial`` and its arguments, a callable instance, a lambda or closure)."""
    import hashlib
    import inspect

    target = getattr(fn, "func", fn)  # functools.partial
    mod = getattr(target, "__module__", None) or type(target).__module__ or "?"
    qual = getattr(target, "__qualname__", None) or type(target).__qualname__
    plain = (inspect.isfunction(fn) or inspect.isclass(fn)) and "<" not in qual
    if plain:
        return f"{mod}:{qual}"
    try:
        blob = pickle.dumps(fn)
    except Exception:  # noqa: BLE001 - lambdas, closures: their code and captured values
        code = getattr(fn, "__code__", None)
        cells = [getattr(c, "cell_contents", None) for c in (getattr(fn, "__closure__", None)
                                                             or ())]
        blob = repr((qual, getattr(code, "co_code", b""), getattr(code, "co_consts", ()),
                     getattr(fn, "__defaults__", None), cells)).encode()
    return f"{mod}:{qual}#{hashlib.sha256(blob).hexdigest()[:10]}"


def _horizon(value: Any, where: str) -> int:
    """``max_episode_steps`` as a positive int (one-line :class:`EnvError` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise EnvError(f"{where}: max_episode_steps must be a positive integer, got {value!r}")
    try:
        f = float(value)
    except ValueError:
        raise EnvError(f"{where}: max_episode_steps must be a positive integer, got "
                       f"{value!r}") from None
    if not (math.isfinite(f) and f >= 1 and f == int(f)):
        raise EnvError(f"{where}: max_episode_steps must be a positive integer, got {value!r}")
    return int(f)


_UNKNOWN = (-math.inf, math.inf)


def import_entry_point(entry: str) -> Any:
    """``"package.module:Attr"`` -> the attribute (an environment class or factory)."""
    mod_name, _, attr = entry.partition(":")
    module = _import_env_module(entry, mod_name)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EnvError(f"--env {entry}: {mod_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise EnvError(f"--env {entry}: {attr} is not a class or factory")
    return obj


def _make_custom(spec: EnvSpec, kwargs: dict[str, Any]) -> gym.Env:
    """Make a custom environment through Gymnasium's EnvSpec (TimeLimit at the horizon)."""
    from gymnasium.envs.registration import EnvSpec as GymSpec

    kwargs = {k: v for k, v in kwargs.items() if k != "max_episode_steps"}
    entry = spec.factory if spec.factory is not None else spec.entry_point
    gspec = GymSpec(id=_gym_safe_id(spec.gym_id), entry_point=entry,
                    max_episode_steps=spec.horizon, disable_env_checker=True, kwargs=kwargs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gymnasium's id-format warnings for custom specs
            env = gym.make(gspec)
    except EnvError:
        raise
    except TypeError as e:
        raise EnvError(f"{spec.gym_id}: bad --env-kwargs ({e})") from None
    except Exception as e:  # noqa: BLE001 - user code: report it as one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EnvError(f"{spec.gym_id}: making the environment failed ({type(e).__name__}: "
                       f"{first})") from None
    if not hasattr(env, "step") or not hasattr(env, "reset"):
        raise EnvError(f"{spec.gym_id}: the factory returned {type(env).__name__}, not a "
                       "gymnasium.Env")
    return env


def _gym_safe_id(name: str) -> str:
    return "certrl-custom/" + "".join(c if c.isalnum() or c in "_." else "_" for c in name)


def _declared_horizon(env: Any) -> int | None:
    spec = getattr(env, "spec", None)
    if spec is not None and getattr(spec, "max_episode_steps", None):
        return int(spec.max_episode_steps)
    e = env
    while e is not None:
        steps = getattr(e, "_max_episode_steps", None)
        if isinstance(steps, int) and steps > 0:
            return steps
        e = getattr(e, "env", None)
    steps = getattr(getattr(env, "unwrapped", env), "max_episode_steps", None)
    return int(steps) if isinstance(steps, int) and steps > 0 else None


def _declared_bounds(env: Any) -> tuple[float, float] | None:
    raw = getattr(getattr(env, "unwrapped", env), "reward_bounds", None)
    if raw is None:
        return None
    try:
        lo, hi = (float(v) for v in raw)
    except (TypeError, ValueError):
        raise EnvError(f"{type(env.unwrapped).__name__}.reward_bounds = {raw!r}: expected a "
                       "pair (lo, hi) of per-step rewards") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise EnvError(f"{type(env.unwrapped).__name__}.reward_bounds = {raw!r}: need finite "
                       "lo <= hi")
    return lo, hi


def custom_env(target: str | Callable[..., Any], kwargs: dict[str, Any]) -> EnvSpec:
    """An :class:`EnvSpec` for ``package.module:ClassOrFactory`` or a factory callable.

    Makes the environment once to read its horizon and declared reward bounds (see the module
    docstring for where each comes from)."""
    if isinstance(target, str):
        factory, entry, name = None, target, target
        fn = import_entry_point(target)
    else:
        factory, entry, name = target, None, _callable_name(target)
        fn = target
    make_kwargs = {k: v for k, v in kwargs.items() if k != "max_episode_steps"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = fn(**make_kwargs)
    except TypeError as e:
        raise EnvError(f"{name}: bad --env-kwargs ({e})") from None
    except Exception as e:  # noqa: BLE001 - user code
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise EnvError(f"{name}: making the environment failed ({type(e).__name__}: {first})"
                       ) from None
    try:
        if not (hasattr(probe, "step") and hasattr(probe, "reset")
                and hasattr(probe, "observation_space") and hasattr(probe, "action_space")):
            raise EnvError(f"{name}: returned {type(probe).__name__}, not a gymnasium.Env "
                           "(needs reset, step, observation_space, action_space)")
        given = kwargs.get("max_episode_steps")
        horizon = _horizon(given, name) if given is not None else _declared_horizon(probe)
        if not horizon:
            raise EnvError(
                f"{name}: the environment has no horizon (no spec.max_episode_steps, TimeLimit "
                "or max_episode_steps attribute); pass --env-kwargs '{\"max_episode_steps\": "
                "N}'"
            )
        bounds = _declared_bounds(probe)
    finally:
        try:
            probe.close()
        except Exception:  # noqa: BLE001
            pass
    kind = "env" if bounds is not None else "unknown"
    return EnvSpec(name, name, int(horizon), bounds or _UNKNOWN, kind, None,
                   kwargs=dict(kwargs), notes="custom environment", entry_point=entry,
                   factory=factory)


_PENDULUM_LO = -(math.pi**2 + 0.1 * 8.0**2 + 0.001 * 2.0**2)

#: certrl's Gymnasium ids of the Atari variants (:mod:`certrl.atari`; the entry point, and
#: ale-py, are imported only when one is made): ``id -> (make_atari kwargs, horizon)``.
ATARI_VARIANTS: dict[str, tuple[dict[str, Any], int]] = {
    "certrl/Pong-v0": ({"game": "pong"}, 27_000),
    "certrl/PongOneRound-v0": ({"game": "pong", "one_round": True,
                                "repeat_action_probability": 0.25}, 27_000),
    "certrl/Freeway-v0": ({"game": "freeway"}, 27_000),
    "certrl/Freeway250-v0": ({"game": "freeway", "difficulty": 1,
                              "repeat_action_probability": 0.25}, 250),
}
for _id, (_kw, _steps) in ATARI_VARIANTS.items():
    if _id not in gym.registry:
        gym.register(_id, entry_point="certrl.atari:make_atari", kwargs=dict(_kw),
                     max_episode_steps=_steps, disable_env_checker=True)
_SADQN = "SA-DQN (Zhang et al. 2020), l_inf on [0, 1] pixels"

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
        EnvSpec("pong", "certrl/Pong-v0", 27_000, (-1.0, 1.0), "exact", 1 / 255, _SADQN,
                notes="Atari Pong, a full game (first to 21); SB3 AtariWrapper preprocessing, "
                "4 stacked 84x84 frames", episode_bounds=(-21.0, 21.0), frame_stack=4,
                return_step=1.0),
        EnvSpec("pong-one-round", "certrl/PongOneRound-v0", 27_000, (0.0, 1.0), "exact",
                1 / 255, _SADQN, notes="Kumar et al.'s one-round Pong: sticky actions 0.25, the "
                "episode ends at the first point, return 1 if the agent scores it, else 0",
                episode_bounds=(0.0, 1.0), frame_stack=4, return_step=1.0),
        EnvSpec("freeway", "certrl/Freeway-v0", 27_000, (0.0, 1.0), "exact", 1 / 255, _SADQN,
                notes="Atari Freeway, a full game (2 min 16 s); one point per crossing",
                frame_stack=4, return_step=1.0),
        EnvSpec("freeway-250", "certrl/Freeway250-v0", 250, (0.0, 1.0), "exact", 1 / 255,
                _SADQN, notes="Kumar et al.'s Freeway: hard difficulty, sticky actions 0.25, "
                "250 agent steps", frame_stack=4, return_step=1.0),
    ]
}
_BY_ID = {s.gym_id: s for s in ALIASES.values()}


def resolve_env(
    name: str | Callable[..., Any] | EnvSpec, env_kwargs: dict[str, Any] | str | None = None
) -> EnvSpec:
    """An alias (``hopper``), a known Gymnasium id (``Hopper-v5``), any registered id,
    ``package.module:EnvId-v0`` (Gymnasium's import-then-make syntax),
    ``package.module:ClassOrFactory`` or an environment factory (a callable returning a
    ``gymnasium.Env``); ``env_kwargs`` are its keyword arguments.

    Other registered ids and custom environments have ``unknown`` reward bounds (unless the
    environment declares ``reward_bounds``) and no default budget: certificates then need
    ``--reward-bounds``."""
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
    if isinstance(name, EnvSpec):
        if not kwargs:
            return name
        if name.custom:
            return custom_env(name.factory or name.entry_point or "", {**name.kwargs, **kwargs})
        spec = name
        name = spec.gym_id
    elif callable(name):
        return custom_env(name, kwargs)
    elif ":" in name:
        mod_name, _, attr = name.partition(":")
        module = _import_env_module(name, mod_name)
        if not hasattr(module, attr.split(".")[0]):
            # Gymnasium's "module:EnvId-v0": importing the module registered the id
            if attr not in gym.registry:
                raise EnvError(f"--env {name}: {mod_name} has no attribute {attr!r} and did not "
                               f"register a Gymnasium id {attr!r}")
            spec = None
        else:
            return custom_env(name, kwargs)
    else:
        spec = ALIASES.get(name.lower()) or _BY_ID.get(name)
    if spec is None:
        if (name.partition(":")[2] or name) not in gym.registry:
            close = [a for a in ALIASES if name.lower()[:4] in a] + [
                k for k in gym.registry if name.lower()[:5] in k.lower()
            ][:5]
            hint = f" (did you mean {', '.join(close[:5])}?)" if close else ""
            raise EnvError(
                f"unknown environment {name!r}{hint}; `certrl envs` lists the supported ones, "
                "and any registered Gymnasium id or package.module:ClassOrFactory is accepted"
            )
        reg = gym.registry[name.partition(":")[2] or name]
        if not reg.max_episode_steps and "max_episode_steps" not in kwargs:
            raise EnvError(f"{name}: the registered environment has no max_episode_steps; pass "
                           "--env-kwargs '{\"max_episode_steps\": N}'")
        horizon = (_horizon(kwargs["max_episode_steps"], name) if "max_episode_steps" in kwargs
                   else int(reg.max_episode_steps))
        declared = _registered_bounds(name, kwargs)
        spec = EnvSpec(name, name, horizon, declared or _UNKNOWN,
                       "env" if declared else "unknown", None,
                       notes="reward bounds declared by the environment" if declared else
                       "reward bounds unknown: pass --reward-bounds for certificates")
    if kwargs:
        horizon = (_horizon(kwargs["max_episode_steps"], spec.gym_id)
                   if "max_episode_steps" in kwargs else spec.horizon)
        spec = replace(spec, horizon=horizon, kwargs={**spec.kwargs, **kwargs},
                       episode_bounds=spec.episode_bounds if horizon == spec.horizon else None)
    return spec


def _registered_bounds(name: str, kwargs: dict[str, Any]) -> tuple[float, float] | None:
    """The ``reward_bounds`` a registered environment's class declares (``None``: none, or
    the environment cannot be made here; making it then fails later with its own message)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            env = gym.make(name, disable_env_checker=True,
                           **{k: v for k, v in kwargs.items() if k != "max_episode_steps"})
    except Exception:  # noqa: BLE001
        return None
    try:
        return _declared_bounds(env)
    finally:
        env.close()


def _import_env_module(entry: str, mod_name: str) -> Any:
    """Import the module of a custom environment; the working directory is searched too (as
    ``python -m`` does), after the installed packages, so ``--env my_envs:Walk`` finds
    ``./my_envs.py``. Worker processes inherit the search path."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    if not mod_name or mod_name.startswith(".") or not all(
            p.isidentifier() for p in mod_name.split(".")):
        raise EnvError(f"--env {entry}: {mod_name!r} is not a module name; use "
                       "package.module:ClassOrFactory")
    try:
        return importlib.import_module(mod_name)
    except ImportError as e:
        raise EnvError(
            f"--env {entry}: cannot import {mod_name} ({e}); check the module is installed or on "
            "PYTHONPATH"
        ) from None


def with_reward_bounds(spec: EnvSpec, lo: float, hi: float) -> EnvSpec:
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise EnvError(f"--reward-bounds {lo},{hi}: need finite LO <= HI (per-step rewards)")
    return replace(spec, step_reward_bounds=(float(lo), float(hi)), bounds_kind="user",
                   episode_bounds=None)


def env_table() -> list[dict[str, Any]]:
    """Rows for ``certrl envs``: alias, id, spaces, horizon, bounds, default budget."""
    rows = []
    for spec in ALIASES.values():
        row = spec.to_json()
        try:
            env = spec.make()
            shape = tuple(int(d) for d in env.observation_space.shape)  # type: ignore[union-attr]
            row["obs_dim"] = int(np.prod(shape))
            if len(shape) > 1:
                row["obs_shape"] = list(shape)
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


#: Documented observation entries of the classic-control tasks (Gymnasium's docs).
_OBS_NAMES: dict[str, list[str]] = {
    "CartPole": ["cart position", "cart velocity", "pole angle", "pole angular velocity"],
    "Pendulum": ["cos(theta)", "sin(theta)", "theta dot"],
    "MountainCar": ["position", "velocity"],
    "MountainCarContinuous": ["position", "velocity"],
    "Acrobot": ["cos(theta1)", "sin(theta1)", "cos(theta2)", "sin(theta2)", "theta1 dot",
                "theta2 dot"],
}


def _mujoco_qnames(model: Any) -> tuple[list[str], list[str]]:
    """Names of the MuJoCo model's qpos and qvel entries, from its joints."""
    qpos: list[str] = [""] * int(model.nq)
    qvel: list[str] = [""] * int(model.nv)
    npos = {0: 7, 1: 4, 2: 1, 3: 1}  # free, ball, slide, hinge
    nvel = {0: 6, 1: 3, 2: 1, 3: 1}
    for j in range(int(model.njnt)):
        name = model.joint(j).name or f"joint{j}"
        kind = int(model.jnt_type[j])
        pa, va = int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j])
        for i in range(npos[kind]):
            qpos[pa + i] = name if npos[kind] == 1 else f"{name}[{i}]"
        for i in range(nvel[kind]):
            qvel[va + i] = name if nvel[kind] == 1 else f"{name}[{i}]"
    return qpos, qvel


def observation_names(env: Any) -> list[str]:
    """A name for every entry of ``env``'s flat observation: the documented entries of the
    classic-control tasks, ``<joint> pos`` / ``<joint> vel`` for MuJoCo tasks whose observation
    is ``[qpos[skip:], qvel, ...]`` (Hopper, Walker2d, HalfCheetah, Swimmer, InvertedPendulum,
    and the first entries of Ant / Humanoid), ``obs[i]`` for anything else."""
    shape = getattr(env.observation_space, "shape", None) or (0,)
    n = int(np.prod(shape))
    names = [f"obs[{i}]" for i in range(n)]
    u = env.unwrapped
    spec_id = getattr(getattr(env, "spec", None), "id", "") or ""
    base = spec_id.split(":")[-1].split("/")[-1].split("-v")[0]
    if base in _OBS_NAMES and len(_OBS_NAMES[base]) == n:
        return list(_OBS_NAMES[base])
    model = getattr(u, "model", None)
    if model is None or not hasattr(model, "njnt"):
        return names
    try:
        qpos, qvel = _mujoco_qnames(model)
    except Exception:  # noqa: BLE001 - an unusual model: generic names
        return names
    skip = 0
    if getattr(u, "_exclude_current_positions_from_observation", False):
        skip = 2 if base == "Swimmer" else 1
        if qpos and qpos[0].endswith("[0]"):  # a free joint (Ant, Humanoid): x and y
            skip = 2
    labelled = [f"{q} pos" for q in qpos[skip:]] + [f"{v} vel" for v in qvel]
    for i, lab in enumerate(labelled[:n]):
        names[i] = lab
    return names
