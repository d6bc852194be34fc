"""The ``certrl`` command line.

Every command: bad input -> one line on stderr saying what is wrong and what to do, exit code
2, no traceback unless ``--debug``; an unexpected failure -> exit code 3; Ctrl-C -> finished
episodes are kept in the journal, ``--resume`` continues (exit code 130).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """Bad command-line input (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# ---------------------------------------------------------------------------- shared options
def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("policy", help="policy file (SB3 .zip, CleanRL .pt, TorchScript, certrl "
                   "bundle .json/.safetensors) or demo:NAME (demo:hopper, demo:cartpole, ...)")
    p.add_argument("--env", required=True, help="environment alias or Gymnasium id "
                   "(`certrl envs` lists them)")
    p.add_argument("--env-kwargs", default="", metavar="JSON",
                   help="keyword arguments for gymnasium.make, as a JSON object")
    p.add_argument("--vecnormalize", metavar="PKL", help="SB3 VecNormalize statistics "
                   "(default: vecnormalize.pkl beside an SB3 .zip, if present)")
    p.add_argument("--obs-stats", metavar="NPZ", help="observation mean/var (.npz with keys "
                   "mean, var[, clip, epsilon]) for formats that do not store them (CleanRL)")
    p.add_argument("--format", dest="fmt", choices=["sb3", "cleanrl", "torchscript", "bundle",
                   "pickle"], help="force the policy format (default: detected from content)")
    p.add_argument("--unsafe-pickle", action="store_true", help="allow loading a whole pickled "
                   "nn.Module (runs code from the file: only for files you trust)")


def _add_threat_args(p: argparse.ArgumentParser) -> None:
    """``--eps/--norm/--space``: the per-step observation threat (attack, bound)."""
    p.add_argument("--eps", type=float, default=None,
                   help="per-step budget (default: the environment's published budget, e.g. "
                   "Hopper 0.075, l_inf on normalized observations)")
    p.add_argument("--norm", choices=["linf", "l2"], default="linf",
                   help="per-step norm of the observation perturbation (default linf)")
    p.add_argument("--space", choices=["auto", "normalized", "raw"], default="auto",
                   help="where eps is measured (default: normalized when the policy has "
                   "normalization statistics, else raw)")


def _add_run_args(p: argparse.ArgumentParser, episodes: int) -> None:
    p.add_argument("--episodes", type=int, default=episodes, help=f"episodes (default {episodes})")
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0): episode i "
                   "always gets the same environment seed and noise streams")
    p.add_argument("--workers", type=int, default=None,
                   help="local worker processes (default: all cores)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="lockstep environments per worker (default 512 on the mujoco engine, "
                   "128 on gym); results do not depend on it")
    p.add_argument("--engine", default="auto", choices=["auto", "gym", "mujoco"],
                   help="simulation engine: gym (gymnasium.make), mujoco (raw MjData on a thread "
                   "pool, bit-identical to gym where supported), auto (fastest exact one)")
    p.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="where episodes run: local worker processes (default) or a Ray cluster "
                   "(results are identical)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to join with --backend ray (host:port or 'auto'; default: "
                   "start a local Ray instance)")
    p.add_argument("--stochastic", action="store_true",
                   help="sample actions from the policy distribution (default: deterministic)")
    p.add_argument("--out", default="results", metavar="DIR",
                   help="directory of the results file (default results/)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run: reuse the finished episodes of the same "
                   "configuration from the journal in --out")
    p.add_argument("--reward-bounds", metavar="LO,HI",
                   help="per-step reward bounds used for the certified (clipped) return; "
                   "overrides the environment's documented bounds")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="force the progress bar (default: on a TTY, off in CI)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


# ---------------------------------------------------------------------------- helpers
def _positive(name: str, v: int | float, allow_zero: bool = False) -> None:
    if v < 0 or (v == 0 and not allow_zero):
        raise UsageError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v}")


def build_job(args: argparse.Namespace):  # -> runner.Job
    from certrl.backends import PolicyRef, default_workers
    from certrl.envs import resolve_env, with_reward_bounds
    from certrl.evaluator import default_batch_size
    from certrl.policies import load_policy, validate_spaces
    from certrl.results import ensure_writable_dir, results_path
    from certrl.runner import Job

    _positive("--episodes", args.episodes)
    if args.batch_size is not None:
        _positive("--batch-size", args.batch_size)
    if args.workers is not None:
        _positive("--workers", args.workers)
    spec = resolve_env(args.env, args.env_kwargs)
    if args.reward_bounds:
        try:
            lo, hi = (float(v) for v in args.reward_bounds.split(","))
        except ValueError:
            raise UsageError(f"--reward-bounds {args.reward_bounds!r}: expected LO,HI") from None
        spec = with_reward_bounds(spec, lo, hi)
    out = ensure_writable_dir(args.out)
    loader_kwargs: dict[str, Any] = {
        "vecnormalize": args.vecnormalize,
        "obs_stats": args.obs_stats,
        "unsafe_pickle": args.unsafe_pickle,
        "fmt": args.fmt,
    }
    policy = load_policy(args.policy, **loader_kwargs)
    env = spec.make()
    try:
        policy = validate_spaces(policy, env.observation_space, env.action_space, spec.gym_id)
    finally:
        env.close()
    _check_engine(args.engine, spec)
    backend = getattr(args, "backend", "local")
    address = getattr(args, "ray_address", None)
    if address and backend != "ray":
        raise UsageError("--ray-address needs --backend ray")
    workers = args.workers or (_ray_cpus(address) if backend == "ray" else default_workers())
    workers = max(1, min(workers, args.episodes))
    if args.batch_size is None:
        args.batch_size = default_batch_size(args.engine, spec)
    return Job(
        policy=policy,
        spec=spec,
        results_file=results_path(out, spec.gym_id, args.policy),
        ref=PolicyRef(args.policy, loader_kwargs, spec.gym_id),
        seed=args.seed,
        batch_size=min(args.batch_size, max(1, -(-args.episodes // workers))),
        workers=workers,
        deterministic=not args.stochastic,
        progress=args.progress,
        resume=args.resume,
        engine=args.engine,
        backend=backend,
        ray_address=address,
    )


def _check_engine(engine: str, spec: Any) -> None:
    """``--engine mujoco`` on an environment it does not reproduce: a usage error."""
    if engine in ("auto", "gym"):
        return
    import certrl.engines  # noqa: F401 - registers the fast engines
    from certrl.evaluator import ENGINES

    cls = ENGINES.get(engine)
    if cls is None or not cls.supports(spec):
        raise UsageError(f"--engine {engine} does not support {spec.gym_id} with these "
                         "--env-kwargs; use --engine auto or gym")


def _ray_cpus(address: str | None) -> int:
    """Start or join Ray (``--backend ray``) and return its CPUs: the default --workers."""
    from certrl.backends_ray import RayUnavailableError, import_ray, init_ray

    try:
        init_ray(address)
        return int(import_ray().cluster_resources().get("CPU", 1)) or 1
    except RayUnavailableError as e:
        raise UsageError(str(e)) from None


def _policy_json(job: Any, spec_str: str) -> dict[str, Any]:
    info = job.policy.info
    return {
        "spec": spec_str,
        "path": info.path,
        "sha256": info.sha256,
        "format": info.format,
        "algorithm": info.algorithm,
        "summary": job.policy.describe(),
    }


def _command_line(argv: Sequence[str] | None) -> str:
    args = argv if argv is not None else sys.argv[1:]
    return "certrl " + " ".join(shlex.quote(a) for a in args)


def _fmt(x: float) -> str:
    return f"{x:,.1f}" if abs(x) >= 100 else f"{x:.3f}"


def returns_summary(returns: Any, seed: int) -> dict[str, Any]:
    """Mean ± std, IQM and their 95% stratified-bootstrap (percentile) CIs of one sample."""
    import warnings

    import numpy as np

    from certrl.stats import summarize_returns

    r = np.asarray(returns, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fewer than 5 runs": the CI is degenerate, shown as such
        s = summarize_returns(r, seed=seed)
    m, q = s["mean"], s["iqm"]
    return {
        "n": int(r.size),
        "mean": m.point,
        "std": float(r.std(ddof=1)) if r.size > 1 else 0.0,
        "mean_ci": [m.low, m.high],
        "iqm": q.point,
        "iqm_ci": [q.low, q.high],
        "min": float(r.min()),
        "max": float(r.max()),
        "ci": {"confidence_level": m.confidence_level, "method": m.method},
    }


def evaluation_section(job: Any, results: list, stats: Any) -> dict[str, Any]:
    from certrl.runner import returns_array

    rets = returns_array(results)
    return {
        "seed": job.seed,
        "episodes": len(results),
        "deterministic": job.deterministic,
        "batch_size": job.batch_size,
        "workers": stats.workers,
        "returns": rets.tolist(),
        "lengths": [r.length for r in results],
        "terminated": [r.terminated for r in results],
        "clipped_returns": [r.clipped_return for r in results],
        "clipped_steps": int(sum(r.clipped_steps for r in results)),
        "summary": returns_summary(rets, seed=job.seed),
        "throughput": {
            "steps": stats.steps,
            "seconds": round(stats.seconds, 3),
            "steps_per_second": round(stats.steps_per_second, 1),
            "retries": stats.retries,
            "resumed_episodes": getattr(stats, "resumed", 0),
        },
    }


def print_summary(label: str, s: dict[str, Any], file: Any = None) -> None:
    print(
        f"{label}: mean {_fmt(s['mean'])} ± {_fmt(s['std'])} (95% CI {_fmt(s['mean_ci'][0])} .. "
        f"{_fmt(s['mean_ci'][1])}), IQM {_fmt(s['iqm'])} (95% CI {_fmt(s['iqm_ci'][0])} .. "
        f"{_fmt(s['iqm_ci'][1])}), n={s['n']}",
        file=file or sys.stdout,
    )


# ---------------------------------------------------------------------------- commands
def cmd_evaluate(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.results import update_results
    from certrl.runner import finish_journal, run_section

    job = build_job(args)
    mode = "deterministic" if job.deterministic else "stochastic"
    print(
        f"certrl: evaluating {args.policy} ({job.policy.info.format}) on {job.spec.gym_id}, "
        f"{args.episodes} episodes, seed {job.seed}, {mode}, {job.workers} worker(s)",
        file=sys.stderr,
    )
    results, stats = run_section(job, "evaluation", args.episodes, desc="evaluate")
    section = evaluation_section(job, results, stats)
    data = update_results(
        job.results_file,
        command=_command_line(argv),
        env=job.spec.to_json(),
        policy=_policy_json(job, args.policy),
        sections={"evaluation": section},
    )
    finish_journal(job, "evaluation")
    print_summary(f"{job.spec.gym_id} return", data["evaluation"]["summary"])
    tp = section["throughput"]
    extra = f", {tp['resumed_episodes']} resumed" if tp["resumed_episodes"] else ""
    print(f"{tp['steps']:,} steps in {tp['seconds']:.1f} s ({tp['steps_per_second']:,.0f} steps/s"
          f"{extra})")
    if section["clipped_steps"]:
        print(f"note: {section['clipped_steps']} steps had rewards outside the certified bounds "
              f"{job.spec.step_reward_bounds} (clipped in the certified return)")
    print(f"results: {job.results_file}")
    return EXIT_OK


def cmd_envs(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.envs import env_table

    rows = env_table()
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    head = f"{'alias':<24}{'id':<27}{'obs':>5}  {'action':<12}{'horizon':>8}  " \
           f"{'return bounds':<22}{'bounds':<7}{'eps':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        a, b = r["return_bounds"]
        eps = "-" if r["default_eps"] is None else f"{r['default_eps']:g}"
        print(f"{r['alias']:<24}{r['id']:<27}{r['obs_dim'] or '?':>5}  {r['action']:<12}"
              f"{r['horizon']:>8}  {f'[{a:g}, {b:g}]':<22}{r['bounds_kind']:<7}{eps:>7}")
    print("\nAny registered Gymnasium id is accepted too (pass --env-kwargs as JSON). "
          "eps: default attack budget, l_inf on normalized observations (SA-PPO/ATLA).")
    return EXIT_OK


def cmd_policy_info(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.envs import resolve_env
    from certrl.policies import load_policy, policy_summary, validate_spaces

    policy = load_policy(args.policy, vecnormalize=args.vecnormalize, obs_stats=args.obs_stats,
                         unsafe_pickle=args.unsafe_pickle, fmt=args.fmt)
    if args.env:
        spec = resolve_env(args.env, args.env_kwargs)
        env = spec.make()
        try:
            policy = validate_spaces(policy, env.observation_space, env.action_space, spec.gym_id)
        finally:
            env.close()
    summary = policy_summary(policy)
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
        return EXIT_OK
    for k, v in summary.items():
        if isinstance(v, (list, dict)) and len(str(v)) > 80:
            v = f"{type(v).__name__} of {len(v)}"
        print(f"{k:>14}: {v}")
    if args.env:
        print(f"{'compatible':>14}: yes ({args.env})")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from certrl import __version__

    parser = _Parser(prog="certrl", description="Certified robustness evaluation for RL "
                     "policies: attacks, certificates, statistics, reports.")
    parser.add_argument("--version", action="version", version=f"certrl {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("evaluate", help="clean return of a policy (mean, IQM, bootstrap CI)")
    _add_policy_args(p)
    _add_run_args(p, episodes=100)
    _add_common(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("envs", help="supported environments and their metadata")
    p.add_argument("--json", action="store_true")
    _add_common(p)
    p.set_defaults(handler=cmd_envs)

    p = sub.add_parser("policy-info", help="what a policy file contains")
    p.add_argument("policy")
    p.add_argument("--env", help="also check compatibility with this environment")
    p.add_argument("--env-kwargs", default="")
    p.add_argument("--vecnormalize")
    p.add_argument("--obs-stats")
    p.add_argument("--format", dest="fmt", choices=["sb3", "cleanrl", "torchscript", "bundle",
                   "pickle"])
    p.add_argument("--unsafe-pickle", action="store_true")
    p.add_argument("--json", action="store_true")
    _add_common(p)
    p.set_defaults(handler=cmd_policy_info)

    for register in _command_modules():
        register(sub)
    return parser


def _command_modules() -> list[Callable[[Any], None]]:
    """``register(subparsers)`` of the commands that live in their own modules."""
    from certrl.commands import attack, bound, certify, compare, gate, report, stress

    return [certify.register, attack.register, bound.register, report.register,
            compare.register, gate.register, stress.register]


def _expected_errors() -> tuple[type[BaseException], ...]:
    from certrl.envs import EnvError
    from certrl.evaluator import EvaluationError
    from certrl.policies.base import PolicyError
    from certrl.results import ResultsError

    return (UsageError, PolicyError, EnvError, ResultsError, EvaluationError)


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(argv) if argv is not None else sys.argv[1:]
    debug = "--debug" in raw
    try:
        parser = build_parser()
        args = parser.parse_args(raw)
        if not args.command:
            parser.print_help()
            return EXIT_USAGE
        return int(args.handler(args, raw))
    except KeyboardInterrupt:
        print("\ncertrl: interrupted; finished episodes are saved — run the same command with "
              "--resume to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as e:  # --help / --version
        return int(e.code or 0)
    except BrokenPipeError:  # `certrl envs | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception as e:
        if debug:
            raise
        from certrl.backends import WorkerError

        if isinstance(e, WorkerError) and e.kind in {c.__name__ for c in _expected_errors()}:
            print(f"certrl: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(e, _expected_errors()):
            print(f"certrl: error: {e}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(e, OSError):
            print(f"certrl: error: {e.strerror or e} ({e.filename or ''}); check the path and "
                  "permissions", file=sys.stderr)
            return EXIT_USAGE
        print(f"certrl: internal error: {type(e).__name__}: {e} (run with --debug for the "
              "traceback, and please report it)", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
