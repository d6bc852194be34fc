"""Pixel evaluation throughput: where the time of a smoothed Atari episode goes.

    python benchmarks/bench_atari.py [--policy demo:pong] [--env pong-one-round]
                                     [--steps 4000] [--batch 32] [--quick]

Measured in one run, one torch thread, the same lockstep width:

* env -- the ``--batch`` environments stepped alone (ALE + SB3 preprocessing), random actions;
* forward -- the policy's CNN forward on ``[batch, 4 * 84 * 84]`` stacks (normalize +
  ``act_normalized``, no grad), once per lockstep step;
* evaluator -- :func:`certrl.evaluator.run_episodes` with per-frame smoothing
  (:class:`certrl.smoothing.FrameSmoothing`, sigma 0.1): what ``certrl certify`` runs, minus
  the one-off cost of making the environments (ALE loads a ROM per environment, ~0.1 s);
* attacked -- the same with the per-frame episode attack of ``certrl certify`` in front
  (``smoothed_attack_hooks(..., frame_stack=4)``: PGD-10 on the newest frame, EOT over 8
  noise draws, B = 1), one batch of ``min(batch, 8)`` episodes: its cost is 80 CNN forward +
  backward passes per step, so attacked / smoothed is the number to watch.

The ``SUMMARY`` line gives the evaluator's steps/s and splits its time per step into env,
forward and the rest (noise draws, hooks, bookkeeping: Python), then the attacked steps/s and
its ratio to the smoothed run. Target: the rest is a small share (< 15%); the CNN forward and
the emulator are the cost.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from certrl.attacks.gradient import smoothed_attack_hooks
from certrl.evaluator import EvalConfig, run_episodes
from certrl.pipeline.job import load_for_env, resolve_job_env
from certrl.smoothing import FrameSmoothing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="demo:pong")
    ap.add_argument("--env", default="pong-one-round")
    ap.add_argument("--steps", type=int, default=4000, help="env steps per measurement")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="1,000 steps")
    args = ap.parse_args()
    torch.set_num_threads(1)
    steps = 1000 if args.quick else args.steps
    spec = resolve_job_env(args.env)
    policy = load_for_env(args.policy, spec)
    width = args.batch

    # env alone
    t0 = time.perf_counter()
    envs = [spec.make() for _ in range(width)]
    make_s = time.perf_counter() - t0  # paid once per evaluator run (ROM loads)
    for k, e in enumerate(envs):
        e.reset(seed=k)
    rng = np.random.default_rng(0)
    n_act = int(envs[0].action_space.n)
    t0 = time.perf_counter()
    done_steps = 0
    while done_steps < steps:
        for k, e in enumerate(envs):
            _, _, te, tr, _ = e.step(int(rng.integers(n_act)))
            if te or tr:
                e.reset(seed=10_000 + done_steps + k)
        done_steps += width
    env_s = (time.perf_counter() - t0) / done_steps
    obs = np.stack([e.reset(seed=k)[0].reshape(-1) for k, e in enumerate(envs)])
    for e in envs:
        e.close()

    # forward alone
    x = torch.from_numpy(obs.astype(np.float32))
    with torch.no_grad():
        policy.act_normalized(policy.normalize(x))
        t0 = time.perf_counter()
        calls = max(1, steps // width)
        for _ in range(calls):
            policy.act_normalized(policy.normalize(x))
    fwd_s = (time.perf_counter() - t0) / (calls * width)

    # the evaluator, smoothed per frame
    total, runs = 0, 0
    n_eps = 4 * width
    t0 = time.perf_counter()
    while total < steps:
        res = run_episodes(policy, spec, list(range(total, total + n_eps)),
                           EvalConfig(seed=0, batch_size=width),
                           obs_hooks=[FrameSmoothing(0.1, "normalized", spec.frame_stack)])
        total += sum(r.length for r in res)
        runs += 1
    ev_s = (time.perf_counter() - t0 - runs * make_s) / total
    rest = max(0.0, ev_s - env_s - fwd_s)

    # the per-frame attack of certify: one lockstep batch of min(batch, 8) episodes
    a_width = min(width, 8)
    hooks = smoothed_attack_hooks(policy, 0.1, "normalized", 1.0, 170,
                                  frame_stack=spec.frame_stack)
    t0 = time.perf_counter()
    res = run_episodes(policy, spec, list(range(a_width)),
                       EvalConfig(seed=0, batch_size=a_width), obs_hooks=hooks)
    a_total = sum(r.length for r in res)
    at_s = (time.perf_counter() - t0 - make_s * a_width / width) / a_total
    print(f"env alone        {1 / env_s:9.0f} steps/s  ({env_s * 1e3:.3f} ms/step)")
    print(f"CNN forward      {1 / fwd_s:9.0f} rows/s   ({fwd_s * 1e3:.3f} ms/row, batch {width})")
    print(f"evaluator        {1 / ev_s:9.0f} steps/s  ({ev_s * 1e3:.3f} ms/step, {total} steps; "
          f"making the {width} environments, {make_s:.2f} s per run, excluded)")
    print(f"attacked         {1 / at_s:9.1f} steps/s  ({at_s * 1e3:.1f} ms/step, {a_total} steps,"
          f" per-frame PGD-10 x EOT-8)")
    print(f"SUMMARY bench_atari: {args.env} {1 / ev_s:.0f} steps/s smoothed; per step env "
          f"{env_s / ev_s:.0%}, CNN forward {fwd_s / ev_s:.0%}, rest (Python: noise, hooks, "
          f"bookkeeping) {rest / ev_s:.0%}; per-frame attack {1 / at_s:.1f} steps/s = "
          f"{ev_s / at_s:.1%} of smoothed (batch {width}; attack batch {a_width}; 1 torch thread)")


if __name__ == "__main__":
    main()
