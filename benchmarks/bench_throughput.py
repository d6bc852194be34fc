"""Throughput of clean smoothed evaluation: where the time goes, against raw MuJoCo physics.

    python benchmarks/bench_throughput.py [--policy demo:hopper-noisy] [--env hopper]
        [--sigma 0.2] [--steps 30000] [--batch-size N] [--fill 4] [--repeat 3] [--no-ray]
        [--quick]

Every certrl row runs the same job: the smoothed policy (Gaussian noise of scale ``--sigma`` on
the normalized observation, fresh each step, from each episode's own stream; no attack) on
fresh episodes, at the lockstep width the CLI uses by default on that engine (512 mujoco, 128
gym), at least ``--fill`` episodes per slot of every worker (so the end of the run, where
slots empty one by one, weighs about as much as in a certification run of thousands of
episodes) and about ``--steps`` environment steps; one env step = ``frame_skip`` physics
steps. All numbers are measured in this run, so the ratios compare across machines. About
ten minutes on 2 cores.

Rows (env steps per second):

* ``raw mj_step x1``      ``mujoco.mj_step(model, data, nstep=frame_skip)`` on one ``MjData``,
  replaying the actions the naive loop's policy took from the same initial states (so the
  physics costs what it costs in the evaluation: a hopper lying on the ground with zero
  controls has more contacts and steps ~25% slower): the physics ceiling of one core. It is
  measured again before each repeat of the headline row and the *fastest* measurement is
  used, so a slow moment of a shared machine cannot lower the ceiling and flatter the
  ratios. The ``x cores`` ceiling every ratio refers to is this rate times the cores this
  process may use;
* ``raw mj_step, N thr``  the same on N threads, one ``MjData`` each (``mj_step`` releases the
  GIL): what the cores actually deliver together;
* ``naive gym loop``      one ``gymnasium.make`` env, one unbatched torch policy call and one
  noise draw per step (what reference implementations do);
* ``certrl local ...``    :func:`certrl.backends.run_local` with 1 or N worker processes and
  the ``gym`` or ``mujoco`` engine (the ``mujoco`` engine reproduces ``gym`` bit for bit).
  The headline row, ``certrl local, N workers, mujoco``, is measured ``--repeat`` times, each
  right after its own raw measurements (x1 and N threads); the table shows the median, and
  each repeat is printed with its ratio to the raw N-thread rate of the same repeat (what
  the cores delivered for pure physics at that moment: on a shared machine this moves by
  10-20% from one minute to the next);
* ``certrl ray ...``      :func:`certrl.backends_ray.run_ray` on a local Ray instance
  (started here; its start-up time is printed and excluded).

Columns: ``steps/s`` end to end (worker start-up included); ``steady`` from the first
progress report to the end (start-up excluded); ``/naive``; ``/(raw x cores)`` = steady rate
over the physics ceiling (the issue-7 target is >= 0.85 for ``certrl local, N workers,
mujoco``); ``cpu eff`` = steps per CPU-second over raw steps per CPU-second (insensitive to
other programs sharing the cores; local rows only).

Then a breakdown of one in-process run (mujoco engine, one stepping thread) into physics
(inside ``mj_step``), Python stepping (the engine around ``mj_step``: controls in, state out,
reward / termination / observation), policy forward, smoothing noise and the evaluator loop,
in microseconds per env step; and for N workers, the share lost to start-up, inter-process
communication and contention (1 - steady N-worker rate / (N x one-worker rate)).

The last line, ``SUMMARY bench_throughput ...``, is meant for logs and READMEs: the headline
ratio ``mujoco_Nw/(raw*cores)`` (median repeat over the fastest raw x1 rate times the cores:
the issue-7 target, >= 0.85), ``mujoco_Nw/(raw_paired*cores)`` (median over repeats of the
repeat's rate over its own raw x1 rate times the cores: less exposed to the machine drifting
during the run, less conservative) and ``mujoco_Nw/raw_Nthreads`` (median of the ratios to
the repeat's raw N-thread rate).
On a machine shared with other jobs, absolute rates are noisy; compare ratios.
"""

from __future__ import annotations

import argparse
import resource
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np
import torch

from certrl.backends import PolicyRef, default_workers, limit_threads, run_local
from certrl.engines import mujoco_batch, set_engine_threads
from certrl.envs import EnvSpec, resolve_env
from certrl.evaluator import (
    EvalConfig,
    default_batch_size,
    episode_env_seed,
    episode_rng,
    run_episodes,
)
from certrl.policies.base import Policy
from certrl.smoothing import GaussianSmoothing


@dataclass
class Row:
    name: str
    rate: float  # end to end
    steady: float  # start-up excluded
    cpu_rate: float | None = None  # steps per CPU-second (None: not measurable)


def _cpu() -> float:
    """CPU seconds of this process and of its reaped children (the local workers)."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


# ---------------------------------------------------------------------------- baselines
Episode = tuple[np.ndarray, np.ndarray, np.ndarray]  # initial qpos, initial qvel, actions


def raw_physics(spec: EnvSpec, episodes: list[Episode], steps: int, threads: int = 1) -> Row:
    """``threads`` threads, each replaying the recorded episodes (open loop, from their
    recorded initial states) on its own ``MjData`` for ``steps`` env steps: the physics of
    exactly the states the policy visits, with no Python environment and no policy."""
    env = spec.make()
    model = env.unwrapped.model
    fs = int(env.unwrapped.frame_skip)
    env.close()
    datas = [mujoco.MjData(model) for _ in range(threads)]

    def work(d: Any) -> None:
        n = 0
        while n < steps:
            for qpos, qvel, acts in episodes:
                mujoco.mj_resetData(model, d)
                d.qpos[:] = qpos
                d.qvel[:] = qvel
                mujoco.mj_forward(model, d)
                for a in acts[: steps - n]:
                    d.ctrl[:] = a
                    mujoco.mj_step(model, d, nstep=fs)
                n += min(len(acts), steps - n)
                if n >= steps:
                    return

    ts = [threading.Thread(target=work, args=(d,)) for d in datas]
    c0, t0 = time.process_time(), time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    name = "raw mj_step x1" if threads == 1 else f"raw mj_step, {threads} threads"
    return Row(name, threads * steps / dt, threads * steps / dt, threads * steps / cpu)


def naive(policy: Policy, spec: EnvSpec, steps: int, sigma: float) -> tuple[Row, list[Episode]]:
    """One Gymnasium env, one policy call and one noise draw per step; also records each
    episode's initial state and actions for :func:`raw_physics`."""
    env = spec.make()
    u = env.unwrapped
    ep = 0
    obs, _ = env.reset(seed=episode_env_seed(0, ep))
    rng = episode_rng(0, ep, 2)
    start, acts = (u.data.qpos.copy(), u.data.qvel.copy()), []
    episodes: list[Episode] = []
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(steps):
        with torch.no_grad():
            x = policy.normalize(torch.as_tensor(obs, dtype=torch.float32)[None])
            x = x + sigma * torch.as_tensor(rng.standard_normal(x.shape[1]), dtype=torch.float32)
            a = policy.act_normalized(x)[0].numpy()
        acts.append(a)
        obs, _, term, trunc, _ = env.step(a)
        if term or trunc:
            episodes.append((*start, np.array(acts)))
            ep += 1
            obs, _ = env.reset(seed=episode_env_seed(0, ep))
            rng = episode_rng(0, ep, 2)
            start, acts = (u.data.qpos.copy(), u.data.qvel.copy()), []
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    if acts:
        episodes.append((*start, np.array(acts)))
    env.close()
    return Row("naive gym loop", steps / dt, steps / dt, steps / cpu), episodes


# ---------------------------------------------------------------------------- certrl rows
class _Meter:
    """Counts steps from progress reports; the steady window starts at the first report."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.first: float | None = None
        self.steps_after = 0

    def __call__(self, n: int) -> None:
        if self.first is None:
            self.first = time.perf_counter()
        else:
            self.steps_after += n

    def steady(self, total_steps: int, seconds: float) -> float:
        if self.first is None or self.steps_after == 0:
            return total_steps / seconds
        return self.steps_after / max(1e-9, time.perf_counter() - self.first)


def _episodes_for(steps: int, mean_len: float, workers: int, batch: int, fill: int) -> int:
    """Episodes for a row: about ``steps`` env steps, and at least ``fill`` episodes per slot
    of every worker, so the end of the run (slots emptying one by one while the last long
    episodes finish) weighs about as much as in a certification run of thousands of
    episodes, not most of the row."""
    return max(fill * workers * batch, int(np.ceil(steps / max(1.0, mean_len))))


def certrl_local(policy: Policy, spec: EnvSpec, episodes: int, workers: int, engine: str,
                 batch: int, sigma: float, threads: int | None = None) -> Row:
    cfg = EvalConfig(seed=0, batch_size=batch, engine=engine)
    meter = _Meter()
    set_engine_threads(threads)
    c0 = _cpu()
    try:
        st = run_local(policy, spec, list(range(episodes)), cfg, workers=workers,
                       obs_hooks=[GaussianSmoothing(sigma)], on_steps=meter)
    finally:
        set_engine_threads(None)
    cpu = _cpu() - c0
    thr = "" if threads in (None, 1) else f", {threads} threads"
    name = f"certrl local {workers}w {engine}{thr}"
    return Row(name, st.steps_per_second, meter.steady(st.steps, st.seconds), st.steps / cpu)


def certrl_ray(policy: Policy, spec: EnvSpec, episodes: int, workers: int, batch: int,
               sigma: float) -> Row:
    from certrl.backends_ray import run_ray

    cfg = EvalConfig(seed=0, batch_size=batch, engine="mujoco")
    meter = _Meter()
    st = run_ray(policy, spec, list(range(episodes)), cfg, workers=workers,
                 obs_hooks=[GaussianSmoothing(sigma)], on_steps=meter)
    return Row(f"certrl ray {workers}w mujoco", st.steps_per_second,
               meter.steady(st.steps, st.seconds))


# ---------------------------------------------------------------------------- breakdown
def _timed(fn: Callable[..., Any], acc: list[float]) -> Callable[..., Any]:
    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            acc[0] += time.perf_counter() - t

    return wrapper


def breakdown(policy: Policy, spec: EnvSpec, episodes: int, batch: int,
              sigma: float) -> tuple[dict[str, float], int]:
    """Seconds per component of one in-process run (mujoco engine, one stepping thread)."""
    acc = {k: [0.0] for k in ("physics", "engine", "policy", "noise", "total")}
    hook = _TimedSmoothing(sigma, acc["noise"])
    policy.normalize = _timed(policy.normalize, acc["policy"])  # type: ignore[method-assign]
    policy.act_normalized = _timed(  # type: ignore[method-assign]
        policy.act_normalized, acc["policy"])
    cls = mujoco_batch.MujocoBatch
    orig_step, orig_mod = cls.step_arrays, mujoco_batch.mujoco
    cls.step_arrays = _timed(orig_step, acc["engine"])  # type: ignore[method-assign]
    patched = types.SimpleNamespace(**vars(mujoco))
    patched.mj_step = _timed(mujoco.mj_step, acc["physics"])
    mujoco_batch.mujoco = patched  # type: ignore[assignment]
    steps = [0]
    set_engine_threads(1)
    try:
        t0 = time.perf_counter()
        run_episodes(policy, spec, list(range(episodes)),
                     EvalConfig(seed=0, batch_size=batch, engine="mujoco"),
                     [hook], on_step=lambda n: steps.__setitem__(0, steps[0] + n))
        acc["total"][0] = time.perf_counter() - t0
    finally:
        cls.step_arrays = orig_step  # type: ignore[method-assign]
        mujoco_batch.mujoco = orig_mod  # type: ignore[assignment]
        del policy.normalize, policy.act_normalized
        set_engine_threads(None)
    out = {k: v[0] for k, v in acc.items()}
    out["engine"] -= out["physics"]  # Python stepping around mj_step
    out["evaluator"] = out["total"] - out["engine"] - out["physics"] - out["policy"] - out[
        "noise"]
    return out, steps[0]


class _TimedSmoothing(GaussianSmoothing):
    """The smoothing hook, timed."""

    def __init__(self, sigma: float, acc: list[float]) -> None:
        super().__init__(sigma)
        self.acc = acc

    def __call__(self, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        t = time.perf_counter()
        try:
            return super().__call__(x, ctx)
        finally:
            self.acc[0] += time.perf_counter() - t


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--policy", default="demo:hopper-noisy")
    ap.add_argument("--env", default="hopper")
    ap.add_argument("--sigma", type=float, default=0.2)
    ap.add_argument("--steps", type=int, default=30000,
                    help="env steps per row (default 30000; N-worker rows run N times more)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="lockstep width of every certrl row (default: the CLI's, per engine: "
                         "512 mujoco, 128 gym)")
    ap.add_argument("--fill", type=int, default=4,
                    help="certrl rows run at least this many episodes per slot (default 4)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="measure the headline row (local, all workers, mujoco) this many "
                         "times, each after its own raw measurements; report the median "
                         "(default 3)")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray row")
    ap.add_argument("--quick", action="store_true",
                    help="a few seconds per row (smoke test; batch 32 unless --batch-size)")
    args = ap.parse_args(argv)
    if args.quick:
        args.steps = 4000
        args.repeat = 1
    limit_threads()
    spec = resolve_env(args.env)
    policy = PolicyRef(args.policy).load(spec)  # loaded and fitted to the env
    cores = default_workers()
    if args.quick and args.batch_size is None:
        args.batch_size = 32  # a smoke test: narrow batches keep every row to seconds
    batch = args.batch_size or default_batch_size("mujoco", spec)
    gbatch = args.batch_size or default_batch_size("gym", spec)
    print(f"bench_throughput: {spec.gym_id}, {args.policy}, smoothing sigma={args.sigma}, "
          f"{cores} cores, batch {batch} (gym rows {gbatch}), ~{args.steps:,} steps per worker",
          file=sys.stderr)

    # mean episode length of this smoothed policy (sizes the runs; not timed)
    probe = run_episodes(policy, spec, list(range(8)), EvalConfig(seed=0, batch_size=8,
                         engine="mujoco"), [GaussianSmoothing(args.sigma)])
    mean_len = float(np.mean([r.length for r in probe]))
    fill = 2 if args.quick else args.fill
    e1 = _episodes_for(args.steps, mean_len, 1, batch, fill)
    en = _episodes_for(args.steps * cores, mean_len, cores, batch, fill)
    g1 = _episodes_for(args.steps, mean_len, 1, gbatch, fill)
    gn = _episodes_for(args.steps * cores, mean_len, cores, gbatch, fill)

    naive_row, recorded = naive(policy, spec, max(2000, args.steps // 3), args.sigma)
    raws = [raw_physics(spec, recorded, args.steps)]
    rows = [raws[0]]
    raw_n: list[Row] = []
    if cores > 1:
        raw_n.append(raw_physics(spec, recorded, args.steps, threads=cores))
        rows.append(raw_n[0])
    rows.append(naive_row)
    rows.append(certrl_local(policy, spec, g1, 1, "gym", gbatch, args.sigma))
    rows.append(certrl_local(policy, spec, e1, 1, "mujoco", batch, args.sigma, threads=1))
    if cores > 1:
        rows.append(certrl_local(policy, spec, en, 1, "mujoco", batch, args.sigma,
                                 threads=cores))
        rows.append(certrl_local(policy, spec, gn, cores, "gym", gbatch, args.sigma))
    # the headline row, repeated: each repeat right after its own raw measurements
    heads: list[tuple[Row, Row, Row | None]] = []
    for i in range(max(1, args.repeat)):
        r1 = raws[0] if i == 0 else raw_physics(spec, recorded, args.steps)
        rn = (raw_n[0] if i == 0 else raw_physics(spec, recorded, args.steps, threads=cores)
              ) if cores > 1 else None
        if i:
            raws.append(r1)
        heads.append((r1, certrl_local(policy, spec, en, cores, "mujoco", batch, args.sigma),
                      rn))
    med = sorted(heads, key=lambda h: h[1].steady)[(len(heads) - 1) // 2][1]
    rows.append(Row(f"{med.name} (median of {len(heads)})" if len(heads) > 1 else med.name,
                    med.rate, med.steady, med.cpu_rate))
    ray_note = ""
    if not args.no_ray:
        try:
            from certrl.backends_ray import init_ray

            t = time.perf_counter()
            init_ray(None)
            ray_note = f"(Ray start-up {time.perf_counter() - t:.1f} s, excluded)"
            rows.append(certrl_ray(policy, spec, en, cores, batch, args.sigma))
        except Exception as e:  # noqa: BLE001 - Ray missing or failing: the table goes on
            ray_note = f"(Ray row skipped: {type(e).__name__}: {e})"

    raw = max(raws, key=lambda r: r.steady)
    rows[0] = Row(f"raw mj_step x1 (best of {len(raws)})", raw.rate, raw.steady, raw.cpu_rate)
    ceiling = raw.steady * cores
    naive_rate = next(r for r in rows if r.name == "naive gym loop").steady
    head = f"{'':<34}{'steps/s':>10}{'steady':>10}{'/naive':>8}{'/(raw x cores)':>16}" \
           f"{'cpu eff':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        eff = "-" if r.cpu_rate is None else f"{r.cpu_rate / raw.cpu_rate:.2f}"  # type: ignore
        print(f"{r.name:<34}{r.rate:>10,.0f}{r.steady:>10,.0f}{r.steady / naive_rate:>8.2f}"
              f"{r.steady / ceiling:>16.2f}{eff:>9}")
    spread = ", ".join(f"{r.steady:,.0f}" for r in raws)
    print(f"(raw mj_step x1 measured {spread} steps/s; the fastest is the ceiling)")
    for i, (r1, h, rn) in enumerate(heads):
        paired = f", {h.steady / rn.steady:.2f} of raw on {cores} threads" \
            if rn is not None else ""
        print(f"(repeat {i + 1}: certrl local {cores}w mujoco {h.steady:,.0f} steps/s = "
              f"{h.steady / ceiling:.2f} of the fastest raw x cores; against this repeat's own "
              f"raw measurements: {h.steady / (cores * r1.steady):.2f} of raw x1 x cores"
              f"{paired})")
    if ray_note:
        print(ray_note)

    parts, nsteps = breakdown(policy, spec, e1, batch, args.sigma)
    total = parts["total"]
    print(f"\nwhere the time goes (1 process, mujoco engine, 1 thread, batch {batch}; "
          f"{nsteps:,} steps, us per env step):")
    for key, label in (("physics", "physics (inside mj_step)"),
                       ("engine", "Python stepping (engine around mj_step)"),
                       ("policy", "policy forward (normalize + act)"),
                       ("noise", "smoothing noise"),
                       ("evaluator", "evaluator loop (hooks, bookkeeping, resets)")):
        print(f"  {label:<46}{parts[key] / nsteps * 1e6:>8.1f}  {parts[key] / total:>6.1%}")
    one = next(r for r in rows if r.name == "certrl local 1w mujoco")
    best = med
    if cores > 1:
        lost = 1 - best.steady / (cores * one.steady)
        print(f"  {cores} workers: start-up, IPC and contention cost {lost:.1%} of {cores} x the "
              f"one-worker rate (end-to-end rate {best.rate / best.steady:.0%} of steady)")

    gymn = next(r for r in rows if r.name == f"certrl local {cores}w gym")
    hw = sorted(h.steady / rn.steady for _, h, rn in heads if rn is not None)
    pair = sorted(h.steady / (cores * r1.steady) for r1, h, _ in heads)
    hw_part = f" mujoco_{cores}w/(raw_paired*cores)={pair[(len(pair) - 1) // 2]:.2f}"
    if hw:
        hw_part += f" mujoco_{cores}w/raw_{cores}threads={hw[(len(hw) - 1) // 2]:.2f}"
    ray_row = next((r for r in rows if r.name.startswith("certrl ray")), None)
    ray_part = f" ray_{cores}w/(raw*cores)={ray_row.steady / ceiling:.2f}" if ray_row else ""
    print(
        f"SUMMARY bench_throughput env={spec.gym_id} cores={cores} sigma={args.sigma} "
        f"mujoco_{cores}w/(raw*cores)={best.steady / ceiling:.2f} "
        f"gym_{cores}w/(raw*cores)={gymn.steady / ceiling:.2f} "
        f"mujoco_{cores}w/naive={best.steady / naive_rate:.2f}{hw_part}{ray_part} "
        f"mujoco_cpu_eff={best.cpu_rate / raw.cpu_rate:.2f}"  # type: ignore[operator]
        f" physics_share_1w={parts['physics'] / total:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
