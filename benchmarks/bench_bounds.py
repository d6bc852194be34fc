"""Certified output bounds throughput: IBP and CROWN vs a clean policy forward.

    python benchmarks/bench_bounds.py [--policy demo:hopper] [--env Hopper-v5] [--n 50000]
                                      [--eps 0.075] [--norm linf] [--quick]

States: ``--rollout`` steps of the deterministic policy in the environment (visited states,
normalized), tiled with small Gaussian jitter (std 0.05 in normalized units) up to ``--n``
states -- visited-like states whose bounds cost what a certification run over a whole dataset
of visited states costs. ``--quick``: 5,000 states.

Rows (seconds for all ``--n`` states, best of ``--repeats``; one torch thread):

* clean -- ``policy.act_normalized`` on all states in one batch (float32);
* ibp / crown -- :func:`certrl.certificates.propagation.action_deviation_bounds` with that
  method (float64, float32 rounding margin included, chunked internally).

The summary line gives each method's time as a multiple of the clean forward (comparable across
machines) and CROWN's states per second; also the mean certified linf action deviation and the
CROWN / IBP mean width ratio of the head output.

Measured (one thread on a shared 2-core machine, demo:hopper, eps 0.075 linf, N=50,000):
clean 0.026 s (1.9M states/s), ibp 0.33-0.41 s (13-14x clean), crown 3.1-3.7 s (118-129x clean,
14-17k states/s), crown/ibp width 0.22. CROWN's floor is its flop count: bounding the 64
hidden units of layer 2 back-substitutes a [64, 11] matrix per state (~18x the forward's
flops, in float64), plus the tanh relaxations (tangent points by bisection).
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

from certrl.certificates.propagation import action_deviation_bounds
from certrl.policies.loader import load_policy


def visited_states(policy, env_id: str, steps: int, seed: int = 0) -> torch.Tensor:
    """Normalized observations of ``steps`` deterministic environment steps."""
    env = gym.make(env_id)
    obs, _ = env.reset(seed=seed)
    out = []
    for i in range(steps):
        out.append(np.asarray(obs, dtype=np.float32))
        obs, _, term, trunc, _ = env.step(policy.predict(obs))
        if term or trunc:
            obs, _ = env.reset(seed=seed + i + 1)
    env.close()
    return policy.normalize(torch.as_tensor(np.stack(out)))


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="demo:hopper")
    ap.add_argument("--env", default="Hopper-v5", help="Gymnasium id for the visited states")
    ap.add_argument("--n", type=int, default=50_000, help="number of states")
    ap.add_argument("--eps", type=float, default=0.075)
    ap.add_argument("--norm", default="linf", choices=["linf", "l2"])
    ap.add_argument("--rollout", type=int, default=1000, help="environment steps visited")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="5,000 states, 1 repeat of the bounds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = 5_000 if args.quick else args.n
    policy = load_policy(args.policy)
    base = visited_states(policy, args.env, min(args.rollout, n))
    gen = torch.Generator().manual_seed(0)
    reps = -(-n // base.shape[0])
    z = base.repeat(reps, 1)[:n]
    z = z + 0.05 * torch.randn(z.shape, generator=gen)

    with torch.no_grad():
        clean = best_of(lambda: policy.act_normalized(z), max(args.repeats, 5))
    bound_reps = 1 if args.quick else args.repeats
    results = {}
    times = {}
    for method in ("ibp", "crown"):
        times[method] = best_of(
            lambda m=method: results.__setitem__(
                m, action_deviation_bounds(policy, z, args.eps, args.norm, method=m)),
            bound_reps)
    ibp, crown = results["ibp"], results["crown"]
    ratio = float(crown.output.width.mean() / ibp.output.width.mean())
    print(f"{'row':<8}{'seconds':>10}{'x clean':>10}{'states/s':>12}{'mean linf dev':>15}")
    print(f"{'clean':<8}{clean:>10.4f}{1.0:>10.1f}{n / clean:>12,.0f}")
    for m in ("ibp", "crown"):
        print(f"{m:<8}{times[m]:>10.3f}{times[m] / clean:>10.1f}{n / times[m]:>12,.0f}"
              f"{float(results[m].linf.mean()):>15.4f}")
    print(f"SUMMARY bench_bounds: {args.policy} N={n} eps={args.eps:g} {args.norm}: ibp "
          f"{times['ibp'] / clean:.1f}x clean, crown {times['crown'] / clean:.0f}x clean, crown "
          f"{n / times['crown'] / 1000:.1f}k states/s, crown/ibp width {ratio:.2f}")


if __name__ == "__main__":
    main()
