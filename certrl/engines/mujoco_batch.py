"""The ``mujoco`` engine: Gymnasium's MuJoCo locomotion tasks stepped on raw ``MjData``.

Why: ``gymnasium.make("Hopper-v5").step`` spends ~19 us of Python per step on top of ~65 us
of physics, and one environment steps on one core. This engine keeps Gymnasium's environment
for what it does once per episode (``unwrapped(k)`` *is* a ``MujocoEnv`` with its own
``.model``, which dynamics hooks may modify per slot, and resets are its seeded ``reset``), but
replaces its ``step`` by

1. each slot's full integration state (``mjSTATE_INTEGRATION``: time, qpos, qvel, act, the
   solver warm start, ctrl, applied forces, mocap, user data, plugin state) kept in one row
   of ``state [width, nstate]``. Controls are written into the rows in one vectorized
   assignment (float32 -> float64, as ``data.ctrl[:] = action``);
2. per stepping thread, one ``MjData``: for each of its slots ``mj_setState``,
   ``mujoco.mj_step(model, data, nstep=frame_skip)`` (``MujocoEnv.do_simulation``; it
   releases the GIL, so threads step on different cores) and ``mj_getState``. ``mj_step``
   depends on nothing but the model and that state, so this is bit-identical to stepping a
   ``MjData`` per slot, and one ``MjData`` stays in cache where 64+ of them did not (a batch of
   128 per-slot ``MjData`` made each Hopper step ~10% slower). Likewise all slots step with
   one shared model, except slots whose environment a hook has been handed
   (:meth:`MujocoBatch.unwrapped` makes it on first use), which step with that
   environment's own model (128 model copies cost another ~6% per step; the models are
   compiled from the same file, so the results are the same bits, tested);
3. one vectorized NumPy pass over the batch's state rows for observation, reward and
   termination, written with the same floating-point operations, in the same order and the
   same dtypes as Gymnasium's ``step`` (``x_velocity = (x_after - x_before) / dt``; the
   control cost is computed on the *unclipped* action in the action's dtype; strict
   inequalities on the unclipped state; the terminating step earns no healthy reward in v5),
   and the ``TimeLimit`` truncation at the registered ``max_episode_steps``.

Resets call Gymnasium's ``reset(seed=...)`` (``mj_resetData``, the seeded ``np_random``
draws, ``mj_forward``) and copy the resulting state into the slot's row: exact
by construction and off the hot path. Differences from a Gymnasium environment that nothing
in these tasks' observations or rewards reads: a slot environment's ``data`` holds the state
of the slot's last reset (the episode runs in the state row), and ``mj_rnePostConstraint``
(``cacc`` / ``cfrc_int`` / ``cfrc_ext``, outputs only; no supported task observes contact
forces) is not called.

The result is bit-identical to ``gymnasium.make(id)`` for the same seeds and actions
(observations, rewards, ``terminated``, ``truncated`` compared with ``==`` step by step in
``tests/test_engines.py``). Only the ids in :data:`TASKS`, with default keyword arguments,
are supported; anything else runs on the ``gym`` engine (``--engine auto``).

Threads: :func:`engine_threads` (default: the cores this process may use; the local backend
gives each of its N worker processes ``cores // N`` threads through :func:`set_engine_threads`,
the Ray backend one per shard; ``CERTRL_ENGINE_THREADS`` overrides). The thread count never
changes results: each slot is stepped by exactly one thread, and the batched reward /
observation pass is elementwise. ``unwrapped(k)`` is slot ``k``'s own environment (made on
first use) and from then on the slot steps and resets with its model, so a hook changing
``unwrapped(k).model`` (in place: ``body_mass[...] = ...``) affects slot ``k`` only, as with
the ``gym`` engine (tested). Slots no hook has reached reset on one shared environment
(``reset(seed=)`` depends on nothing but the seed and the model), so memory and start-up do
not grow with the batch width. Models are re-read at every reset and,
after per-step environment hooks, by :meth:`MujocoBatch.refresh` (``dt`` is cached per slot);
a replacement model must keep the structure (sizes) of the original.

``mujoco.rollout`` is not used: it outputs ``mjSTATE_FULLPHYSICS``, without the solver warm
start, so stepping a batch one env step per call drifts from Gymnasium (~1e-10 by step 500).
Where the time goes: ``benchmarks/bench_throughput.py``.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from certrl.engines.base import ENGINES, EnvBatch
from certrl.envs import EnvSpec


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
    docstring). Construct through :func:`certrl.engines.make_batch`."""

    name = "mujoco"
    #: Slots are state rows (memory flat in the width), and each lockstep iteration pays a
    #: fixed ~1 ms of Python and torch calls (cold after ~10 ms of physics) that a wider
    #: batch spreads over more steps: one Hopper core delivered 0.90 of raw ``mj_step`` at
    #: width 128, 0.93 at 256, 0.95 at 512 (measured interleaved in one process).
    default_width = 512

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
        self.spec = spec
        # Gymnasium environments: one that resets every slot not handed out (reset(seed=)
        # depends on the seed and the model only), and one per slot made on the first
        # unwrapped(k) (hooks change that slot's model). Memory and start-up are flat in the
        # batch width (a Hopper environment holds ~1.5 MB).
        self._reset_env = spec.make()
        self.envs: list[Any] = [None] * width
        self.task = TASKS[spec.gym_id]
        u = self._reset_env.unwrapped
        self.max_steps = _time_limit(self._reset_env)
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
        # one MjData per stepping thread, and each slot's full integration state (time, qpos,
        # qvel, act, warm start, ctrl, applied forces, ...) in one row of ``self.state``
        self.spec_bits = int(mujoco.mjtState.mjSTATE_INTEGRATION)
        m0 = u.model
        self.nstate = int(mujoco.mj_stateSize(m0, self.spec_bits))
        self._sizes = _sizes(m0)
        self._qpos_at = _state_offset(m0, self.spec_bits, mujoco.mjtState.mjSTATE_QPOS)
        self._qvel_at = _state_offset(m0, self.spec_bits, mujoco.mjtState.mjSTATE_QVEL)
        assert self._qvel_at == self._qpos_at + self.nq  # _outputs reads them as one block
        self._ctrl_at = _state_offset(m0, self.spec_bits, mujoco.mjtState.mjSTATE_CTRL)
        self.state = np.zeros((width, self.nstate))
        self._all = list(range(width))
        self._rows = list(self.state)  # row views: mj_getState writes into them in place
        # Slots step with one shared model, the reset environment's (128 copies of the same
        # model in cache cost ~6% per step; nothing hands it out), until their environment is
        # made by unwrapped(k), the only way hooks reach a model; from then on slot k steps
        # with its environment's own model.
        self._shared_model = m0
        self._private = [False] * width
        self.models: list[Any] = [None] * width
        self._dt = np.empty(width)
        self.obs_dim = int(self._reset_env.observation_space.shape[0])
        for k in range(width):
            self._bind_model(k)
        self.steps = np.zeros(width, dtype=np.int64)
        self.threads = max(1, min(engine_threads(), width))
        self._datas = [mujoco.MjData(m0) for _ in range(self.threads)]
        self._pool = (
            ThreadPoolExecutor(self.threads - 1, thread_name_prefix="certrl-mj")
            if self.threads > 1 else None
        )

    # ------------------------------------------------------------------ engine API
    def reset(self, k: int, seed: int) -> np.ndarray:
        """Gymnasium's own ``reset(seed=...)``, on slot ``k``'s environment once a hook has it,
        else on the shared reset environment; the state it produced is copied into the slot's
        row (the environment's ``data`` is not stepped)."""
        self._bind_model(k)  # hooks change models before the reset, never during it
        env = self.envs[k] if self._private[k] else self._reset_env
        obs = env.reset(seed=seed)[0]
        u = env.unwrapped
        mujoco.mj_getState(u.model, u.data, self._rows[k], self.spec_bits)
        self.steps[k] = 0
        return obs

    def step_arrays(
        self, ks: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = len(ks)
        act = np.asarray(actions)
        if n == 0:
            return np.empty((0, self.obs_dim)), np.empty(0), np.empty(0, bool), np.empty(0, bool)
        if act.ndim != 2 or act.shape != (n, self.nu):
            raise ValueError(
                f"Action dimension mismatch. Expected {(self.nu,)}, found {act.shape[1:]}"
            )
        idx = np.asarray(ks, dtype=np.int64)
        kl = idx.tolist()
        # rows of the per-slot arrays: a slice when every slot steps in order (the usual case;
        # cheaper than fancy indexing), else the slots' indices
        sel: slice | np.ndarray = slice(None) if kl == self._all else idx
        st = self.state
        x_before = st[sel, self._qpos_at]  # a copy for fancy indices; copied below for slices
        if isinstance(sel, slice):
            x_before = x_before.copy()
        # ``data.ctrl[:] = action``: float32 -> float64, written into each slot's state row
        st[sel, self._ctrl_at : self._ctrl_at + self.nu] = act
        parts = min(self.threads, n)
        if self._pool is not None and parts > 1:
            bounds = [n * i // parts for i in range(parts + 1)]
            futures: list[Future[None]] = [
                self._pool.submit(self._advance, kl[bounds[i] : bounds[i + 1]], self._datas[i])
                for i in range(parts - 1)
            ]
            self._advance(kl[bounds[-2] :], self._datas[parts - 1])
            for f in futures:
                f.result()
        else:
            self._advance(kl, self._datas[0])
        return self._outputs(sel, act, st[sel], x_before)

    def unwrapped(self, k: int) -> Any:
        """Slot ``k``'s own Gymnasium environment, made on the first call. Its ``model`` is the
        one slot ``k`` resets and steps with from then on (changes to it act on this slot
        only; hooks change it between steps, before a reset or before :meth:`refresh`); its
        ``data`` holds the state of the slot's last reset through it (the episode runs in the
        slot's state row)."""
        if not self._private[k]:
            self.envs[k] = self.spec.make()
            self._private[k] = True
            self._bind_model(k)
        return self.envs[k].unwrapped

    def handed_out(self) -> list[Any]:
        return [e.unwrapped for e in self.envs if e is not None]

    def refresh(self, ks: np.ndarray) -> None:
        """Re-read the models (and ``dt``) of slots ``ks`` after environment hooks ran."""
        for k in np.asarray(ks).tolist():
            self._bind_model(int(k))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for e in [self._reset_env, *self.envs]:
            if e is not None:
                e.close()

    # ------------------------------------------------------------------ internals
    def _bind_model(self, k: int) -> None:
        """(Re)read slot ``k``'s model: a hook may have changed it in place or replaced it."""
        m = self.envs[k].unwrapped.model if self._private[k] else self._shared_model
        if _sizes(m) != self._sizes:
            raise ValueError(
                f"engine 'mujoco': the model of slot {k} changed its structure "
                f"(sizes {_sizes(m)} != {self._sizes}); use --engine gym"
            )
        self.models[k] = m
        # MujocoEnv.dt reads model.opt.timestep at every step; a model only changes between
        # steps through environment hooks, after which the evaluator calls refresh()
        self._dt[k] = m.opt.timestep * self.frame_skip

    def _advance(self, ks: list[int], d: Any) -> None:
        """Step slots ``ks`` (one thread's share) on this thread's ``MjData``: load the slot's
        state, ``mj_step(model, data, nstep=frame_skip)`` (``MujocoEnv.do_simulation``; it
        releases the GIL), store the state back."""
        models, rows, fs, bits = self.models, self._rows, self.frame_skip, self.spec_bits
        set_state, get_state, mj_step = mujoco.mj_setState, mujoco.mj_getState, mujoco.mj_step
        for k in ks:
            m, row = models[k], rows[k]
            set_state(m, d, row, bits)
            mj_step(m, d, nstep=fs)
            get_state(m, d, row, bits)

    def _outputs(
        self, idx: slice | np.ndarray, act: np.ndarray, rows: np.ndarray, xb: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Gymnasium's ``_get_obs`` / ``_get_rew`` / ``is_healthy`` / ``TimeLimit``, batched.

        Each line mirrors the scalar expression of the v5 source; elementwise IEEE operations
        give the same bits batched or not, and the control cost sums each row of at most 7
        squares left to right, as ``np.sum`` does on one short row."""
        qa = self._qpos_at
        qpos = rows[:, qa : qa + self.nq]
        qvel = rows[:, qa + self.nq : qa + self.nq + self.nv]  # qvel follows qpos in a state
        n = len(rows)
        dt = self._dt[idx]  # MujocoEnv.dt = model.opt.timestep * frame_skip
        x_velocity = (qpos[:, 0] - xb) / dt
        pos = qpos[:, 1:] if self.exclude_x else qpos
        clip = self.task.obs_qvel_clip
        # np.clip(qvel, -c, c), as min(max(.)) without np.clip's Python-level overhead
        vel = np.minimum(np.maximum(qvel, -clip), clip) if clip is not None else qvel
        obs = np.concatenate((pos, vel), axis=1)
        forward_reward = self.forward_w * x_velocity
        sq = np.square(act)
        if self.nu < 8:  # numpy's pairwise sum is sequential below 8 elements
            ctrl_cost = self.ctrl_w * np.sum(sq, axis=1)
        else:
            ctrl_cost = self.ctrl_w * np.array([np.sum(r) for r in sq], dtype=sq.dtype)
        if self.task.health == "none":
            reward = forward_reward - ctrl_cost
            terminated = np.zeros(n, dtype=bool)
        else:
            z, angle = qpos[:, 1], qpos[:, 2]
            min_z, max_z = self.z_range
            min_a, max_a = self.angle_range
            healthy = (min_z < z) & (z < max_z) & (min_a < angle) & (angle < max_a)
            if self.task.health == "hopper":
                state = rows[:, qa + 2 : qa + self.nq + self.nv]  # concatenate((qpos, qvel))[2:]
                lo, hi = self.state_range
                healthy &= np.all((lo < state) & (state < hi), axis=1)
            healthy_reward = healthy * self.healthy_reward
            reward = (forward_reward + healthy_reward) - ctrl_cost
            terminated = ~healthy if self.terminate_unhealthy else np.zeros(n, dtype=bool)
        self.steps[idx] += 1
        if self.max_steps is not None:
            truncated = self.steps[idx] >= self.max_steps
        else:  # pragma: no cover - all supported tasks have a limit
            truncated = np.zeros(n, dtype=bool)
        return obs, reward, terminated, truncated


def _sizes(m: Any) -> tuple[int, ...]:
    """The sizes that must agree for two models to share an ``MjData`` and a state layout."""
    return (m.nq, m.nv, m.nu, m.na, m.nbody, m.neq, m.nmocap, m.nuserdata, m.nplugin,
            int(mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_INTEGRATION)))


def _state_offset(m: Any, spec: int, component: Any) -> int:
    """Offset of ``component`` (one ``mjtState`` bit) in a state vector of ``spec``:
    components are stored in increasing bit order, so it is the size of the lower bits."""
    bit = int(component)
    return int(mujoco.mj_stateSize(m, spec & (bit - 1)))


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
    """Add the ``mujoco`` engine to :data:`certrl.engines.ENGINES` (idempotent)."""
    ENGINES.setdefault("mujoco", MujocoBatch)
