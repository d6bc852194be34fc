"""The engine interface of the lockstep evaluator: :class:`EnvBatch` (one environment per slot,
stepped by Gymnasium) and the :data:`ENGINES` registry that faster engines add themselves to.

Nothing here imports the evaluator: the evaluator imports this (data flows one way), and the
fast engines (:mod:`certrl.engines.mujoco_batch`) subclass :class:`EnvBatch`. Importing
:mod:`certrl.engines` registers them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from certrl.envs import EnvSpec
from certrl.errors import EvaluationError


def _env_failure(spec: EnvSpec, what: str, e: Exception) -> EvaluationError:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return EvaluationError(f"{spec.gym_id}: the environment's {what} raised {type(e).__name__}: "
                           f"{first}; fix the environment (or its --env-kwargs)")


class EnvBatch:
    """The environments of one lockstep batch: slot ``k`` owns environment ``k``.

    The default engine steps Gymnasium environments one after the other. Faster engines (raw
    MuJoCo on a thread pool) subclass it, override :meth:`step_arrays` (the evaluator's only
    stepping call), ``reset`` and, if they cache model quantities, :meth:`refresh`, and must
    reproduce Gymnasium's observations, rewards, ``terminated`` / ``truncated`` exactly (see
    ``ENGINES``). Hooks reach a slot's environment only through :meth:`unwrapped`."""

    #: The batch width ``--batch-size`` defaults to on this engine (:func:`default_batch_size`):
    #: one Gymnasium environment per slot (~1.5 MB for Hopper) keeps it moderate.
    default_width = 128

    def __init__(self, spec: EnvSpec, width: int, env_kwargs: dict[str, Any]) -> None:
        self.spec = spec
        self.envs = [spec.make(**env_kwargs) for _ in range(width)]
        shape = getattr(self.envs[0].observation_space, "shape", None) if self.envs else None
        self._obs_size = int(np.prod(shape)) if shape else None

    def _check_obs(self, o: Any, what: str) -> np.ndarray:
        o = np.asarray(o).reshape(-1)
        if self._obs_size is not None and o.size != self._obs_size:
            raise EvaluationError(
                f"{self.spec.gym_id}: {what} returned an observation of {o.size} values but the "
                f"environment's observation_space has {self._obs_size}; fix the environment")
        return o

    def unwrapped(self, k: int) -> Any:
        return self.envs[k].unwrapped

    def handed_out(self) -> list[Any]:
        """The unwrapped environments :meth:`unwrapped` may have handed to hooks."""
        return [e.unwrapped for e in self.envs]

    def reset(self, k: int, seed: int) -> np.ndarray:
        try:
            obs = self.envs[k].reset(seed=seed)[0]
        except Exception as e:  # noqa: BLE001 - the environment's own code
            raise _env_failure(self.spec, "reset", e) from None
        return self._check_obs(obs, "reset")

    def step_arrays(
        self, ks: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step the environments of slots ``ks`` with ``actions`` (row ``j`` for slot
        ``ks[j]``; a 1-D integer array for discrete actions). Returns ``(obs [n, obs_dim],
        reward [n] float64, terminated [n] bool, truncated [n] bool)``."""
        n = len(ks)
        acts = actions.tolist() if actions.ndim == 1 else list(actions)
        obs: list[np.ndarray] = []
        rew = np.empty(n)
        term = np.empty(n, dtype=bool)
        trunc = np.empty(n, dtype=bool)
        for j, k in enumerate(ks.tolist()):
            try:
                o, r, te, tr, _ = self.envs[k].step(acts[j])
            except Exception as e:  # noqa: BLE001 - the environment's own code
                raise _env_failure(self.spec, "step", e) from None
            obs.append(self._check_obs(o, "step"))
            rew[j], term[j], trunc[j] = float(r), bool(te), bool(tr)
        return (np.stack(obs) if obs else np.empty((0, 0))), rew, term, trunc

    def step(
        self, ks: np.ndarray, actions: list[Any]
    ) -> list[tuple[np.ndarray, float, bool, bool]]:
        """:meth:`step_arrays` as one ``(obs, reward, terminated, truncated)`` per row."""
        o, r, te, tr = self.step_arrays(np.asarray(ks), np.asarray(actions))
        return list(zip(o, r.tolist(), te.tolist(), tr.tolist(), strict=True))

    def refresh(self, ks: np.ndarray) -> None:  # noqa: B027
        """Called after per-step environment hooks changed the models of slots ``ks``
        (engines that cache model quantities re-read them here)."""

    def close(self) -> None:
        for e in self.envs:
            e.close()


#: Simulation engines by name: ``ENGINES[name](spec, width, env_kwargs) -> EnvBatch``, with
#: ``supports(spec)`` telling whether an engine handles an environment. "gym" handles all.
ENGINES: dict[str, Any] = {"gym": EnvBatch}


def engine_class(engine: str, spec: EnvSpec, env_kwargs: dict[str, Any]) -> type[EnvBatch]:
    """The :class:`EnvBatch` class that ``engine`` (a name of :data:`ENGINES`, or ``"auto"``:
    the first fast engine that supports ``spec``, else ``"gym"``) resolves to."""
    if engine == "auto":
        for name, cls in ENGINES.items():
            if (name != "gym" and not env_kwargs
                    and getattr(cls, "supports", lambda s: False)(spec)):
                return cls  # type: ignore[no-any-return]
        engine = "gym"
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; available: {sorted(ENGINES)}")
    cls = ENGINES[engine]
    if engine != "gym" and not cls.supports(spec):
        raise ValueError(f"engine {engine!r} does not support {spec.gym_id}; use --engine gym")
    return cls  # type: ignore[no-any-return]


def make_batch(engine: str, spec: EnvSpec, width: int, env_kwargs: dict[str, Any]) -> EnvBatch:
    return engine_class(engine, spec, env_kwargs)(spec, width, env_kwargs)


def default_batch_size(engine: str, spec: EnvSpec, env_kwargs: dict[str, Any] | None = None,
                       env_hooks: bool = False) -> int:
    """The lockstep width ``--batch-size`` defaults to: the engine's ``default_width`` (512 on
    the ``mujoco`` engine, whose slots are state rows: each lockstep iteration pays a fixed
    ~1 ms of Python and torch calls, so wider batches amortize it; 128 on ``gym``, one
    Gymnasium environment per slot). With environment hooks every slot holds its own
    environment on any engine, so the ``gym`` width applies. Results never depend on it."""
    if env_hooks:
        return EnvBatch.default_width
    return int(engine_class(engine, spec, dict(env_kwargs or {})).default_width)
