"""The ``mujoco`` engine reproduces ``gymnasium.make(id)`` bit for bit.

Step by step against Gymnasium (observations, rewards, ``terminated``, ``truncated`` compared
with ``==``, across terminations, resets and the 1000-step time limit), whatever the number of
stepping threads, and end to end through :func:`certrl.evaluator.run_episodes`: same returns as
``engine="gym"`` for a random policy with smoothing noise, a dynamics hook, and the bundled
``demo:hopper`` policy over full episodes.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from certrl.engines import MujocoBatch, engine_threads, set_engine_threads
from certrl.envs import resolve_env
from certrl.evaluator import EnvBatch, EnvHook, EvalConfig, make_batch, run_episodes
from certrl.smoothing import GaussianSmoothing
from tests._fixtures import random_policy

torch.set_num_threads(1)

TASK_IDS = ["Hopper-v5", "Walker2d-v5", "HalfCheetah-v5"]


@pytest.fixture
def threads():
    """Restore the default stepping threads after a test that sets them."""
    yield set_engine_threads
    set_engine_threads(None)


def _lockstep_compare(
    gym_id: str, width: int, steps: int, seed: int, scale: float, dtype: Any
) -> dict[str, int]:
    """Step ``width`` engine slots and ``width`` Gymnasium envs with the same seeds and actions;
    assert equality at every step; return counts of what was exercised."""
    spec = resolve_env(gym_id)
    batch = make_batch("mujoco", spec, width, {})
    assert isinstance(batch, MujocoBatch)
    refs = [gym.make(gym_id) for _ in range(width)]
    rng = np.random.default_rng(seed)
    counts = {"steps": 0, "terminated": 0, "truncated": 0, "resets": 0}
    try:
        for k in range(width):
            o = batch.reset(k, seed + k)
            o_ref = refs[k].reset(seed=seed + k)[0]
            assert np.array_equal(o, o_ref)
        live = np.arange(width)
        for t in range(steps):
            # live slots in a changing order and subset: the engine must not care
            ks = live[rng.permutation(width)[: rng.integers(1, width + 1)]]
            act = (scale * rng.uniform(-1, 1, (len(ks), batch.nu))).astype(dtype)
            out = batch.step(ks, list(act))
            for j, k in enumerate(ks):
                o_ref, r_ref, term_ref, trunc_ref, _ = refs[k].step(act[j])
                o, r, term, trunc = out[j]
                assert o.dtype == o_ref.dtype and np.array_equal(o, o_ref), (gym_id, t, k)
                assert r == r_ref and type(r) is float, (gym_id, t, k, r, r_ref)
                assert (term, trunc) == (bool(term_ref), bool(trunc_ref)), (gym_id, t, k)
                counts["steps"] += 1
                counts["terminated"] += term
                counts["truncated"] += trunc
                if term or trunc:
                    s = int(rng.integers(2**31))
                    assert np.array_equal(batch.reset(int(k), s), refs[k].reset(seed=s)[0])
                    counts["resets"] += 1
    finally:
        batch.close()
        for e in refs:
            e.close()
    return counts


@pytest.mark.parametrize("gym_id", TASK_IDS)
def test_steps_match_gymnasium_exactly(gym_id: str, threads) -> None:
    threads(2)
    # actions up to 1.5x the bounds: the control cost uses the unclipped action
    c = _lockstep_compare(gym_id, width=4, steps=150, seed=3, scale=1.5, dtype=np.float32)
    assert c["steps"] > 300
    if gym_id != "HalfCheetah-v5":  # random actions make Hopper / Walker2d fall
        assert c["terminated"] >= 3 and c["resets"] == c["terminated"]
    else:
        assert c["terminated"] == 0


def test_float64_actions_and_one_thread(threads) -> None:
    threads(1)
    c = _lockstep_compare("Hopper-v5", width=3, steps=100, seed=11, scale=1.0, dtype=np.float64)
    assert c["terminated"] >= 2


def test_time_limit_truncates_at_1000_steps_like_gymnasium() -> None:
    spec = resolve_env("HalfCheetah-v5")
    batch = make_batch("mujoco", spec, 1, {})
    ref = gym.make("HalfCheetah-v5")
    rng = np.random.default_rng(0)
    try:
        assert np.array_equal(batch.reset(0, 5), ref.reset(seed=5)[0])
        ret = ret_ref = 0.0
        for t in range(1000):
            a = rng.uniform(-1, 1, 6).astype(np.float32)
            o, r, term, trunc = batch.step(np.array([0]), [a])[0]
            o_ref, r_ref, term_ref, trunc_ref, _ = ref.step(a)
            ret += r
            ret_ref += r_ref
            assert np.array_equal(o, o_ref) and r == r_ref and not term
            assert trunc == trunc_ref == (t == 999)
        assert ret == ret_ref
        # a new episode in the same slot starts from a fresh step count
        assert np.array_equal(batch.reset(0, 6), ref.reset(seed=6)[0])
        assert batch.step(np.array([0]), [np.zeros(6, np.float32)])[0][3] is False
    finally:
        batch.close()
        ref.close()


def test_thread_count_does_not_change_results(threads) -> None:
    spec = resolve_env("Walker2d-v5")
    outs = []
    for n in (1, 3):
        threads(n)
        batch = make_batch("mujoco", spec, 5, {})
        assert batch.threads == n
        rng = np.random.default_rng(1)
        rows = []
        for k in range(5):
            batch.reset(k, 100 + k)
        for _ in range(40):
            rows.append(batch.step(np.arange(5), list(rng.uniform(-1, 1, (5, 6)))))
        batch.close()
        outs.append([(o.tobytes(), r, te, tr) for step in rows for (o, r, te, tr) in step])
    assert outs[0] == outs[1]


def test_supports_and_auto_selection() -> None:
    hopper = resolve_env("hopper")
    assert MujocoBatch.supports(hopper)
    assert not MujocoBatch.supports(resolve_env("hopper", {"healthy_reward": 2.0}))
    assert not MujocoBatch.supports(resolve_env("cartpole"))
    assert not MujocoBatch.supports(resolve_env("Hopper-v4"))
    b = make_batch("auto", hopper, 2, {})
    assert type(b) is MujocoBatch
    b.close()
    b = make_batch("auto", resolve_env("cartpole"), 2, {})
    assert type(b) is EnvBatch
    b.close()
    with pytest.raises(ValueError, match="does not support CartPole-v1"):
        make_batch("mujoco", resolve_env("cartpole"), 1, {})
    b = make_batch("mujoco", hopper, 1, {})
    b.reset(0, 0)
    with pytest.raises(ValueError, match="Action dimension mismatch"):
        b.step(np.array([0]), [np.zeros(4, np.float32)])
    b.close()


def test_engine_threads_setting(threads, monkeypatch) -> None:
    threads(3)
    assert engine_threads() == 3
    monkeypatch.setenv("CERTRL_ENGINE_THREADS", "2")
    assert engine_threads() == 2


def _fields(results: list) -> list[tuple]:
    return sorted((r.index, r.ret, r.length, r.terminated, r.clipped_return) for r in results)


def test_run_episodes_same_returns_as_gym_engine_random_policy() -> None:
    spec = resolve_env("hopper")
    policy = random_policy("Hopper-v5", seed=2)
    out = {}
    for engine, batch in (("gym", 4), ("mujoco", 3)):
        cfg = EvalConfig(seed=7, batch_size=batch, deterministic=False, engine=engine)
        out[engine] = _fields(run_episodes(policy, spec, list(range(10)), cfg,
                                           [GaussianSmoothing(0.3)]))
    assert out["gym"] == out["mujoco"]
    assert len({r[1] for r in out["gym"]}) == 10  # ten different episodes


class _HeavyTorso(EnvHook):
    """Scales the torso mass of each episode by a factor in [0.5, 2] from its own stream."""

    name = "heavy-torso"
    rng_stream = 5

    def before_reset(self, env: Any, slot: int, rng: np.random.Generator) -> None:
        if not hasattr(self, "nominal"):
            self.nominal = float(env.model.body_mass[1])
        env.model.body_mass[1] = self.nominal * rng.uniform(0.5, 2.0)


def _assert_hook_acts_alike(hook: type[EnvHook], policy_seed: int, seed: int, n: int) -> None:
    """Returns with a fresh ``hook`` are the same on both engines, and differ from returns
    without it (the hook really changed the dynamics)."""
    spec = resolve_env("hopper")
    policy = random_policy("Hopper-v5", seed=policy_seed)
    out = {}
    for engine in ("gym", "mujoco"):
        cfg = EvalConfig(seed=seed, batch_size=3, engine=engine)
        out[engine] = _fields(run_episodes(policy, spec, list(range(n)), cfg,
                                           env_hooks=[hook()]))
    plain = _fields(run_episodes(policy, spec, list(range(n)),
                                 EvalConfig(seed=seed, batch_size=3, engine="mujoco")))
    assert out["gym"] == out["mujoco"]
    assert out["mujoco"] != plain


def test_dynamics_hook_acts_per_slot_like_gym_engine() -> None:
    _assert_hook_acts_alike(_HeavyTorso, policy_seed=4, seed=1, n=6)


def test_demo_hopper_full_episodes_same_returns() -> None:
    from certrl.policies import load_policy

    spec = resolve_env("hopper")
    policy = load_policy("demo:hopper")
    out = {}
    for engine in ("gym", "mujoco"):
        out[engine] = _fields(run_episodes(policy, spec, [0, 1, 2],
                                           EvalConfig(seed=0, batch_size=3, engine=engine)))
    assert out["gym"] == out["mujoco"]
    assert max(r[2] for r in out["gym"]) >= 500  # long episodes: a trained policy hops
    assert min(r[1] for r in out["gym"]) > 1000


class _DriftingTimestep(EnvHook):
    """A per-step hook: the simulation timestep drifts within each episode (changes dt, and so
    the forward reward, mid-episode), restored at every reset."""

    name = "drifting-timestep"
    rng_stream = 6
    per_step = True

    def before_reset(self, env: Any, slot: int, rng: np.random.Generator) -> None:
        if not hasattr(self, "nominal"):
            self.nominal = float(env.model.opt.timestep)
        env.model.opt.timestep = self.nominal

    def before_step(self, env: Any, slot: int, t: int, rng: np.random.Generator) -> None:
        env.model.opt.timestep = self.nominal * (1.0 + 0.5 * rng.uniform())


def test_per_step_hook_is_seen_by_the_mujoco_engine() -> None:
    """The engine caches dt per slot; after per-step hooks the evaluator calls refresh(), so
    a timestep changed mid-episode reaches the physics and the reward exactly as in gym."""
    _assert_hook_acts_alike(_DriftingTimestep, policy_seed=6, seed=2, n=5)


def test_state_rows_hold_the_slot_state() -> None:
    """Each slot's row of ``state`` is its full integration state: qpos / qvel / ctrl at the
    offsets the engine reads, equal to the Gymnasium environment stepped alongside."""
    spec = resolve_env("Walker2d-v5")
    batch = make_batch("mujoco", spec, 2, {})
    ref = gym.make("Walker2d-v5")
    try:
        batch.reset(1, 5)
        ref.reset(seed=5)
        a = np.linspace(-0.9, 0.9, 6).astype(np.float32)
        for _ in range(3):
            batch.step(np.array([1]), [a])
            ref.step(a)
        row, d = batch.state[1], ref.unwrapped.data
        nq, nv, nu = batch.nq, batch.nv, batch.nu
        np.testing.assert_array_equal(row[batch._qpos_at : batch._qpos_at + nq], d.qpos)
        np.testing.assert_array_equal(row[batch._qvel_at : batch._qvel_at + nv], d.qvel)
        np.testing.assert_array_equal(row[batch._ctrl_at : batch._ctrl_at + nu], d.ctrl)
        np.testing.assert_array_equal(row[0:1], [d.time])
    finally:
        batch.close()
        ref.close()


def test_a_model_with_another_structure_is_refused() -> None:
    """Slots share one MjData per thread, so every slot model must have the same sizes."""
    spec = resolve_env("hopper")
    batch = make_batch("mujoco", spec, 2, {})
    try:
        batch.unwrapped(1).model = gym.make("Walker2d-v5").unwrapped.model
        with pytest.raises(ValueError, match="changed its structure"):
            batch.reset(1, 0)
    finally:
        batch.close()


def test_slots_share_one_reset_env_until_a_hook_takes_theirs() -> None:
    """Slots no hook has reached reset on one shared environment and step with one model
    (nothing per slot but its state row); ``unwrapped(k)`` makes slot ``k``'s own environment,
    whose model change acts on that slot only. Step by step against Gymnasium."""
    spec = resolve_env("hopper")
    batch = make_batch("mujoco", spec, 4, {})
    assert isinstance(batch, MujocoBatch)
    refs = [gym.make("Hopper-v5") for _ in range(4)]
    try:
        assert batch.envs == [None] * 4  # no per-slot environment yet
        batch.unwrapped(2).model.body_mass[1] *= 2.0
        refs[2].unwrapped.model.body_mass[1] *= 2.0
        assert [e is not None for e in batch.envs] == [False, False, True, False]
        assert batch.handed_out() == [batch.unwrapped(2)]
        ks = np.arange(4)
        seeds = [10, 11, 11, 13]  # slots 1 and 2 differ only in the torso mass
        for k in range(4):
            np.testing.assert_array_equal(batch.reset(k, seeds[k]),
                                          refs[k].reset(seed=seeds[k])[0])
        rng = np.random.default_rng(0)
        heavy_differs = False
        for _ in range(60):
            a = rng.uniform(-1, 1, (4, 3)).astype(np.float32)
            o, r, te, tr = batch.step_arrays(ks, a)
            for k in range(4):
                ro, rr, rte, rtr, _ = refs[k].step(a[k])
                np.testing.assert_array_equal(o[k], ro)
                assert (r[k], te[k], tr[k]) == (rr, rte, rtr)
            heavy_differs |= bool(np.any(o[2] != o[1]))
            if te.any():
                break
        assert heavy_differs
    finally:
        batch.close()
        for e in refs:
            e.close()


def test_default_batch_size_follows_the_engine() -> None:
    from certrl.evaluator import default_batch_size

    hopper = resolve_env("hopper")
    assert default_batch_size("auto", hopper) == MujocoBatch.default_width == 512
    assert default_batch_size("mujoco", hopper) == 512
    assert default_batch_size("gym", hopper) == EnvBatch.default_width == 128
    assert default_batch_size("auto", hopper, env_hooks=True) == 128  # one env per slot
    assert default_batch_size("auto", resolve_env("cartpole")) == 128
    assert default_batch_size("auto", resolve_env("hopper", {"healthy_reward": 2.0})) == 128
