"""The ``certrl`` command line.

Every command: bad input -> one line on stderr saying what is wrong and what to do, exit code
2, no traceback unless ``--debug``; an unexpected failure -> exit code 3; Ctrl-C -> finished
episodes are kept in the journal, ``--resume`` continues (exit code 130).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from certrl.commands.options import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    EXIT_USAGE,
    Parser,
    add_common,
    add_env_args,
    add_loader_args,
    add_policy_args,
    add_run_args,
    command_line,
    job_from_args,
    print_summary,
)
from certrl.errors import UsageError

__all__ = ["UsageError", "build_parser", "main"]


# ---------------------------------------------------------------------------- commands
def cmd_evaluate(args: Any, argv: Sequence[str] | None) -> int:
    from certrl.pipeline.job import run_evaluation, write_results
    from certrl.runner import finish_journal

    job = job_from_args(args)
    mode = "deterministic" if job.deterministic else "stochastic"
    print(
        f"certrl: evaluating {args.policy} ({job.policy.info.format}) on {job.spec.gym_id}, "
        f"{args.episodes} episodes, seed {job.seed}, {mode}, {job.workers} worker(s)",
        file=sys.stderr,
    )
    section = run_evaluation(job, args.episodes)
    data = write_results(job, command_line(argv), {"evaluation": section})
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


def cmd_envs(args: Any, argv: Sequence[str] | None) -> int:
    from certrl.envs import env_table

    rows = env_table()
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    head = f"{'alias':<24}{'id':<27}{'obs':>8}  {'action':<12}{'horizon':>8}  " \
           f"{'return bounds':<22}{'bounds':<7}{'eps':>7}"
    print(head)
    print("-" * len(head))
    for r in rows:
        a, b = r["return_bounds"]
        eps = "-" if r["default_eps"] is None else f"{r['default_eps']:g}"
        if r["default_eps"] is not None and abs(r["default_eps"] * 255 - 1) < 1e-9:
            eps = "1/255"
        obs = "x".join(map(str, r["obs_shape"])) if r.get("obs_shape") else r["obs_dim"] or "?"
        print(f"{r['alias']:<24}{r['id']:<27}{obs:>8}  {r['action']:<12}"
              f"{r['horizon']:>8}  {f'[{a:g}, {b:g}]':<22}{r['bounds_kind']:<7}{eps:>7}")
    print("\nAny registered Gymnasium id is accepted too (pass --env-kwargs as JSON). "
          "eps: default attack budget, l_inf on normalized observations (SA-PPO/ATLA; Atari: "
          "[0, 1] pixels, SA-DQN).")
    return EXIT_OK


def cmd_policy_info(args: Any, argv: Sequence[str] | None) -> int:
    from certrl.commands.options import loader_kwargs
    from certrl.pipeline.job import load_for_env, resolve_job_env, zoo_env_kwargs
    from certrl.policies import load_policy, policy_summary

    if args.env:
        spec = resolve_job_env(args.env, args.env_kwargs or zoo_env_kwargs(args.policy))
        policy = load_for_env(args.policy, spec, loader_kwargs(args))
    else:
        policy = load_policy(args.policy, **loader_kwargs(args))
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
    from certrl._version import __version__

    parser = Parser(prog="certrl", description="Certified robustness evaluation for RL "
                     "policies: attacks, certificates, statistics, reports.")
    parser.add_argument("--version", action="version", version=f"certrl {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")

    p = sub.add_parser("evaluate", help="clean return of a policy (mean, IQM, bootstrap CI)")
    add_policy_args(p)
    add_run_args(p, episodes=100)
    add_common(p)
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("envs", help="supported environments and their metadata")
    p.add_argument("--json", action="store_true")
    add_common(p)
    p.set_defaults(handler=cmd_envs)

    p = sub.add_parser("policy-info", help="what a policy file contains")
    p.add_argument("policy", help="policy file or folder, or demo:NAME")
    add_env_args(p, required=False)
    add_loader_args(p)
    p.add_argument("--json", action="store_true")
    add_common(p)
    p.set_defaults(handler=cmd_policy_info)

    for register in _command_modules():
        register(sub)
    return parser


def _command_modules() -> list[Callable[[Any], None]]:
    """``register(subparsers)`` of the commands that live in their own modules."""
    from certrl.commands import attack, bound, certify, compare, diagnose, gate, report, stress

    return [certify.register, attack.register, bound.register, diagnose.register,
            report.register, compare.register, gate.register, stress.register]


def _expected_errors() -> tuple[type[BaseException], ...]:
    from certrl.envs import EnvError
    from certrl.errors import EvaluationError
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
