"""``certrl bound``: argument parsing and printing over :mod:`certrl.pipeline.bound`
(per-step certificates of the deployed, unsmoothed policy by bound propagation, IBP/CROWN;
see there for the pipeline and what it proves)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any

from certrl.commands.options import (
    EXIT_OK,
    add_common,
    add_policy_args,
    add_run_args,
    add_threat_args,
    command_line,
    floats,
    job_from_args,
)
from certrl.errors import UsageError
from certrl.pipeline.bound import BoundOptions, run_bound, save_bound


def _budgets(text: str, name: str) -> list[float]:
    vals = floats(text, name)
    if any(not (math.isfinite(v) and v >= 0) for v in vals):
        raise UsageError(f"{name} {text!r}: expected finite numbers >= 0")
    return vals


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bound",
        help="per-step certificates of the deployed policy by bound propagation (IBP/CROWN)",
        description="Sound bounds on the policy's action over the per-step threat ball around "
        "every state visited by clean episodes (IBP: Gowal et al. 2018; CROWN: Zhang et al. "
        "2018), beside the deviation PGD finds on the same states.",
    )
    add_policy_args(p)
    add_run_args(p, episodes=50)
    add_threat_args(p)
    p.add_argument("--method", choices=["crown", "ibp"], default="crown",
                   help="bound propagation: crown (linear relaxation, tighter; default) or ibp "
                   "(interval bounds)")
    p.add_argument("--tol", type=float, default=None,
                   help="continuous policies: a state counts as certified when the certified "
                   "l_inf action deviation is <= TOL (action units; default 10%% of the "
                   "largest half-range of the action bounds, 0.1 on Hopper)")
    p.add_argument("--eps-grid", default=None,
                   help="budgets of the curve, comma-separated (default eps x "
                   "0,0.125,0.25,0.5,0.75,1,1.5,2)")
    p.add_argument("--pgd-states", type=int, default=2000,
                   help="states (seeded subsample) for the PGD twin per budget (default 2000; "
                   "0 = off)")
    p.add_argument("--pgd-steps", type=int, default=20, help="PGD steps (default 20)")
    p.add_argument("--pgd-restarts", type=int, default=4, help="PGD random restarts (default 4)")
    p.add_argument("--allow-large-eps", action="store_true",
                   help="accept normalized-space budgets above 1 (l_inf)")
    add_common(p)
    p.set_defaults(handler=cmd_bound)


def options_from_args(args: argparse.Namespace) -> BoundOptions:
    """The :class:`BoundOptions` of the command line."""
    return BoundOptions(
        eps=args.eps, norm=args.norm, space=args.space, method=args.method, tol=args.tol,
        eps_grid=None if args.eps_grid is None else _budgets(args.eps_grid, "--eps-grid"),
        episodes=args.episodes, pgd_states=args.pgd_states, pgd_steps=args.pgd_steps,
        pgd_restarts=args.pgd_restarts, allow_large_eps=args.allow_large_eps,
    )


def cmd_bound(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    opts = options_from_args(args)
    opts.validate()  # before loading anything
    job = job_from_args(args)
    out = run_bound(job, opts)
    save_bound(job, out, command_line(argv))
    print_bounds(out.section)
    print(f"results: {job.results_file}")
    return EXIT_OK


def print_bounds(sec: dict[str, Any]) -> None:
    nm = "l_inf" if sec["norm"] == "linf" else "l2"
    disc = sec["discrete"]
    if disc:
        head = f"{'eps (' + nm + ')':>12}{'certified':>11}{'95% CI':>17}{'PGD unchanged':>15}"
    else:
        head = (f"{'eps (' + nm + ')':>12}{'certified':>11}{'95% CI':>17}{'PGD <= tol':>12}"
                f"{'dev q0.5':>10}{'dev q0.9':>10}{'PGD q0.9':>10}")
    print(f"per-step bounds ({sec['method']}, {sec['space']} observations, {sec['states']:,} "
          f"visited states" + ("" if disc else f", tol {sec['tol']:g}") + "):")
    print(head)
    print("-" * len(head))
    for row in sec["curve"]:
        fr = row["certified_fraction"]
        ci = f"{100 * fr['ci'][0]:.1f}..{100 * fr['ci'][1]:.1f}%"
        pg = row.get("pgd") or {}
        if disc:
            pv = pg.get("fraction_unchanged")
            ps = "-" if pv is None else f"{100 * pv:.1f}%"
            print(f"{row['eps']:>12g}{100 * fr['value']:>10.1f}%{ci:>17}{ps:>15}")
        else:
            pv = pg.get("fraction_within_tol")
            ps = "-" if pv is None else f"{100 * pv:.1f}%"
            q = row["deviation_quantiles"]
            pq = (pg.get("deviation_quantiles") or {}).get("0.9")
            pqs = "-" if pq is None else f"{pq:.4f}"
            print(f"{row['eps']:>12g}{100 * fr['value']:>10.1f}%{ci:>17}{ps:>12}"
                  f"{q['0.5']:>10.4f}{q['0.9']:>10.4f}{pqs:>10}")
    print(sec["statement"])
    print("(the certificate is an upper bound on the worst deviation, PGD a lower bound; the "
          "fraction is over states the clean policy visits, not states an attacker steers to)")
