"""What every command shares: exit codes, the argument groups, the job built from them, and the
printing helpers. Commands import this (never :mod:`certrl.cli`, which imports the commands)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from certrl.errors import UsageError

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3
EXIT_INTERRUPTED = 130

#: Values of ``--format``.
FORMAT_CHOICES = ["sb3", "zoo", "cleanrl", "torchscript", "onnx", "bundle", "pickle"]


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one-line :class:`UsageError` (exit code 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def add_env_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--env", required=required, help="environment: an alias or Gymnasium id "
                   "(`certrl envs` lists the documented ones), package.module:ClassOrFactory "
                   "for your own environment, or package.module:EnvId-v0")
    p.add_argument("--env-kwargs", default="", metavar="JSON",
                   help="keyword arguments of the environment (gymnasium.make or your class), "
                   "as a JSON object; max_episode_steps sets the horizon")


def add_loader_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vecnormalize", metavar="PKL", help="SB3 VecNormalize statistics "
                   "(default: vecnormalize.pkl beside an SB3 .zip or in an RL Zoo folder)")
    p.add_argument("--obs-stats", metavar="NPZ", help="observation mean/var (.npz with keys "
                   "mean, var[, clip, epsilon]) for formats that do not store them (CleanRL, "
                   "TorchScript, ONNX)")
    p.add_argument("--format", dest="fmt", choices=FORMAT_CHOICES,
                   help="force the policy format (default: detected from content)")
    p.add_argument("--unsafe-pickle", action="store_true", help="allow loading a whole pickled "
                   "nn.Module (runs code from the file: only for files you trust)")


def add_policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("policy", help="policy: SB3 .zip, RL Zoo / Hugging Face run folder, ONNX "
                   "graph, CleanRL .pt, TorchScript, certrl bundle .json/.safetensors, or "
                   "demo:NAME (demo:hopper, demo:cartpole, ...)")
    add_env_args(p)
    add_loader_args(p)


def add_threat_args(p: argparse.ArgumentParser) -> None:
    """``--eps/--norm/--space``: the per-step observation threat (attack, bound)."""
    p.add_argument("--eps", type=float, default=None,
                   help="per-step budget (default: the environment's published budget, e.g. "
                   "Hopper 0.075, l_inf on normalized observations)")
    p.add_argument("--norm", choices=["linf", "l2"], default="linf",
                   help="per-step norm of the observation perturbation (default linf)")
    p.add_argument("--space", choices=["auto", "normalized", "raw"], default="auto",
                   help="where eps is measured (default: normalized when the policy has "
                   "normalization statistics, else raw)")


def add_run_args(p: argparse.ArgumentParser, episodes: int) -> None:
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
                   "overrides the environment's documented bounds (needed for certificates on "
                   "environments without documented bounds)")
    p.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="force the progress bar (default: on a TTY, off in CI)")
    p.add_argument("--no-progress", dest="progress", action="store_false")


def loader_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"vecnormalize": args.vecnormalize, "obs_stats": args.obs_stats,
            "unsafe_pickle": args.unsafe_pickle, "fmt": args.fmt}


def job_from_args(args: argparse.Namespace) -> Any:  # -> certrl.runner.Job
    """The :class:`~certrl.runner.Job` of the policy, environment and run arguments."""
    from certrl.pipeline.job import build_job

    return build_job(
        args.policy, args.env, episodes=args.episodes, env_kwargs=args.env_kwargs,
        reward_bounds=args.reward_bounds, **loader_kwargs(args), seed=args.seed,
        workers=args.workers, batch_size=args.batch_size, engine=args.engine,
        backend=getattr(args, "backend", "local"), ray_address=getattr(args, "ray_address", None),
        deterministic=not args.stochastic, progress=args.progress, out=args.out,
        resume=args.resume,
    )


def command_line(argv: Sequence[str] | None) -> str:
    """The command as typed (stored in the results file)."""
    args = argv if argv is not None else sys.argv[1:]
    return "certrl " + " ".join(shlex.quote(a) for a in args)


def fmt(x: float) -> str:
    return f"{x:,.1f}" if abs(x) >= 100 else f"{x:.3f}"


def floats(text: str, name: str) -> list[float]:
    """``"0,0.05,0.1"`` -> ``[0.0, 0.05, 0.1]`` (a :class:`UsageError` otherwise)."""
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{name} {text!r}: expected comma-separated numbers") from None
    if not vals:
        raise UsageError(f"{name} is empty")
    return vals


def print_summary(label: str, s: dict[str, Any], file: Any = None) -> None:
    print(
        f"{label}: mean {fmt(s['mean'])} ± {fmt(s['std'])} (95% CI {fmt(s['mean_ci'][0])} .. "
        f"{fmt(s['mean_ci'][1])}), IQM {fmt(s['iqm'])} (95% CI {fmt(s['iqm_ci'][0])} .. "
        f"{fmt(s['iqm_ci'][1])}), n={s['n']}",
        file=file or sys.stdout,
    )
