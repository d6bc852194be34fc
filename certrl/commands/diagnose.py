"""``certrl diagnose``: argument parsing and printing over :mod:`certrl.pipeline.diagnose`
(where and along which observation directions a policy is fragile; empirical, see there)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from certrl.commands.options import (
    EXIT_OK,
    add_common,
    add_policy_args,
    add_run_args,
    command_line,
    job_from_args,
    loader_kwargs,
)
from certrl.pipeline.diagnose import DiagnoseOptions, run_diagnose, save_diagnose


def register(sub: Any) -> None:
    p = sub.add_parser(
        "diagnose",
        help="where in an episode and along which observation directions the policy is fragile",
        description="Local sensitivity of the action on the states clean episodes visit: "
        "Jacobian singular values and directions, named observation dimensions, stability of "
        "the fragile direction over time, the smallest perturbation an attack finds, and the "
        "overlap with another policy's unstable directions (Korkmaz, ICML 2024). Empirical: "
        "no guarantee (certrl bound and certrl certify prove things).",
    )
    add_policy_args(p)
    add_run_args(p, episodes=10)
    p.add_argument("--space", choices=["auto", "normalized", "raw"], default="auto",
                   help="observation coordinates of the Jacobians and perturbations (default: "
                   "normalized when the policy has normalization statistics, else raw)")
    p.add_argument("--norm", choices=["linf", "l2"], default="linf",
                   help="norm of the minimal-perturbation search (default linf)")
    p.add_argument("--eps-max", type=float, default=None,
                   help="search radius (default 4x the environment's published budget in the "
                   "normalized space, else 1)")
    p.add_argument("--tol", type=float, default=None,
                   help="continuous policies: the action 'changes' when it moves by more than "
                   "TOL in l_inf (default 10%% of the largest half-range of the bounds)")
    p.add_argument("--directions", type=int, default=3,
                   help="singular directions per state and dimension of the unstable subspace "
                   "(default 3)")
    p.add_argument("--search-states", type=int, default=5000,
                   help="states (evenly spaced over the visited ones) for the minimal-"
                   "perturbation search (default 5000)")
    p.add_argument("--no-search", action="store_true",
                   help="skip the minimal-perturbation search (Jacobians only)")
    p.add_argument("--trace-episodes", type=int, default=3,
                   help="episodes whose per-step traces go into the results file (default 3)")
    p.add_argument("--compare", metavar="POLICY", default=None,
                   help="another policy for the same environment: its unstable directions on "
                   "the same states, and their overlap with this policy's")
    add_common(p)
    p.set_defaults(handler=cmd_diagnose)


def options_from_args(args: argparse.Namespace) -> DiagnoseOptions:
    return DiagnoseOptions(
        episodes=args.episodes, space=args.space, norm=args.norm, tol=args.tol,
        eps_max=args.eps_max, directions=args.directions, search=not args.no_search,
        search_states=args.search_states, trace_episodes=args.trace_episodes,
        compare=args.compare)


def cmd_diagnose(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    opts = options_from_args(args)
    opts.validate()
    job = job_from_args(args)
    kw = loader_kwargs(args)
    kw.update(vecnormalize=None, obs_stats=None)  # those belong to the first policy
    out = run_diagnose(job, opts, loader_kwargs=kw)
    save_diagnose(job, out, command_line(argv))
    print_report(out.section)
    print(f"results: {job.results_file}")
    return EXIT_OK


def print_report(sec: dict[str, Any]) -> None:
    nm = "l_inf" if sec["norm"] == "linf" else "l2"
    s = sec["sensitivity"]
    print(f"diagnosis ({sec['space']} observations, {sec['states']:,} states of "
          f"{sec['episodes']} clean episodes):")
    print(f"  sensitivity (top singular value of d action / d obs): median {s['0.5']:.3g}, "
          f"q0.9 {s['0.9']:.3g}; l_inf gain median {sec['linf_gain']['0.5']:.3g}")
    c = sec["top_direction_cos_between_steps"]
    if c["mean"] is not None:
        print(f"  top direction from step to step: mean |cos| {c['mean']:.2f} (q0.1 "
              f"{c['0.1']:.2f})")
    print(f"  {'dimension':<28}{'share of the top direction':>28}")
    for row in sec["dimension_shares"][:8]:
        print(f"  {row['name']:<28}{row['share']:>27.1%}")
    sub = sec["unstable_subspace"]
    for j, b in enumerate(sub):
        tops = ", ".join(f"{t['name']} {t['weight']:+.2f}" for t in b["top"])
        print(f"  unstable direction {j + 1} (eigenvalue {b['eigenvalue']:.3g}): {tops}")
    ms = sec["min_perturbation"]
    if ms:
        q = ms["quantiles"]
        if q["0.5"] is None:
            print(f"  minimal {nm} perturbation: none found within {ms['eps_max']:g} on "
                  f"{ms['states']} states")
        else:
            extra = ""
            if ms["fraction_within_published_eps"] is not None:
                extra = (f"; {ms['fraction_within_published_eps']:.1%} of states within the "
                         f"published eps {ms['published_eps']:g}")
            print(f"  minimal {nm} perturbation an attack found: median {q['0.5']:.3g} (q0.1 "
                  f"{q['0.1']:.3g}, q0.9 {q['0.9']:.3g}); found on {ms['found_fraction']:.0%} "
                  f"of {ms['states']} states within {ms['eps_max']:g}{extra}")
    cmp = sec["comparison"]
    if cmp:
        angles = ", ".join(f"{a:.0f}" for a in cmp["principal_angles_deg"])
        print(f"  compared with {cmp['policy']} (same states and coordinates): unstable-"
              f"subspace overlap {cmp['subspace_overlap']:.2f} (principal angles {angles} deg), "
              f"top directions |cos| mean {cmp['top_direction_abs_cos']['mean']:.2f}, its "
              f"sensitivity median {cmp['sensitivity']['0.5']:.3g}")
    print(sec["statement"])
