"""Return of a policy under changed dynamics (the ``stress`` section; ``certrl stress`` and
:func:`certrl.dynamics`; issue 8).

What runs (the parameters, their units and the published RRLS sets are documented in
:mod:`certrl.dynamics`):

1. the *nominal* model, episodes ``0..m-1`` with no dynamics hook: exactly what ``certrl
   evaluate`` runs with the same seed (same returns, bit for bit);
2. every evaluated point — a grid cell (``grid`` values per parameter, cartesian product) or a
   point drawn uniformly from the box (``samples``) — the same episodes ``0..m-1`` with the
   model changed by :class:`certrl.dynamics.DynamicsHook` before every reset (and every step with
   ``drift``). Points differ only by the physics: common random numbers;
3. the worst case (lowest mean return over the points) and the average over the points with
   stratified-bootstrap 95% CIs (:func:`certrl.dynamics.summarize_cells`), and for a 2-D grid
   the heat map the report draws.

Results go to the ``stress`` section of the results file (:func:`save_stress`); each point is
journaled on its own (``<out>/.journal/<file>.stress.<key>.jsonl``, the key includes the
point's values), so a resumed job reruns only unfinished episodes of unfinished points.
Returns depend only on (seed, episode, point): not on the batch size, the workers or the order
points run in.

Parallelism: with at least as many points as workers, whole points are spread over the
worker processes (each runs its points' episodes in one lockstep batch); with fewer points,
points run one after the other and each spreads its episodes over the workers.

Keys for gates and reports: ``stress.worst_case.lower`` (lower end of the 95% CI of the
worst-case mean return; ``certrl gate --require "worst_case_return >= X"``),
``stress.worst_case.mean``, ``stress.average.{mean,lower,upper}``, ``stress.grid`` (heat map:
``params``, ``values1``, ``values2``, ``mean[i][j]``, ``nominal``).
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from certrl.dynamics import StressError
from certrl.errors import UsageError
from certrl.pipeline.job import returns_summary

if TYPE_CHECKING:
    from certrl.dynamics import ParamSpec, UncertaintySet
    from certrl.runner import Job

DEFAULT_GRID = 5
MAX_POINTS = 100_000
SECTION = "stress"
NOMINAL_SECTION = "stress-nominal"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


# ---------------------------------------------------------------------------- options
@dataclass
class StressOptions:
    """The dynamics design and the run's width (``certrl stress --help`` explains each).

    Exactly one of ``params`` (``"NAME=LO:HI,..."`` as on the command line, or
    :class:`~certrl.dynamics.ParamSpec` objects) and ``uncertainty_set`` (``"rrls"``,
    ``"rrls-1d"``, ...). ``grid=None``: :data:`DEFAULT_GRID` values per parameter (the set's own
    for an uncertainty set); ``mesh=None``: ``linspace`` (the set's own). ``workers`` and
    ``batch_size`` are the requested ones (``None``: all cores; the per-environment width):
    :func:`run_stress` sets ``job.workers`` / ``job.batch_size`` from them (whole points per
    process, or each point's episodes over the workers)."""

    params: str | Sequence[ParamSpec] | None = None
    uncertainty_set: str | None = None
    grid: int | None = None
    samples: int | None = None
    mesh: str | None = None
    drift: float = 0.0
    episodes: int = 20
    workers: int | None = None
    batch_size: int | None = None

    def validate(self) -> None:
        """Raise :class:`UsageError` for options that do not go together (what needs the
        environment's model, :func:`design_stress` checks)."""
        if (self.params is None) == (self.uncertainty_set is None):
            raise UsageError("give exactly one of --params NAME=LO:HI,... and --uncertainty-set "
                             "NAME (--list-params shows what the environment has)")
        if self.grid is not None and self.samples is not None:
            raise UsageError("--grid and --samples exclude each other: a grid or random points")


@dataclass
class StressDesign:
    """The evaluated points: parameters, points (one value per parameter), how they were
    chosen (``design``: ``"grid"`` or ``"samples"``) and, for a grid, its axes."""

    params: list[ParamSpec]
    points: list[tuple[float, ...]]
    design: str
    uset: UncertaintySet | None = None
    axes: list[list[float]] | None = None
    grid: int | None = None
    mesh: str | None = None
    samples: int | None = None


@dataclass
class StressOutcome:
    """What :func:`run_stress` computed: the ``stress`` section and its design."""

    section: dict[str, Any]
    design: StressDesign

    @property
    def params(self) -> list[ParamSpec]:
        return self.design.params


@dataclass
class ParamListing:
    """An environment's dynamics parameters (``certrl stress --list-params``): ``(name, kind,
    nominal absolute value or None when it varies per entry)`` rows and the published
    uncertainty sets by name."""

    gym_id: str
    params: list[tuple[str, str, float | None]]
    sets: dict[str, UncertaintySet]


# ---------------------------------------------------------------------------- the design
def model_of(spec: Any) -> Any:
    """The MuJoCo model of ``spec``'s environment (a :class:`StressError` if it has none)."""
    env = spec.make()
    try:
        model = getattr(env.unwrapped, "model", None)
    finally:
        env.close()
    if model is None or not hasattr(model, "body_mass"):
        raise StressError(f"{spec.gym_id} is not a MuJoCo environment (no env.model): dynamics "
                          "parameters need one, e.g. --env hopper")
    return model


def param_listing(spec: Any) -> ParamListing:
    """The dynamics parameters of ``spec``'s environment, their nominal values and the
    published uncertainty sets (:class:`UsageError` for a non-MuJoCo environment)."""
    from certrl.dynamics import RRLS_SETS, ParamSpec, env_family, nominal_value, valid_param_names

    try:
        model = model_of(spec)
    except StressError as e:
        raise UsageError(str(e)) from None
    rows: list[tuple[str, str, float | None]] = []
    for name in valid_param_names(model):
        p = ParamSpec(name, 1.0, 1.0, absolute=True)
        rows.append((name, p.kind, nominal_value(model, p)))
    sets = RRLS_SETS.get(env_family(spec.gym_id)) or {}
    return ParamListing(spec.gym_id, rows, {k: sets[k] for k in sorted(sets)})


def design_stress(spec: Any, opts: StressOptions, seed: int) -> StressDesign:
    """Parameters and points of ``opts`` on ``spec``'s environment (``seed``: the job's, which
    draws the ``samples`` points). Bad input raises :class:`UsageError`."""
    try:
        return _design(spec, opts, seed)
    except StressError as e:
        raise UsageError(str(e)) from None


def _design(spec: Any, opts: StressOptions, seed: int) -> StressDesign:
    from certrl.dynamics import (
        check_params,
        grid_cells,
        parse_params,
        sample_points,
        uncertainty_set,
    )

    opts.validate()
    uset = None
    if opts.uncertainty_set is not None:
        model_of(spec)  # a non-MuJoCo environment gets that error first
        uset = uncertainty_set(spec.gym_id, opts.uncertainty_set)
        params = list(uset.params)
    elif isinstance(opts.params, str):
        params = parse_params(opts.params)
    else:
        params = list(opts.params or [])
    check_params(model_of(spec), params)
    if not (math.isfinite(opts.drift) and 0 <= opts.drift <= 1):
        raise StressError(f"--drift must be in [0, 1] (a fraction of each range per step), "
                          f"got {opts.drift}")
    if opts.samples is not None:
        points = sample_points(params, opts.samples, seed)
        return StressDesign(params=params, points=points, design="samples", uset=uset,
                            samples=opts.samples)
    k = opts.grid if opts.grid is not None else (uset.grid if uset else DEFAULT_GRID)
    mesh = opts.mesh or (uset.mesh if uset else "linspace")
    axes, cells = grid_cells(params, k, mesh)
    if len(cells) > MAX_POINTS:
        raise StressError(f"{len(cells):,} grid cells (> {MAX_POINTS:,}): use a smaller --grid "
                          "or --samples N")
    return StressDesign(params=params, points=cells, design="grid", uset=uset, axes=axes,
                        grid=k, mesh=mesh)


# ---------------------------------------------------------------------------- running points
_WORKER: dict[str, Any] = {}


def _run_point(job: Any, params: list[Any], values: tuple[float, ...] | None, drift: float,
               episodes: int, desc: str) -> tuple[list[Any], Any]:
    """Episodes ``0..episodes-1`` at one point (``values=None``: the nominal model, no hook)."""
    from certrl.dynamics import DynamicsHook
    from certrl.runner import run_section

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




# ---------------------------------------------------------------------------- the job
def run_stress(job: Job, opts: StressOptions, log: Callable[[str], None] = _stderr,
               design: StressDesign | None = None) -> StressOutcome:
    """Run the nominal model and every point of the design, ``opts.episodes`` episodes each
    (the same episode seeds everywhere), and summarize the returns over the points.

    What it computes: per point the returns and their summary; the worst case (lowest mean
    return over the evaluated points) with the stratified-bootstrap 95% percentile CI of the
    minimum over points of the mean return, and the average over the points with its CI; for
    a 2-D grid the heat map. No guarantee beyond the evaluated points: the worst case is over
    the grid / samples, not over the whole box (a worse model may lie between points), and the
    CIs are over episodes at those points.

    ``design``: from :func:`design_stress` (computed here from ``job.spec`` and ``job.seed``
    when ``None``). Sets ``job.workers`` and ``job.batch_size`` from ``opts`` (whole points per
    process when there are at least as many points as workers). Bad input raises
    :class:`UsageError`.
    """
    try:
        return _run_stress(job, opts, log, design)
    except StressError as e:
        raise UsageError(str(e)) from None


def _run_stress(job: Job, opts: StressOptions, log: Callable[[str], None],
                design: StressDesign | None) -> StressOutcome:
    from certrl.backends import default_workers
    from certrl.dynamics import cell_summary, heatmap, nominal_value, summarize_cells
    from certrl.engines import default_batch_size
    from certrl.runner import returns_array

    d = design if design is not None else _design(job.spec, opts, job.seed)
    params, points = d.params, d.points
    batch_size = (opts.batch_size if opts.batch_size is not None
                  # every slot holds its own (perturbed) environment
                  else default_batch_size(job.engine, job.spec, env_hooks=True))
    m = opts.episodes
    workers = max(1, opts.workers or default_workers())
    pool_points = workers > 1 and len(points) + 1 >= workers
    if pool_points:  # whole points per process: one lockstep batch per point
        job.workers, job.batch_size = workers, min(batch_size, m)
    else:  # points in turn, each point's episodes over the workers (as certrl evaluate)
        job.workers = min(workers, m)
        job.batch_size = min(batch_size, max(1, -(-m // job.workers)))
    model = model_of(job.spec)
    nominal = [nominal_value(model, p) for p in params]
    drift = float(opts.drift)
    what = (f"{len(points)} grid cells ({d.grid} per parameter, {d.mesh} mesh)"
            if d.design == "grid" else f"{len(points)} random points")
    log(f"certrl: stress-testing {job.label} on {job.spec.gym_id}: "
        f"{', '.join(f'{p.name}=[{p.low:g}, {p.high:g}]' for p in params)} "
        f"({'absolute' if params[0].absolute else 'scale factors'}), {what} + nominal, "
        f"{m} episodes each, seed {job.seed}, {job.workers} worker(s)"
        f"{f', drift {drift:g}/step' if drift else ''}")

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
    if d.axes is not None:
        grid = heatmap(params, d.axes, agg["means"], nominal)
    section = {
        "design": d.design,
        "grid_size": d.grid,
        "mesh": d.mesh,
        "samples": d.samples,
        "uncertainty_set": None if d.uset is None else d.uset.to_json(),
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
    return StressOutcome(section=section, design=d)


def save_stress(job: Job, outcome: StressOutcome, command: str) -> dict[str, Any]:
    """Write the ``stress`` section into the job's results file and remove the finished
    journals (the points' and the nominal run's); returns the file's content."""
    from certrl.pipeline.job import write_results
    from certrl.runner import finish_journal

    data = write_results(job, command, {SECTION: outcome.section})
    finish_journal(job, SECTION)
    finish_journal(job, NOMINAL_SECTION)
    return data
