"""``certrl stress``: argument parsing and printing over :mod:`certrl.pipeline.stress`
(return of a policy under changed dynamics; see there for what runs, the journals and the
parallelism).

    certrl stress demo:hopper --env hopper --params torso_mass=0.5:1.5,friction=0.5:2.0 \\
        --grid 5 --episodes 20
    certrl stress policy.zip --env hopper --uncertainty-set rrls
    certrl stress demo:hopper --env hopper --list-params

Keys for gates and reports: ``stress.worst_case.lower`` (lower end of the 95% CI of the
worst-case mean return; ``certrl gate --require "worst_case_return >= X"``),
``stress.worst_case.mean``, ``stress.average.{mean,lower,upper}``, ``stress.grid`` (heat map).
"""

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
    fmt,
    job_from_args,
    print_summary,
)
from certrl.dynamics import MESHES, StressError
from certrl.errors import UsageError
from certrl.pipeline.stress import (
    DEFAULT_GRID,
    ParamListing,
    StressOptions,
    design_stress,
    param_listing,
    run_stress,
    save_stress,
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "stress",
        help="return under changed dynamics (masses, friction, damping, gravity): worst case "
        "and average over a grid, random samples or the published RRLS uncertainty sets",
        description="Evaluate a policy on MuJoCo models with changed physical parameters. "
        "Parameters: <body>_mass, friction, <geom>_friction, damping, <joint>_damping, gravity "
        "(--list-params prints them). Values are scale factors of the nominal model "
        "(torso_mass=0.5:1.5), or absolute with abs: (torso_mass=abs:0.1:3). Reports the "
        "worst-case and average return over the points with 95%% bootstrap CIs.",
    )
    add_policy_args(p)
    for action in p._actions:  # POLICY may be left out with --list-params
        if action.dest == "policy":
            action.nargs = "?"
            action.default = None
    add_run_args(p, episodes=20)
    p.add_argument("--params", metavar="SPEC",
                   help="parameters and ranges: NAME=LO:HI (scale factors), NAME=V (fixed), "
                   "NAME=abs:LO:HI (absolute values), comma-separated, e.g. "
                   "torso_mass=0.5:1.5,friction=0.5:2.0")
    p.add_argument("--uncertainty-set", metavar="NAME",
                   help="a published uncertainty set for the environment: rrls (= rrls-3d), "
                   "rrls-1d, rrls-2d, rrls-3d (RRLS / M2TD3; absolute values; 10 points per "
                   "dimension, RRLS mesh)")
    p.add_argument("--grid", type=int, metavar="K",
                   help=f"K values per parameter, cartesian product (default {DEFAULT_GRID}; "
                   "the set's own for --uncertainty-set)")
    p.add_argument("--samples", type=int, metavar="N",
                   help="instead of a grid: N points drawn uniformly from the box (seeded)")
    p.add_argument("--mesh", choices=MESHES,
                   help="grid values: linspace (LO..HI, both included; default) or rrls "
                   "(LO + i (HI - LO) / K, i < K: RRLS's evaluation mesh; default for RRLS sets)")
    p.add_argument("--drift", type=float, default=0.0, metavar="RATE",
                   help="time-varying parameters (TC-RMDP): every step each parameter moves by "
                   "U(-RATE, RATE) x its range width, clipped to the range, starting from the "
                   "point's values (default 0: fixed per episode)")
    p.add_argument("--list-params", action="store_true",
                   help="print the environment's parameter names, nominal values and "
                   "published sets, then exit")
    add_common(p)
    p.set_defaults(handler=cmd_stress)


def options_from_args(args: argparse.Namespace) -> StressOptions:
    """The :class:`StressOptions` of the command line."""
    return StressOptions(
        params=args.params, uncertainty_set=args.uncertainty_set, grid=args.grid,
        samples=args.samples, mesh=args.mesh, drift=args.drift, episodes=args.episodes,
        workers=args.workers, batch_size=args.batch_size,
    )


def cmd_stress(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    try:
        return _stress(args, argv)
    except StressError as e:
        raise UsageError(str(e)) from None


def _stress(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.envs import resolve_env

    spec = resolve_env(args.env, args.env_kwargs)
    if args.list_params:
        _print_params(param_listing(spec))
        return EXIT_OK
    if args.policy is None:
        raise UsageError("stress needs a POLICY (e.g. certrl stress demo:hopper --env hopper "
                         "--params torso_mass=0.5:1.5), or --list-params")
    opts = options_from_args(args)
    design = design_stress(spec, opts, seed=args.seed)  # before loading the policy
    job = job_from_args(args)
    out = run_stress(job, opts, design=design)
    save_stress(job, out, command_line(argv))
    _print_report(job, out.section, out.params)
    print(f"results: {job.results_file}")
    return EXIT_OK


# ---------------------------------------------------------------------------- output
def _print_params(listing: ParamListing) -> None:
    print(f"{listing.gym_id}: dynamics parameters (values: scale factors of the nominal model, "
          "or absolute with abs:)")
    print(f"{'name':<28}{'kind':<10}nominal (absolute)")
    for name, kind, nom in listing.params:
        shown = "varies per entry" if nom is None else f"{nom:g}"
        print(f"{name:<28}{kind:<10}{shown}")
    if listing.sets:
        print("\npublished uncertainty sets (--uncertainty-set NAME; absolute values):")
        for key, u in listing.sets.items():
            rng = ", ".join(f"{p.name}=[{p.low:g}, {p.high:g}]" for p in u.params)
            print(f"  {key:<9} {rng}  ({u.grid} points per dimension, {u.mesh} mesh)")


def _vals(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in values.items())


def _print_report(job: Any, sec: dict[str, Any], params: list[Any]) -> None:
    print_summary(f"{job.spec.gym_id} nominal return", sec["nominal"]["summary"])
    units = "absolute values" if params[0].absolute else "scale factors of the nominal model"
    grid, cells = sec["grid"], sec["cells"]
    if grid is not None:
        n1, n2 = grid["names"]
        v1, v2, mean = grid["values1"], grid["values2"], grid["mean"]
        print(f"mean return per cell ({units}; rows {n1}, columns {n2}; "
              f"{sec['episodes']} episodes each):")
        corner = f"{n1} \\ {n2}"
        wid = max(10, *(len(f"{v:g}") + 2 for v in v2))
        print(f"{corner:>{max(len(corner), 12)}}" + "".join(f"{v:>{wid}g}" for v in v2))
        for a, row in zip(v1, mean, strict=True):
            print(f"{a:>{max(len(corner), 12)}g}" + "".join(f"{fmt(x):>{wid}}" for x in row))
    else:
        if len(cells) <= 20:  # every point, in grid / sampling order
            shown, more = list(range(len(cells))), ""
        else:
            shown = sorted(range(len(cells)), key=lambda i: cells[i]["mean"])[:20]
            more = f" (the 20 worst of {len(cells)})"
        print(f"mean return per point{more} ({units}; {sec['episodes']} episodes each):")
        for i in shown:
            c = cells[i]
            print(f"  {fmt(c['mean']):>10}  95% CI [{fmt(c['mean_ci'][0])}, "
                  f"{fmt(c['mean_ci'][1])}]  {_vals(c['values'])}")
    wc, av = sec["worst_case"], sec["average"]
    print(f"worst case: {fmt(wc['mean'])} (95% CI {fmt(wc['lower'])} .. {fmt(wc['upper'])}) "
          f"at {_vals(wc['values'])}; {fmt(wc['drop_from_nominal'])} below nominal")
    print(f"average over {av['points']} points: {fmt(av['mean'])} (95% CI {fmt(av['lower'])} "
          f".. {fmt(av['upper'])})")
    if sec["drift"]:
        print(f"parameters drifted by up to {sec['drift']:g} x their range per step (TC-RMDP), "
              "starting from each point's values")
    print(f"gate: worst_case_return = {fmt(wc['lower'])} (lower end of the worst case's 95% "
          "CI, stress.worst_case.lower)")
