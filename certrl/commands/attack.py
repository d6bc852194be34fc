"""``certrl attack``: argument parsing and printing over :mod:`certrl.pipeline.attack`
(empirical worst cases of a policy under observation or action attacks; see there for the
pipeline, the threat models, the normalized-space sanity rule and how results merge)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from certrl.commands.options import (
    EXIT_OK,
    EXIT_RUNTIME,
    add_common,
    add_policy_args,
    add_run_args,
    add_threat_args,
    command_line,
    fmt,
    job_from_args,
)
from certrl.errors import UsageError
from certrl.pipeline.attack import (
    ALPHA_ONLY,
    MAX_NORMALIZED_LINF,
    SECTION,
    AttackOptions,
    _hook_options,
    check_budget,
    load_registry,
    paired_drop,
    parse_opts,
    run_attack,
    save_attack,
    select_attacks,
)

__all__ = [
    "ALPHA_ONLY", "MAX_NORMALIZED_LINF", "SECTION", "_hook_options", "check_budget",
    "cmd_attack", "load_registry", "options_from_args", "paired_drop", "parse_opts",
    "print_table", "register", "select_attacks",
]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "attack",
        help="return under observation / action attacks (table + strongest attack)",
        description="Empirical robustness: run attacks (random, FGSM/PGD, MAD, critic / Robust "
        "Sarsa, learned adversaries, action attacks) on the same episode seeds as a clean run.",
    )
    add_policy_args(p)
    add_run_args(p, episodes=50)
    p.add_argument("--attack", required=True, metavar="NAME[,NAME...]|all|all-action",
                   help="attacks to run: registered names (e.g. pgd,mad,rs), all (every "
                   "observation attack) or all-action (every action attack)")
    add_threat_args(p)
    p.add_argument("--episode-budget", type=float, default=None, metavar="B",
                   help="total l2 budget over the episode, sqrt(sum_t ||delta_t||^2) <= B")
    p.add_argument("--eps-bar", type=float, default=None,
                   help="temporal coupling (GRAD): ||delta_t - delta_(t-1)|| <= eps_bar")
    p.add_argument("--alpha", type=float, default=None,
                   help="action attacks: PR/NR-MDP probability / mixing weight (e.g. 0.1)")
    p.add_argument("--opt", action="append", metavar="[ATTACK:]KEY=VALUE",
                   help="attack option (repeatable); ATTACK: restricts it to one attack, e.g. "
                   "--opt pgd:steps=20 --opt optimal:train_steps=100000")
    p.add_argument("--smoothing-sigma", type=float, default=None, metavar="SIGMA",
                   help="attack the smoothed policy (Gaussian noise SIGMA in --space units after "
                   "the attack); attacks that support it optimize the expectation over the noise")
    p.add_argument("--allow-large-eps", action="store_true",
                   help=f"accept normalized-space budgets above {MAX_NORMALIZED_LINF:g} (l_inf) "
                   f"or {MAX_NORMALIZED_LINF:g}*sqrt(obs_dim) (l2)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="trained critics / adversaries cache (default <out>/.cache; none "
                   "disables)")
    p.add_argument("--retrain", action="store_true",
                   help="learned attacks: train again even when the cache has them")
    add_common(p)
    p.set_defaults(handler=cmd_attack)



def options_from_args(args: argparse.Namespace) -> AttackOptions:
    """The :class:`AttackOptions` of the command line (``--attack`` resolved against the
    registry, ``--opt`` split per attack)."""
    names = select_attacks(args.attack, load_registry())
    return AttackOptions(
        attacks=names, options=parse_opts(args.opt, names), eps=args.eps, norm=args.norm,
        space=args.space, episode_budget=args.episode_budget, eps_bar=args.eps_bar,
        alpha=args.alpha, episodes=args.episodes, smoothing_sigma=args.smoothing_sigma,
        allow_large_eps=args.allow_large_eps, cache_dir=args.cache_dir, retrain=args.retrain,
    )


def _budget_violation(e: BaseException) -> int:
    print(f"certrl: error: budget violation (a bug in the attack, please report it): {e}",
          file=sys.stderr)
    return EXIT_RUNTIME


def cmd_attack(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.attacks.base import AttackError, BudgetViolation
    from certrl.backends import WorkerError

    try:
        opts = options_from_args(args)
        opts.validate()  # before loading anything
        job = job_from_args(args)
        out = run_attack(job, opts)
    except AttackError as e:
        raise UsageError(str(e)) from None
    except BudgetViolation as e:
        return _budget_violation(e)
    except WorkerError as e:
        if e.kind == "AttackError":
            raise UsageError(str(e)) from None
        if e.kind == "BudgetViolation":
            return _budget_violation(e)
        raise
    save_attack(job, out, command_line(argv))
    sec = out.section
    print_table(sec, job.spec.gym_id, list(sec["results"]))
    if out.kept:
        print(f"note: kept {len(out.kept)} earlier attack result(s) of the same configuration: "
              f"{', '.join(sorted(out.kept))}")
    if out.dropped:
        print(f"note: replaced {len(out.dropped)} earlier attack result(s) run with another "
              f"configuration: {', '.join(sorted(out.dropped))}")
    print(f"results: {job.results_file}")
    return EXIT_OK


def print_table(section: dict[str, Any], env_id: str, order: list[str],
                file: Any = None) -> None:
    """The attack table: clean first, then attacks from strongest to weakest."""
    out = file or sys.stdout
    c = section["clean"]["summary"]
    rows = sorted(order, key=lambda k: (section["results"][k]["summary"]["mean"], k))
    head = (f"{'attack':<16}{'mean ± std':>22}{'IQM [95% CI]':>30}"
            f"{'drop vs clean [95% CI]':>34}")
    sm = section.get("smoothing")
    label = "clean" + (" (smoothed)" if sm else "")
    print(f"{env_id}, {section['threat_text']}, {section['episodes']} episodes "
          f"(seed {section['seed']})", file=out)
    print(head, file=out)
    print("-" * len(head), file=out)

    def line(name: str, s: dict[str, Any], drop: str) -> str:
        ms = f"{fmt(s['mean'])} ± {fmt(s['std'])}"
        iqm = f"{fmt(s['iqm'])} [{fmt(s['iqm_ci'][0])}, {fmt(s['iqm_ci'][1])}]"
        return f"{name:<16}{ms:>22}{iqm:>30}{drop:>34}"

    print(line(label, c, "-"), file=out)
    for k in rows:
        r = section["results"][k]
        rel = r.get("relative_drop")
        rel_s = f" ({100 * rel:.0f}%)" if rel is not None else ""
        drop = (f"{fmt(r['drop_mean'])}{rel_s} [{fmt(r['drop_ci'][0])}, "
                f"{fmt(r['drop_ci'][1])}]")
        print(line(k + ("*" if r.get("kind") == "action" else ""), r["summary"], drop),
              file=out)
    mn = section["min"]
    print(f"strongest attack: {mn['name']} (mean {fmt(mn['mean'])}, 95% CI "
          f"{fmt(mn['mean_ci'][0])} .. {fmt(mn['mean_ci'][1])}; drop "
          f"{fmt(mn['drop_mean'])})", file=out)
    if any(section["results"][k].get("kind") == "action" for k in rows):
        print("* action attack (alpha / action-space budget, not the observation threat model)",
              file=out)
