"""``certrl stress``: return of a policy under changed dynamics (issue 8).

    certrl stress demo:hopper --env hopper --params torso_mass=0.5:1.5,friction=0.5:2.0 \\
        --grid 5 --episodes 20
    certrl stress policy.zip --env hopper --uncertainty-set rrls
    certrl stress demo:hopper --env hopper --list-params

What runs (the parameters, their units and the published RRLS sets are documented in
:mod:`certrl.stress`):

1. the *nominal* model, episodes ``0..m-1`` with no dynamics hook: exactly what ``certrl
   evaluate`` runs with the same ``--seed`` (same returns, bit for bit);
2. every evaluated point — a grid cell (``--grid K`` values per parameter, cartesian
   product) or a point drawn uniformly from the box (``--samples N``) — the same episodes
   ``0..m-1`` with the model changed by :class:`certrl.stress.DynamicsHook` before every reset
   (and every step with ``--drift``). Points differ only by the physics: common random numbers;
3. the worst case (lowest mean return over the points) and the average over the points with
   stratified-bootstrap 95% CIs (:func:`certrl.stress.summarize_cells`), and for a 2-D grid
   the heat map the report draws.

Results go to the ``stress`` section of the results file (atomically, via
:func:`certrl.results.update_results`); each point is journaled on its own
(``<out>/.journal/<file>.stress.<key>.jsonl``, the key includes the point's values), so
``--resume`` reruns only unfinished episodes of unfinished points. Returns depend only on
(seed, episode, point): not on ``--batch-size``, ``--workers`` or the order points run in.

Parallelism: with at least as many points as workers, whole points are spread over
``--workers`` processes (each runs its points' episodes in one lockstep batch); with fewer
points, points run one after the other and each spreads its episodes over the workers.

Keys for gates and reports: ``stress.worst_case.lower`` (lower end of the 95% CI of the
worst-case mean return; ``certrl gate --require "worst_case_return >= X"``),
``stress.worst_case.mean``, ``stress.average.{mean,lower,upper}``, ``stress.grid`` (heat map:
``params``, ``values1``, ``values2``, ``mean[i][j]``, ``nominal``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import pickle
import sys
import time
from collections.abc import Sequence
from typing import Any

from certrl.cli import (
    EXIT_OK,
    UsageError,
    _add_common,
    _add_policy_args,
    _add_run_args,
    _command_line,
    _fmt,
    _policy_json,
    build_job,
    print_summary,
    returns_summary,
)
from certrl.stress import MESHES, StressError

DEFAULT_GRID = 5
MAX_POINTS = 100_000
SECTION = "stress"
NOMINAL_SECTION = "stress-nominal"


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
    _add_policy_args(p)
    for action in p._actions:  # POLICY may be left out with --list-params
        if action.dest == "policy":
            action.nargs = "?"
            action.default = None
    _add_run_args(p, episodes=20)
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
    _add_common(p)
    p.set_defaults(handler=cmd_stress)


def cmd_stress(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    try:
        return _stress(args, argv)
    except StressError as e:
        raise UsageError(str(e)) from None


# ---------------------------------------------------------------------------- --list-params
def _model_of(spec: Any) -> Any:
    env = spec.make()
    try:
        model = getattr(env.unwrapped, "model", None)
    finally:
        env.close()
    if model is None or not hasattr(model, "body_mass"):
        raise StressError(f"{spec.gym_id} is not a MuJoCo environment (no env.model): dynamics "
                          "parameters need one, e.g. --env hopper")
    return model


def _list_params(spec: Any) -> int:
    from certrl.stress import (
        RRLS_SETS,
        ParamSpec,
        env_family,
        nominal_value,
        valid_param_names,
    )

    model = _model_of(spec)
    print(f"{spec.gym_id}: dynamics parameters (values: scale factors of the nominal model, or "
          "absolute with abs:)")
    print(f"{'name':<28}{'kind':<10}nominal (absolute)")
    for name in valid_param_names(model):
        p = ParamSpec(name, 1.0, 1.0, absolute=True)
        nom = nominal_value(model, p)
        shown = "varies per entry" if nom is None else f"{nom:g}"
        print(f"{name:<28}{p.kind:<10}{shown}")
    sets = RRLS_SETS.get(env_family(spec.gym_id))
    if sets:
        print("\npublished uncertainty sets (--uncertainty-set NAME; absolute values):")
        for key in sorted(sets):
            u = sets[key]
            rng = ", ".join(f"{p.name}=[{p.low:g}, {p.high:g}]" for p in u.params)
            print(f"  {key:<9} {rng}  ({u.grid} points per dimension, {u.mesh} mesh)")
    return EXIT_OK


# ---------------------------------------------------------------------------- running points
_WORKER: dict[str, Any] = {}


def _run_point(job: Any, params: list[Any], values: tuple[float, ...] | None, drift: float,
               episodes: int, desc: str) -> tuple[list[Any], Any]:
    """Episodes ``0..episodes-1`` at one point (``values=None``: the nominal model, no hook)."""
    from certrl.runner import run_section
    from certrl.stress import DynamicsHook

    if values is None:
        return run_section(job, NOMINAL_SECTION, episodes, desc=desc)
    hook = DynamicsHook(params, list(values), drift)
    return run_section(job, SECTION, episodes, env_hooks=[hook], desc=desc)


def _init_worker(payload: bytes, threads: int) -> None:
    from certrl.backends import limit_threads

    limit_threads()
    try:
        from certrl.engines import set_engine_threads

        set_engine_threads(threads)
    except ImportError:  # pragma: no cover - engines package absent
        pass
    job, params, drift = pickle.loads(payload)
    if job.policy is None:
        job.policy = job.ref.load(job.spec)
    _WORKER.update(job=job, params=params, drift=drift)


def _point_task(index: int, values: tuple[float, ...] | None,
                episodes: int) -> tuple[int, list[dict[str, Any]], int, int]:
    w = _WORKER
    results, stats = _run_point(w["job"], w["params"], values, w["drift"], episodes, "")
    return index, [r.to_json() for r in results], stats.steps, getattr(stats, "resumed", 0)


def _run_points(job: Any, params: list[Any], points: list[tuple[float, ...] | None],
                drift: float, episodes: int, pool_points: bool
                ) -> tuple[list[list[Any]], int, int, int]:
    """All points (``None`` = the nominal model); returns the per-point results (episode
    order), the steps, the resumed episodes and the processes used. ``pool_points``: whole
    points on ``job.workers`` processes; else points in turn, episodes over the workers."""
    from certrl.evaluator import EpisodeResult
    from certrl.runner import _Progress, progress_enabled

    out: list[list[Any] | None] = [None] * len(points)
    steps = resumed = 0
    if not pool_points:
        for i, values in enumerate(points):
            desc = "nominal" if values is None else f"point {i}/{len(points) - 1}"
            res, st = _run_point(job, params, values, drift, episodes, desc)
            out[i] = res
            steps += st.steps
            resumed += getattr(st, "resumed", 0)
        return [r for r in out if r is not None], steps, resumed, job.workers

    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    from certrl.backends import default_workers

    workers = job.workers
    wjob = dataclasses.replace(job, workers=1, progress=False)
    try:
        payload = pickle.dumps((wjob, params, drift))
    except Exception:
        if job.ref is None:
            raise
        payload = pickle.dumps((dataclasses.replace(wjob, policy=None), params, drift))
    threads = max(1, default_workers() // workers)
    bar = _Progress(progress_enabled(job.progress), len(points), 0, "stress points")
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"),
                               initializer=_init_worker, initargs=(payload, threads))
    try:
        futures = [pool.submit(_point_task, i, v, episodes) for i, v in enumerate(points)]
        for f in as_completed(futures):
            i, recs, n_steps, n_res = f.result()
            out[i] = [EpisodeResult.from_json(r) for r in recs]
            steps += n_steps
            resumed += n_res
            bar.episode(out[i][0])
            bar.add_steps(n_steps)
    except BrokenProcessPool as e:
        raise RuntimeError(f"a worker process died ({e}); finished points are journaled: run "
                           "the same command with --resume") from None
    except BaseException:  # Ctrl-C or an error: stop now (finished episodes are journaled)
        procs = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(timeout=5)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return [r for r in out if r is not None], steps, resumed, workers


# ---------------------------------------------------------------------------- the command
def _design(args: argparse.Namespace, spec: Any) -> dict[str, Any]:
    """Parameters, points and how they were chosen, from --params / --uncertainty-set."""
    from certrl.stress import (
        check_params,
        grid_cells,
        parse_params,
        sample_points,
        uncertainty_set,
    )

    if (args.params is None) == (args.uncertainty_set is None):
        raise StressError("give exactly one of --params NAME=LO:HI,... and --uncertainty-set "
                          "NAME (--list-params shows what the environment has)")
    if args.grid is not None and args.samples is not None:
        raise StressError("--grid and --samples exclude each other: a grid or random points")
    uset = None
    if args.uncertainty_set is not None:
        _model_of(spec)  # a non-MuJoCo environment gets that error first
        uset = uncertainty_set(spec.gym_id, args.uncertainty_set)
        params = list(uset.params)
    else:
        params = parse_params(args.params)
    check_params(_model_of(spec), params)
    if not (math.isfinite(args.drift) and 0 <= args.drift <= 1):
        raise StressError(f"--drift must be in [0, 1] (a fraction of each range per step), "
                          f"got {args.drift}")
    if args.samples is not None:
        points = sample_points(params, args.samples, args.seed)
        return {"params": params, "uset": uset, "points": points, "axes": None,
                "design": "samples", "grid": None, "mesh": None, "samples": args.samples}
    k = args.grid if args.grid is not None else (uset.grid if uset else DEFAULT_GRID)
    mesh = args.mesh or (uset.mesh if uset else "linspace")
    axes, cells = grid_cells(params, k, mesh)
    if len(cells) > MAX_POINTS:
        raise StressError(f"{len(cells):,} grid cells (> {MAX_POINTS:,}): use a smaller --grid "
                          "or --samples N")
    return {"params": params, "uset": uset, "points": cells, "axes": axes, "design": "grid",
            "grid": k, "mesh": mesh, "samples": None}


def _stress(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.envs import resolve_env
    from certrl.results import update_results
    from certrl.runner import finish_journal, returns_array
    from certrl.stress import cell_summary, heatmap, nominal_value, summarize_cells

    spec = resolve_env(args.env, args.env_kwargs)
    if args.list_params:
        return _list_params(spec)
    if args.policy is None:
        raise UsageError("stress needs a POLICY (e.g. certrl stress demo:hopper --env hopper "
                         "--params torso_mass=0.5:1.5), or --list-params")
    d = _design(args, spec)
    params, points = d["params"], d["points"]
    from certrl.backends import default_workers
    from certrl.evaluator import default_batch_size

    if args.batch_size is None:  # every slot holds its own (perturbed) environment
        args.batch_size = default_batch_size(args.engine, spec, env_hooks=True)
    job = build_job(args)
    m = args.episodes
    workers = max(1, args.workers or default_workers())
    pool_points = workers > 1 and len(points) + 1 >= workers
    if pool_points:  # whole points per process: one lockstep batch per point
        job.workers, job.batch_size = workers, min(args.batch_size, m)
    else:  # points in turn, each point's episodes over the workers (as certrl evaluate)
        job.workers = min(workers, m)
        job.batch_size = min(args.batch_size, max(1, -(-m // job.workers)))
    model = _model_of(job.spec)
    nominal = [nominal_value(model, p) for p in params]
    drift = float(args.drift)
    what = (f"{len(points)} grid cells ({d['grid']} per parameter, {d['mesh']} mesh)"
            if d["design"] == "grid" else f"{len(points)} random points")
    print(f"certrl: stress-testing {args.policy} on {job.spec.gym_id}: "
          f"{', '.join(f'{p.name}=[{p.low:g}, {p.high:g}]' for p in params)} "
          f"({'absolute' if params[0].absolute else 'scale factors'}), {what} + nominal, "
          f"{m} episodes each, seed {job.seed}, {job.workers} worker(s)"
          f"{f', drift {drift:g}/step' if drift else ''}", file=sys.stderr)

    t0 = time.perf_counter()
    runs, steps, resumed, used = _run_points(job, params, [None, *points], drift, m,
                                             pool_points)
    seconds = time.perf_counter() - t0
    nominal_runs, cell_runs = runs[0], runs[1:]
    cell_returns = [returns_array(r) for r in cell_runs]
    agg = summarize_cells(cell_returns, seed=job.seed)
    nom_rets = returns_array(nominal_runs)
    nom_summary = returns_summary(nom_rets, seed=job.seed)

    def named(values: Sequence[float]) -> dict[str, float]:
        return {p.name: float(v) for p, v in zip(params, values, strict=True)}

    cells = []
    for values, res, rets in zip(points, cell_runs, cell_returns, strict=True):
        cell: dict[str, Any] = {
            "values": named(values),
            "returns": rets.tolist(),
            "lengths": [r.length for r in res],
            "terminated": int(sum(r.terminated for r in res)),
            **cell_summary(rets, seed=job.seed),
        }
        if drift:
            cell["dynamics_end"] = [r.extras.get("dynamics_end") for r in res]
        cells.append(cell)
    w = agg["worst_index"]
    worst = {
        "index": w,
        "values": named(points[w]),
        **agg["worst_case"],
        "cell_mean_ci": cells[w]["mean_ci"],
        "episodes": m,
        "drop_from_nominal": nom_summary["mean"] - agg["worst_case"]["mean"],
        "definition": "lowest mean return over the evaluated points; [lower, upper] is the "
                      "stratified-bootstrap percentile CI of min over points of the mean return",
    }
    grid = None
    if d["axes"] is not None:
        grid = heatmap(params, d["axes"], agg["means"], nominal)
    section = {
        "design": d["design"],
        "grid_size": d["grid"],
        "mesh": d["mesh"],
        "samples": d["samples"],
        "uncertainty_set": None if d["uset"] is None else d["uset"].to_json(),
        "params": [{**p.to_json(), "nominal": nv} for p, nv in zip(params, nominal,
                                                                   strict=True)],
        "drift": drift,
        "episodes": m,
        "seed": job.seed,
        "deterministic": job.deterministic,
        "engine": job.engine,
        "nominal": {"returns": nom_rets.tolist(), "lengths": [r.length for r in nominal_runs],
                    "summary": nom_summary},
        "cells": cells,
        "worst_case": worst,
        "average": {**agg["average"], "points": len(points)},
        "grid": grid,
        "throughput": {"steps": steps, "seconds": round(seconds, 3),
                       "steps_per_second": round(steps / seconds, 1) if seconds > 0 else 0.0,
                       "workers": used, "resumed_episodes": resumed},
    }
    update_results(job.results_file, command=_command_line(argv), env=job.spec.to_json(),
                   policy=_policy_json(job, args.policy), sections={SECTION: section})
    finish_journal(job, SECTION)
    finish_journal(job, NOMINAL_SECTION)
    _print_report(job, section, params)
    print(f"results: {job.results_file}")
    return EXIT_OK


# ---------------------------------------------------------------------------- output
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
            print(f"{a:>{max(len(corner), 12)}g}" + "".join(f"{_fmt(x):>{wid}}" for x in row))
    else:
        if len(cells) <= 20:  # every point, in grid / sampling order
            shown, more = list(range(len(cells))), ""
        else:
            shown = sorted(range(len(cells)), key=lambda i: cells[i]["mean"])[:20]
            more = f" (the 20 worst of {len(cells)})"
        print(f"mean return per point{more} ({units}; {sec['episodes']} episodes each):")
        for i in shown:
            c = cells[i]
            print(f"  {_fmt(c['mean']):>10}  95% CI [{_fmt(c['mean_ci'][0])}, "
                  f"{_fmt(c['mean_ci'][1])}]  {_vals(c['values'])}")
    wc, av = sec["worst_case"], sec["average"]
    print(f"worst case: {_fmt(wc['mean'])} (95% CI {_fmt(wc['lower'])} .. {_fmt(wc['upper'])}) "
          f"at {_vals(wc['values'])}; {_fmt(wc['drop_from_nominal'])} below nominal")
    print(f"average over {av['points']} points: {_fmt(av['mean'])} (95% CI {_fmt(av['lower'])} "
          f".. {_fmt(av['upper'])})")
    if sec["drift"]:
        print(f"parameters drifted by up to {sec['drift']:g} x their range per step (TC-RMDP), "
              "starting from each point's values")
    print(f"gate: worst_case_return = {_fmt(wc['lower'])} (lower end of the worst case's 95% "
          "CI, stress.worst_case.lower)")
