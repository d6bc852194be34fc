"""The ``mujoco`` engine: Gymnasium's MuJoCo locomotion tasks stepped on raw ``MjData``.

Why: ``gymnasium.make("Hopper-v5").step`` spends ~19 us of Python per step on top of ~48 us
of physics, and one environment steps on one core. This engine keeps one Gymnasium environment
per slot (so ``unwrapped(k)`` *is* a ``MujocoEnv`` with its own ``.model`` / ``.data``, which
dynamics hooks may modify per slot), but replaces its ``step`` by

1. a persistent thread pool that, for each live slot, writes ``data.ctrl``, calls
   ``mujoco.mj_step(model, data, nstep=frame_skip)`` and ``mj_rnePostConstraint`` (exactly
   ``MujocoEnv._step_mujoco_simulation``) and copies ``qpos`` / ``qvel`` out. ``mj_step``
   releases the GIL, so the threads step different slots on different cores;
2. one vectorized NumPy pass over the whole batch for observation, reward and termination,
   written with the same floating-point operations, in the same order and the same dtypes as
   Gymnasium's ``step`` (``x_velocity = (x_after - x_before) / dt``; the control cost is
   computed on the *unclipped* action in the action's dtype; strict inequalities on the
   unclipped state; the terminating step earns no healthy reward in v5), and the
   ``TimeLimit`` truncation at the registered ``max_episode_steps``.

Resets call the slot's own Gymnasium ``reset(seed=...)`` (``mj_resetData``, the seeded
``np_random`` draws, ``mj_forward``): exact by construction and off the hot path.

The result is bit-identical to ``gymnasium.make(id)`` for the same seeds and actions
(observations, rewards, ``terminated``, ``truncated`` compared with ``==`` step by step in
``tests/test_engines.py``). Only the ids in :data:`TASKS`, with default keyword arguments,
are supported; anything else runs on the ``gym`` engine (``--engine auto``).

Threads: :func:`engine_threads` (default: the cores this process may use; the local backend
gives each of its N worker processes ``cores // N`` threads through :func:`set_engine_threads`,
the Ray backend one per shard; ``CERTRL_ENGINE_THREADS`` overrides). The thread count never
changes results: each slot is stepped by exactly one thread, and the batched reward /
observation pass is elementwise. Slot models are the environments' own (one ``MjModel`` per
slot), so a hook changing ``unwrapped(k).model`` (in place: ``body_mass[...] = ...``) affects
slot ``k`` only, as with the ``gym`` engine (tested); model and data references are re-read at
every reset, so a hook may even replace them before a reset (not in the middle of an episode).

Where the time goes (``benchmarks/bench_throughput.py``): per slot and step the engine adds
~2.5 us of Python around ``mj_step`` (controls in, ``mj_rnePostConstraint``, state out) and
~0.7 us for the batched reward / observation pass, against ~48 us of Hopper physics; a
Gymnasium ``step`` adds ~19 us. ``mujoco.rollout`` is not used: it does not carry the solver
warm start across calls for a whole batch, so it drifts from Gymnasium (~1e-10 by step 500).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from certrl.envs import EnvSpec
from certrl.evaluator import ENGINES, EnvBatch


@dataclass(frozen=True)
class Task:
    """How one Gymnasium MuJoCo task turns ``(qpos, qvel, action)`` into its step outputs."""

    entry_point: str
    #: ``"hopper"`` (state, z and angle ranges), ``"walker2d"`` (z and angle) or ``"none"``.
    health: str
    #: clip of qvel in the observation (``None``: no clip).
    obs_qvel_clip: float | None


TASKS: dict[str, Task] = {
    "Hopper-v5": Task("gymnasium.envs.mujoco.hopper_v5:HopperEnv", "hopper", 10.0),
    "Walker2d-v5": Task("gymnasium.envs.mujoco.walker2d_v5:Walker2dEnv", "walker2d", 10.0),
    "HalfCheetah-v5": Task("gymnasium.envs.mujoco.half_cheetah_v5:HalfCheetahEnv", "none", None),
}

_THREADS: int | None = None


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def set_engine_threads(n: int | None) -> None:
    """Set the stepping threads of engines created from now on in this process (``None``:
    back to the default)."""
    global _THREADS
    _THREADS = None if n is None else max(1, int(n))


def engine_threads() -> int:
    """Stepping threads per batch: ``CERTRL_ENGINE_THREADS``, else :func:`set_engine_threads`,
    else the number of cores this process may use."""
    env = os.environ.get("CERTRL_ENGINE_THREADS", "").strip()
    if env:
        return max(1, int(env))
    return _THREADS if _THREADS is not None else _cores()


class MujocoBatch(EnvBatch):
    """Lockstep batch of Gymnasium MuJoCo tasks stepped on raw ``MjData`` (see the module
    docstring). Construct through :func:`certrl.evaluator.make_batch`."""

    name = "mujoco"

    @classmethod
    def supports(cls, spec: EnvSpec) -> bool:
        """True for the ids of :data:`TASKS` with default keyword arguments (and the Gymnasium
        class this engine re-implements)."""
        task = TASKS.get(spec.gym_id)
        if task is None or spec.kwargs:
            return False
        try:
            reg = gym.spec(spec.gym_id)
        except Exception:  # pragma: no cover - unregistered
            return False
        return reg.entry_point == task.entry_point and not reg.kwargs

    def __init__(self, spec: EnvSpec, width: int, env_kwargs: dict[str, Any]) -> None:
        if env_kwargs or not self.supports(spec):
            raise ValueError(
                f"engine 'mujoco' supports {sorted(TASKS)} with default arguments only "
                f"(got {spec.gym_id} with {dict(spec.kwargs, **env_kwargs)}); use --engine gym"
            )
        super().__init__(spec, width, {})
        self.task = TASKS[spec.gym_id]
        u = self.envs[0].unwrapped
        self.max_steps = _time_limit(self.envs[0])
        self.frame_skip = int(u.frame_skip)
        self.nq, self.nv, self.nu = int(u.model.nq), int(u.model.nv), int(u.model.nu)
        # the reward / health parameters the environment itself uses (defaults: supports())
        self.forward_w = float(u._forward_reward_weight)
        self.ctrl_w = float(u._ctrl_cost_weight)
        self.exclude_x = bool(u._exclude_current_positions_from_observation)
        if self.task.health != "none":
            self.healthy_reward = float(u._healthy_reward)
            self.terminate_unhealthy = bool(u._terminate_when_unhealthy)
            self.z_range = tuple(float(v) for v in u._healthy_z_range)
            self.angle_range = tuple(float(v) for v in u._healthy_angle_range)
            if self.task.health == "hopper":
                self.state_range = tuple(float(v) for v in u._healthy_state_range)
        self.models: list[Any] = [None] * width
        self.datas: list[Any] = [None] * width
        # per-slot views into MjData / MjModel memory (valid while that data / model lives;
        # refreshed at every reset): saves ~1 us of attribute lookups per slot and step
        self._ctrl: list[np.ndarray] = [np.empty(0)] * width
        self._qposv: list[np.ndarray] = [np.empty(0)] * width
        self._qvelv: list[np.ndarray] = [np.empty(0)] * width
        self._opt: list[Any] = [None] * width
        for k in range(width):
            self._bind(k)
        self.steps = np.zeros(width, dtype=np.int64)
        self._qpos = np.empty((width, self.nq))
        self._qvel = np.empty((width, self.nv))
        self._xb = np.empty(width)
        self._ts = np.empty(width)
        self.threads = max(1, min(engine_threads(), width))
        self._pool = (
            ThreadPoolExecutor(self.threads - 1, thread_name_prefix="certrl-mj")
            if self.threads > 1 else None
        )

    # ------------------------------------------------------------------ engine API
    def reset(self, k: int, seed: int) -> np.ndarray:
        obs = self.envs[k].reset(seed=seed)[0]
        self._bind(k)
        self.steps[k] = 0
        return obs

    def step(
        self, ks: np.ndarray, actions: list[Any]
    ) -> list[tuple[np.ndarray, float, bool, bool]]:
        n = len(ks)
        if n == 0:
            return []
        act = np.asarray(actions)
        if act.ndim != 2 or act.shape != (n, self.nu):
            raise ValueError(
                f"Action dimension mismatch. Expected {(self.nu,)}, found {act.shape[1:]}"
            )
        kl = [int(k) for k in ks]
        qpos, qvel, xb, ts = self._qpos[:n], self._qvel[:n], self._xb[:n], self._ts[:n]
        parts = min(self.threads, n)
        bounds = [n * i // parts for i in range(parts + 1)]
        futures: list[Future[None]] = []
        if self._pool is not None:
            for i in range(parts - 1):
                futures.append(self._pool.submit(self._advance, kl, act, bounds[i], bounds[i + 1]))
        self._advance(kl, act, bounds[-2], bounds[-1])
        for f in futures:
            f.result()
        return self._outputs(kl, act, qpos, qvel, xb, ts)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        super().close()

    # ------------------------------------------------------------------ internals
    def _bind(self, k: int) -> None:
        """(Re)read slot ``k``'s model and data, and cache views into them."""
        u = self.envs[k].unwrapped
        m, d = u.model, u.data
        self.models[k], self.datas[k] = m, d
        self._ctrl[k], self._qposv[k], self._qvelv[k] = d.ctrl, d.qpos, d.qvel
        self._opt[k] = m.opt

    def _advance(self, ks: list[int], act: np.ndarray, lo: int, hi: int) -> None:
        """Step slots ``ks[lo:hi]`` (one thread's share): ``MujocoEnv.do_simulation``, and
        record ``qpos[0]`` before, ``qpos`` / ``qvel`` / ``opt.timestep`` after."""
        models, datas, fs = self.models, self.datas, self.frame_skip
        ctrl, qposv, qvelv, opt = self._ctrl, self._qposv, self._qvelv, self._opt
        qpos, qvel, xb, ts = self._qpos, self._qvel, self._xb, self._ts
        mj_step, rne = mujoco.mj_step, mujoco.mj_rnePostConstraint
        for j in range(lo, hi):
            k = ks[j]
            m, d, p = models[k], datas[k], qposv[k]
            xb[j] = p[0]
            ctrl[k][:] = act[j]  # float32 -> float64, as ``data.ctrl[:] = ctrl``
            mj_step(m, d, nstep=fs)  # releases the GIL
            rne(m, d)
            qpos[j] = p
            qvel[j] = qvelv[k]
            ts[j] = opt[k].timestep  # read every step, as ``MujocoEnv.dt`` does

    def _outputs(
        self, ks: list[int], act: np.ndarray, qpos: np.ndarray, qvel: np.ndarray,
        xb: np.ndarray, ts: np.ndarray,
    ) -> list[tuple[np.ndarray, float, bool, bool]]:
        """Gymnasium's ``_get_obs`` / ``_get_rew`` / ``is_healthy`` / ``TimeLimit``, batched.

        Each line mirrors the scalar expression of the v5 source; elementwise IEEE operations
        give the same bits batched or not, and the control cost sums each row of at most 7
        squares left to right, as ``np.sum`` does on one short row."""
        dt = ts * self.frame_skip  # MujocoEnv.dt = model.opt.timestep * frame_skip
        x_velocity = (qpos[:, 0] - xb) / dt
        pos = qpos[:, 1:] if self.exclude_x else qpos
        clip = self.task.obs_qvel_clip
        vel = np.clip(qvel, -clip, clip) if clip is not None else qvel
        obs = np.concatenate((pos, vel), axis=1)
        forward_reward = self.forward_w * x_velocity
        sq = np.square(act)
        if self.nu < 8:  # numpy's pairwise sum is sequential below 8 elements
            ctrl_cost = self.ctrl_w * np.sum(sq, axis=1)
        else:
            ctrl_cost = self.ctrl_w * np.array([np.sum(r) for r in sq], dtype=sq.dtype)
        n = len(ks)
        if self.task.health == "none":
            reward = forward_reward - ctrl_cost
            terminated = np.zeros(n, dtype=bool)
        else:
            z, angle = qpos[:, 1], qpos[:, 2]
            min_z, max_z = self.z_range
            min_a, max_a = self.angle_range
            healthy = (min_z < z) & (z < max_z) & (min_a < angle) & (angle < max_a)
            if self.task.health == "hopper":
                state = np.concatenate((qpos, qvel), axis=1)[:, 2:]
                lo, hi = self.state_range
                healthy &= np.all((lo < state) & (state < hi), axis=1)
            healthy_reward = healthy * self.healthy_reward
            reward = (forward_reward + healthy_reward) - ctrl_cost
            terminated = ~healthy if self.terminate_unhealthy else np.zeros(n, dtype=bool)
        idx = np.asarray(ks)
        self.steps[idx] += 1
        if self.max_steps is not None:
            truncated = self.steps[idx] >= self.max_steps
        else:  # pragma: no cover - all supported tasks have a limit
            truncated = np.zeros(n, dtype=bool)
        return list(
            zip(obs, reward.tolist(), terminated.tolist(), truncated.tolist(), strict=True)
        )


def _time_limit(env: Any) -> int | None:
    """``max_episode_steps`` of the ``TimeLimit`` wrapper ``gymnasium.make`` put around
    ``env`` (``None`` without one)."""
    w = env
    while w is not None:
        if isinstance(w, gym.wrappers.TimeLimit):
            return int(w._max_episode_steps)
        w = getattr(w, "env", None)
    return None


def register() -> None:
    """Add the ``mujoco`` engine to :data:`certrl.evaluator.ENGINES` (idempotent)."""
    ENGINES.setdefault("mujoco", MujocoBatch)
