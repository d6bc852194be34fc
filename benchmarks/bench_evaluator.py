"""Evaluator throughput vs a naive loop and raw MuJoCo physics, measured in the same run.

    python benchmarks/bench_evaluator.py [--policy demo:hopper] [--env hopper] [--steps 20000]

Rows (env steps per second; one env step = frame_skip physics steps):
* raw mj_step   — ``mujoco.mj_step`` on the environment's model, zero controls, no Python env,
                  no policy: the physics ceiling of one core;
* naive         — one Gymnasium env, one unbatched torch policy call per step (what the
                  reference codes do);
* certrl 1w     — certrl's lockstep evaluator in this process (gym engine, --batch-size,
                  default 32; end to end, start-up included);
* certrl Nw     — certrl with N local worker processes (N = cores).
Ratios are against numbers measured in this same run, so they compare across machines; the
last line is a short summary meant for logs.
"""

from __future__ import annotations

import argparse
import time

import mujoco
import torch

from certrl.backends import PolicyRef, default_workers, limit_threads, run_local
from certrl.envs import resolve_env
from certrl.evaluator import EvalConfig, episode_env_seed


def raw_physics(spec, steps: int) -> float:
    env = spec.make()
    model = env.unwrapped.model
    frame_skip = int(env.unwrapped.frame_skip)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    t0 = time.perf_counter()
    for i in range(steps * frame_skip):
        mujoco.mj_step(model, data)
        if i % 4000 == 0:
            mujoco.mj_resetData(model, data)
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def naive(policy, spec, steps: int) -> float:
    env = spec.make()
    obs, _ = env.reset(seed=0)
    n, ep = 0, 0
    t0 = time.perf_counter()
    while n < steps:
        with torch.no_grad():
            a = policy.act(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
        obs, _, term, trunc, _ = env.step(a)
        n += 1
        if term or trunc:
            ep += 1
            obs, _ = env.reset(seed=episode_env_seed(0, ep))
    dt = time.perf_counter() - t0
    env.close()
    return steps / dt


def certrl_rate(policy, spec, episodes: int, workers: int, batch: int) -> tuple[float, int]:
    stats = run_local(policy, spec, list(range(episodes)), EvalConfig(seed=0, batch_size=batch),
                      workers=workers)
    return stats.steps_per_second, stats.steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="demo:hopper")
    ap.add_argument("--env", default="hopper")
    ap.add_argument("--steps", type=int, default=20000, help="steps for raw / naive rows")
    ap.add_argument("--episodes", type=int, default=64, help="episodes for certrl rows")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    limit_threads()
    spec = resolve_env(args.env)
    policy = PolicyRef(args.policy).load(spec)  # loaded and fitted to the env
    cores = default_workers()
    rows = [("raw mj_step (1 core)", raw_physics(spec, args.steps))]
    rows.append(("naive loop", naive(policy, spec, args.steps)))
    r1, _ = certrl_rate(policy, spec, args.episodes, 1, args.batch_size)
    rows.append(("certrl 1 worker", r1))
    rn, _ = certrl_rate(policy, spec, args.episodes * cores, cores, args.batch_size)
    rows.append((f"certrl {cores} workers", rn))
    raw, nv = rows[0][1], rows[1][1]
    print(f"{'':<24}{'steps/s':>12}{'/ naive':>10}{'/ raw x cores':>15}")
    for name, rate in rows:
        print(f"{name:<24}{rate:>12,.0f}{rate / nv:>10.2f}{rate / (raw * cores):>15.2f}")
    print(
        f"SUMMARY bench_evaluator env={spec.gym_id} cores={cores} "
        f"certrl_1w/naive={r1 / nv:.2f} certrl_{cores}w/naive={rn / nv:.2f} "
        f"certrl_{cores}w/(raw*cores)={rn / (raw * cores):.2f}"
    )


if __name__ == "__main__":
    main()
