"""The Ray backend: episodes sharded by index over the workers of a Ray cluster.

``run_ray`` has the contract of :func:`certrl.backends.run_local` (same arguments, same
:class:`~certrl.backends.RunStats`, results handed to ``on_result`` as they finish), on the
CPUs of a Ray cluster: ``ray.init(address=...)`` joins a running cluster (``--ray-address``;
certrl, its dependencies and the policy's Python classes must be importable on every node),
and with no address a local Ray instance is started for this process (``address="local"``: a
cluster that happens to be running on the machine is never joined silently).

Sharding and reproducibility. The episode indices to run are cut into shards of consecutive
indices; each shard is one Ray task (one CPU, one stepping thread) that runs the shard in
lockstep batches with :func:`certrl.evaluator.run_episodes`. Every episode draws all its
randomness from ``(master seed, episode index)`` and the policy's forward pass does not depend
on the batch it is in, so the returns are byte-identical to ``--workers 1`` (or ``--backend
local``) whatever the number of Ray workers, the shard size or the order in which shards
finish (``tests/test_ray_backend.py``).

Failures. Shard tasks are Ray *streaming generators*: each finished episode is sent to the
driver as soon as it ends (drained in small groups), and the driver journals it at once. When a
worker process or node is lost (killed, out of memory, node failure: any
``ray.exceptions.RayError`` from the shard), the episodes it had already sent are kept and the
shard's *unfinished* indices are submitted again as a new shard: a retry, counted in
``RunStats.retries`` and printed. After ``max_retries`` losses the run stops with
:class:`~certrl.backends.WorkerError` (finished episodes stay in the journal; ``--resume``
continues). An exception raised by certrl itself in a shard (a bad policy, NaN actions) is a
property of the input, not of the worker: it is not retried and is re-raised in the driver
with its original type name, so the command line reports it as for the local backend.

Memory. The driver holds the list of indices still to submit, at most ``workers`` shards in
flight (each at most ``shard_size`` results) and nothing else per episode: what the caller
keeps from ``on_result`` (the returns) is the only per-episode memory. A worker holds one shard.
"""

from __future__ import annotations

import logging
import math
import pickle
import queue
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from certrl.backends import PolicyRef, RunStats, WorkerError, limit_threads
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

#: how many steps a shard accumulates before reporting them (progress bar).
_STEP_REPORT = 2000


class RayUnavailableError(RuntimeError):
    """Ray is not installed or the cluster cannot be reached (a usage problem, exit code 2)."""


def import_ray() -> Any:
    """``import ray`` with an actionable message when it is missing."""
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            "--backend ray needs Ray: pip install 'certrl[ray]' (or pip install 'ray[default]')"
        ) from None
    return ray


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to the Ray cluster at ``address``, or start a local instance when ``address``
    is empty; nothing when Ray is already initialized in this process. Returns True when this
    call initialized Ray (the caller may then ``ray.shutdown()``)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
    }
    try:
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(address="local", num_cpus=num_cpus, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
        raise RayUnavailableError(
            f"could not start or reach {where} ({str(e).splitlines()[0] if str(e) else e}); "
            "check --ray-address (host:port of the head node, or 'auto') or use --backend local"
        ) from None
    return True


def _run_shard(payload: bytes, indices: list[int], threads: int) -> Iterator[tuple[str, Any]]:
    """Body of one shard task (runs in a Ray worker): yields ``("eps", [result json, ...])``,
    ``("steps", n)`` while the shard runs, then ``("done", None)`` or ``("error", (type name,
    message, traceback))``.

    The evaluator runs on a thread of the worker and hands its results over through a queue,
    so that results leave the worker as episodes finish (not when the shard ends)."""
    out: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

    def work() -> None:
        try:
            limit_threads()
            from certrl.engines import set_engine_threads

            set_engine_threads(threads)
            policy_obj, ref, spec, cfg, obs_hooks, act_hooks, env_hooks = pickle.loads(payload)
            policy = policy_obj if policy_obj is not None else ref.load(spec)
            steps = [0]

            def on_step(n: int) -> None:
                steps[0] += n
                if steps[0] >= _STEP_REPORT:
                    out.put(("steps", steps[0]))
                    steps[0] = 0

            run_episodes(
                policy, spec, list(indices), cfg, obs_hooks, act_hooks,
                on_result=lambda r: out.put(("ep", r.to_json())),
                on_step=on_step,
                env_hooks=env_hooks,
            )
            out.put(("steps", steps[0]))
            out.put(("done", None))
        except BaseException as e:  # noqa: BLE001 - reported to the driver
            out.put(("error", (type(e).__name__, str(e), traceback.format_exc())))

    thread = threading.Thread(target=work, name="certrl-shard", daemon=True)
    thread.start()
    while True:
        kind, data = out.get()
        eps: list[dict[str, Any]] = []
        while kind == "ep":  # send the episodes finished meanwhile together
            eps.append(data)
            try:
                kind, data = out.get_nowait()
            except queue.Empty:
                kind, data = "", None
        if eps:
            yield ("eps", eps)
        if kind == "steps":
            yield ("steps", data)
        elif kind in ("done", "error"):
            thread.join()
            yield (kind, data)
            return


_REMOTE: Any = None


def _remote_shard() -> Any:
    global _REMOTE
    if _REMOTE is None:
        ray = import_ray()
        # max_retries=0: the driver re-submits only the unfinished episodes of a lost shard
        _REMOTE = ray.remote(num_cpus=1, max_retries=0)(_run_shard)
    return _REMOTE


def default_shard_size(n: int, workers: int, batch_size: int) -> int:
    """Episodes per shard: four lockstep batches, but at least two shards per worker."""
    return max(1, min(4 * max(1, batch_size), math.ceil(n / max(1, 2 * workers))))


def run_ray(
    policy: Policy,
    spec: EnvSpec,
    todo: list[int],
    cfg: EvalConfig,
    *,
    workers: int | None = None,
    address: str | None = None,
    obs_hooks: list[ObservationHook] | None = None,
    act_hooks: list[ActionHook] | None = None,
    env_hooks: list[EnvHook] | None = None,
    on_result: Callable[[EpisodeResult], None] | None = None,
    on_steps: Callable[[int], None] | None = None,
    ref: PolicyRef | None = None,
    shard_size: int | None = None,
    max_retries: int = 3,
) -> RunStats:
    """Run episodes ``todo`` as shards on Ray (see the module docstring).

    ``workers``: shards in flight at once (default: the cluster's CPUs). ``address``: the
    cluster to join (default: start a local instance unless Ray is already initialized)."""
    ray = import_ray()
    t0 = time.perf_counter()
    init_ray(address, num_cpus=workers)
    cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
    nw = max(1, min(workers or cpus, len(todo) or 1))
    stats = RunStats(workers=nw)
    if not todo:
        stats.seconds = time.perf_counter() - t0
        return stats
    obs_hooks = list(obs_hooks or [])
    act_hooks = list(act_hooks or [])
    env_hooks = list(env_hooks or [])
    try:
        blob = pickle.dumps((policy, None, spec, cfg, obs_hooks, act_hooks, env_hooks))
    except Exception:
        if ref is None:
            raise
        blob = pickle.dumps((None, ref, spec, cfg, obs_hooks, act_hooks, env_hooks))
    payload = ray.put(blob)
    del blob
    size = shard_size or default_shard_size(len(todo), nw, cfg.batch_size)
    pending: deque[list[int]] = deque(
        list(todo[i : i + size]) for i in range(0, len(todo), size)
    )
    remote = _remote_shard()
    inflight: dict[Any, set[int]] = {}  # generator -> its unfinished episode indices

    def submit() -> None:
        while pending and len(inflight) < nw:
            shard = pending.popleft()
            inflight[remote.remote(payload, shard, 1)] = set(shard)

    def lost(gen: Any, err: BaseException) -> None:
        left = sorted(inflight.pop(gen))
        stats.retries += 1
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if stats.retries > max_retries:
            raise WorkerError(
                "WorkerDied",
                f"Ray workers were lost {stats.retries} times (last: {type(err).__name__}: "
                f"{first}); finished episodes are saved, run again with --resume",
                "",
            ) from None
        print(f"certrl: a Ray worker was lost ({type(err).__name__}); re-running the "
              f"{len(left)} unfinished episodes of its shard", file=sys.stderr)
        if left:
            pending.appendleft(left)

    try:
        submit()
        while inflight:
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for gen in ready:
                try:
                    item_ref = next(gen)
                except StopIteration:  # ended without "done": treat as lost
                    if inflight.get(gen):
                        lost(gen, RuntimeError("shard ended early"))
                    else:
                        inflight.pop(gen, None)
                    continue
                try:
                    kind, data = ray.get(item_ref)
                except ray.exceptions.RayError as e:
                    lost(gen, e)
                    continue
                if kind == "eps":
                    left = inflight[gen]
                    for d in data:
                        r = EpisodeResult.from_json(d)
                        if r.index in left:
                            left.discard(r.index)
                            stats.episodes += 1
                            stats.steps += r.length
                            if on_result is not None:
                                on_result(r)
                elif kind == "steps":
                    if on_steps is not None and data:
                        on_steps(int(data))
                elif kind == "done":
                    if inflight[gen]:  # pragma: no cover - the evaluator runs every index
                        pending.appendleft(sorted(inflight[gen]))
                    del inflight[gen]
                elif kind == "error":
                    raise WorkerError(*data)
            submit()
    finally:
        for gen in inflight:
            try:
                ray.cancel(gen, force=True)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
    stats.seconds = time.perf_counter() - t0
    return stats
