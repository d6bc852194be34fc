"""Where episodes run: in this process, or sharded across local worker processes.

Episodes are handed out by index in small chunks through a work queue; every finished episode
is sent back at once (so the caller can journal it: a crash loses no finished episode). A worker
that dies (killed, out of memory) has its unfinished episodes re-queued and is replaced; the
number of retries is reported. Because an episode depends only on ``(seed, index)`` (see
:mod:`certrl.evaluator`), the returns are identical to a single-process run whatever the number
of workers or the order in which they finish.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import pickle
import queue
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from certrl.envs import EnvSpec
from certrl.evaluator import (
    ActionHook,
    EnvHook,
    EpisodeResult,
    EvalConfig,
    ObservationHook,
    run_episodes,
)
from certrl.policies.base import Policy


@dataclass(frozen=True)
class PolicyRef:
    """How to load a policy again inside a worker (for policies that cannot be pickled)."""

    spec: str
    loader_kwargs: dict[str, Any] = field(default_factory=dict)
    env_id: str = ""

    def load(self, spec: EnvSpec) -> Policy:
        from certrl.policies import load_policy, validate_spaces

        env = spec.make()
        try:
            policy = load_policy(self.spec, observation_space=env.observation_space,
                                 action_space=env.action_space, **self.loader_kwargs)
            return validate_spaces(policy, env.observation_space, env.action_space, spec.gym_id)
        finally:
            env.close()


@dataclass
class RunStats:
    episodes: int = 0
    steps: int = 0
    seconds: float = 0.0
    retries: int = 0
    workers: int = 1

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds if self.seconds > 0 else 0.0


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def limit_threads() -> None:
    """One compute thread per process: physics, policy and BLAS otherwise oversubscribe the
    cores and halve throughput."""
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except Exception:  # pragma: no cover - threadpoolctl missing
        pass


def _worker(
    wid: int,
    payload: bytes,
    tasks: Any,
    results: Any,
    stop: Any,
    engine_threads: int = 1,
) -> None:
    limit_threads()
    try:
        from certrl.engines import set_engine_threads

        set_engine_threads(engine_threads)  # the cores are shared with the other workers
        policy_obj, ref, spec, cfg, obs_hooks, act_hooks, env_hooks = pickle.loads(payload)
        policy = policy_obj if policy_obj is not None else ref.load(spec)

        def indices(first: list[int]) -> Iterator[int]:
            results.put(("take", wid, first))
            yield from first
            while True:  # more work while the queue has it; return (not block) when empty
                try:
                    chunk = tasks.get(timeout=0.05)
                except queue.Empty:
                    return
                results.put(("take", wid, chunk))
                yield from chunk

        steps = [0]

        def on_step(n: int) -> None:
            steps[0] += n
            if steps[0] >= 2000:
                results.put(("steps", wid, steps[0]))
                steps[0] = 0

        while not stop.is_set():
            try:  # block for work only when idle: re-queued episodes of a dead worker land here
                first = tasks.get(timeout=0.2)
            except queue.Empty:
                continue
            run_episodes(
                policy, spec, indices(first), cfg, obs_hooks, act_hooks,
                on_result=lambda r: results.put(("ep", wid, r.to_json())),
                on_step=on_step,
                env_hooks=env_hooks,
            )
        results.put(("steps", wid, steps[0]))
        results.put(("exit", wid, None))
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        results.put(("error", wid, (type(e).__name__, str(e), traceback.format_exc())))


class WorkerError(RuntimeError):
    def __init__(self, kind: str, message: str, tb: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.tb = tb


def run_local(
    policy: Policy,
    spec: EnvSpec,
    todo: list[int],
    cfg: EvalConfig,
    *,
    workers: int = 1,
    obs_hooks: list[ObservationHook] | None = None,
    act_hooks: list[ActionHook] | None = None,
    on_result: Callable[[EpisodeResult], None] | None = None,
    on_steps: Callable[[int], None] | None = None,
    ref: PolicyRef | None = None,
    chunk: int | None = None,
    max_retries: int = 3,
    env_hooks: list[EnvHook] | None = None,
) -> RunStats:
    """Run episodes ``todo`` on ``workers`` local processes (``workers=1``: in this process)."""
    stats = RunStats(workers=workers)
    t0 = time.perf_counter()
    obs_hooks = list(obs_hooks or [])
    act_hooks = list(act_hooks or [])
    env_hooks = list(env_hooks or [])

    def count(r: EpisodeResult) -> None:
        stats.episodes += 1
        stats.steps += r.length
        if on_result is not None:
            on_result(r)

    if workers <= 1 or len(todo) <= 1:
        limit_threads()
        stats.workers = 1
        run_episodes(policy, spec, list(todo), cfg, obs_hooks, act_hooks, count, on_steps,
                     env_hooks)
        stats.seconds = time.perf_counter() - t0
        return stats

    # no worker runs more episodes at once than its share: each slot costs an environment
    # (an Atari one ~90 ms to make), and the seeds make the results independent of the width
    cfg = dataclasses.replace(cfg, batch_size=max(1, min(cfg.batch_size, -(-len(todo) // workers))))
    try:
        payload = pickle.dumps((policy, None, spec, cfg, obs_hooks, act_hooks, env_hooks))
    except Exception:
        if ref is None:
            raise
        payload = pickle.dumps((None, ref, spec, cfg, obs_hooks, act_hooks, env_hooks))
    ctx = mp.get_context("spawn")
    tasks = ctx.Queue()
    results = ctx.Queue()
    stop = ctx.Event()
    size = chunk or max(1, min(cfg.batch_size, len(todo) // (4 * workers) or 1))
    for i in range(0, len(todo), size):
        tasks.put(list(todo[i : i + size]))
    threads = max(1, default_workers() // workers)  # engine stepping threads per worker
    remaining = set(todo)
    pending: dict[int, set[int]] = {}
    procs: dict[int, Any] = {}
    next_id = 0

    def spawn() -> None:
        nonlocal next_id
        wid = next_id
        next_id += 1
        p = ctx.Process(target=_worker, args=(wid, payload, tasks, results, stop, threads),
                        daemon=True)
        p.start()
        procs[wid] = p
        pending[wid] = set()

    for _ in range(min(workers, len(todo))):
        spawn()
    try:
        while remaining:
            try:
                kind, wid, data = results.get(timeout=0.5)
            except queue.Empty:
                for wid, p in list(procs.items()):
                    if not p.is_alive() and p.exitcode not in (0, None):
                        lost = sorted(pending.pop(wid, set()) & remaining)
                        del procs[wid]
                        stats.retries += 1
                        if stats.retries > max_retries:
                            raise WorkerError(
                                "WorkerDied",
                                f"worker processes died {stats.retries} times (last exit code "
                                f"{p.exitcode}); finished episodes are saved",
                                "",
                            ) from None
                        print(
                            f"certrl: worker {wid} died (exit code {p.exitcode}); re-running "
                            f"{len(lost)} unfinished episodes",
                            file=sys.stderr,
                        )
                        if lost:
                            tasks.put(lost)
                        spawn()
                continue
            if kind == "take":
                pending.setdefault(wid, set()).update(data)
            elif kind == "ep":
                r = EpisodeResult.from_json(data)
                pending.get(wid, set()).discard(r.index)
                if r.index in remaining:
                    remaining.discard(r.index)
                    count(r)
            elif kind == "steps":
                if on_steps is not None:
                    on_steps(data)
            elif kind == "error":
                raise WorkerError(*data)
    finally:
        stop.set()
        for p in procs.values():
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()
                p.join(timeout=2)
    stats.seconds = time.perf_counter() - t0
    return stats
