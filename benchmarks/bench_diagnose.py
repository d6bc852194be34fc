"""``certrl diagnose`` throughput: batched action Jacobians and the minimal-perturbation search
vs a clean policy forward and vs the naive ways of getting the same Jacobians.

    python benchmarks/bench_diagnose.py [--policy demo:hopper] [--env Hopper-v5] [--n 10000]
                                        [--quick]

States: visited states of the deterministic policy (``--rollout`` steps), tiled with small
Gaussian jitter up to ``--n`` (as ``bench_bounds.py``). Rows (seconds for all states, best of
``--repeats``; one torch thread):

* clean -- ``policy.act_normalized`` on all states in one batch;
* jacobian -- :func:`certrl.diagnostics.action_jacobian` (what ``certrl diagnose`` runs);
* finite-diff -- central differences, ``2 d`` batched forwards (the naive batched way; also
  less accurate);
* per-state -- ``torch.autograd.functional.jacobian`` one state at a time (the naive way),
  timed on ``--per-state`` states and scaled to ``--n``;
* search -- :func:`certrl.diagnostics.min_perturbation` (l_inf, eps_max 0.3) on
  ``--search`` states, scaled to ``--n``.

The summary line gives each row as a multiple of the clean forward, and the Jacobian's speed-up
over the per-state loop.
"""

from __future__ import annotations

import argparse

import torch

from certrl.diagnostics import action_function, action_jacobian, min_perturbation
from certrl.pipeline.job import load_for_env, resolve_job_env


def main() -> None:
    from bench_bounds import best_of, visited_states

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default="demo:hopper")
    ap.add_argument("--env", default="Hopper-v5")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--rollout", type=int, default=1000)
    ap.add_argument("--per-state", type=int, default=300)
    ap.add_argument("--search", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="2,000 states, 1 repeat")
    args = ap.parse_args()
    torch.set_num_threads(1)
    n = 2_000 if args.quick else args.n
    reps = 1 if args.quick else args.repeats
    policy = load_for_env(args.policy, resolve_job_env(args.env))
    base = visited_states(policy, args.env, min(args.rollout, n))
    gen = torch.Generator().manual_seed(0)
    z = base.repeat(-(-n // base.shape[0]), 1)[:n]
    z = z + 0.05 * torch.randn(z.shape, generator=gen)
    f = action_function(policy)
    d = z.shape[1]

    with torch.no_grad():
        clean = best_of(lambda: policy.act_normalized(z), max(reps, 5))
    action_jacobian(policy, z[:64])  # warm-up (torch.func tracing)
    t_jac = best_of(lambda: action_jacobian(policy, z), reps)

    def finite_diff() -> None:
        h = 1e-3
        with torch.no_grad():
            for i in range(d):
                e = torch.zeros(d)
                e[i] = h
                (f(z + e) - f(z - e)) / (2 * h)

    t_fd = best_of(finite_diff, reps)
    m = min(args.per_state, n)
    t_loop = best_of(lambda: [torch.autograd.functional.jacobian(f, z[i:i + 1])
                              for i in range(m)], 1) * n / m
    s = min(args.search, n)
    t_search = best_of(lambda: min_perturbation(policy, z[:s], norm="linf", eps_max=0.3),
                       1) * n / s
    rows = [("clean", clean), ("jacobian", t_jac), ("finite-diff", t_fd),
            ("per-state", t_loop), ("search", t_search)]
    print(f"{'row':<12}{'seconds':>10}{'x clean':>10}{'states/s':>12}")
    for name, t in rows:
        print(f"{name:<12}{t:>10.4f}{t / clean:>10.1f}{n / t:>12,.0f}")
    print(f"SUMMARY bench_diagnose: {args.policy} N={n}: jacobian {t_jac / clean:.1f}x clean, "
          f"{t_loop / t_jac:.0f}x faster than per-state autograd, finite differences "
          f"{t_fd / clean:.1f}x clean; search {t_search / clean:.0f}x clean "
          f"({n / t_search:,.0f} states/s)")


if __name__ == "__main__":
    main()
