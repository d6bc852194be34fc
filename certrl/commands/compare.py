"""``certrl compare``: policies side by side, with probabilities of improvement.

Two designs, following Agarwal et al. ("Deep RL at the Edge of the Statistical Precipice",
NeurIPS 2021):

* ``certrl compare a.json b.json ...`` — every file is one policy, i.e. a *single run* (one
  trained agent). The table gives clean mean / IQM with 95% bootstrap CIs over episodes, the
  strongest attack and the certified return at the largest budget every file certifies; then
  ``P(X > Y)`` (an episode of X beats one of Y, ties ½) with a 95% bootstrap CI over episodes.
  Such a comparison says nothing about training *methods* (one seed each), so it always warns.
* ``certrl compare --group ppo p0.json p1.json ... --group sappo s0.json ...`` — every group
  is a method, every file a run. The unit of sampling is the run: a run's score is its mean
  clean return; IQM / mean over runs and ``P(X > Y)`` over runs (Mann-Whitney per environment,
  averaged over environments) come with stratified-bootstrap CIs resampling runs. Groups with
  fewer than 5 runs get a warning (the CIs are then too narrow).

Warnings go to stderr as ``certrl: warning: ...`` (and into ``--json`` output). Every
bootstrap uses a fixed seed: the same files give the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from certrl.commands.options import EXIT_OK, add_common
from certrl.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare policies from results files (table + probability of improvement)",
        description="Compare policies: clean return, strongest attack, certified return and "
        "the probability of improvement P(X > Y) between every pair, with 95% bootstrap CIs. "
        "Each file is one run (a trained agent); compare training methods with --group NAME "
        "FILE... (at least 5 runs per group recommended).",
    )
    p.add_argument("results", nargs="*", metavar="RESULTS.json",
                   help="results files, one policy (run) each")
    p.add_argument("--group", nargs="+", action="append", default=[], metavar=("NAME", "FILE"),
                   help="a method and its runs: --group NAME RUN1.json RUN2.json ... "
                   "(repeatable; compares runs instead of episodes)")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    add_common(p)
    p.set_defaults(handler=cmd_compare)


def _print_table(headers: list[str], rows: list[list[str]], file: Any) -> None:
    widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    print(line, file=file)
    print("-" * len(line), file=file)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), file=file)


def _warn(msgs: list[str]) -> None:
    for m in msgs:
        print(f"certrl: warning: {m}", file=sys.stderr)


def _groups(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """``(name, files)`` of every ``--group``, then one group per positional file."""
    out: list[tuple[str, list[str]]] = []
    for g in args.group:
        if len(g) < 2:
            raise UsageError(f"--group {g[0]} has no files: use --group NAME FILE [FILE ...]")
        out.append((g[0], list(g[1:])))
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UsageError(f"--group name {dup[0]!r} is given twice; merge its files or rename it")
    return out


def cmd_compare(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    groups = _groups(args)
    if groups:
        return _compare_groups(args, groups)
    if len(args.results) < 2:
        raise UsageError("compare needs at least two results files (or --group NAME FILE...)")
    return _compare_files(args)


def _compare_files(args: argparse.Namespace) -> int:
    from certrl.report.model import load_inputs
    from certrl.report.multi import (
        _norm,
        _scores,
        poi_pairs,
        poi_table,
        single_run_warning,
        summary_table,
    )

    items = load_inputs(args.results)
    headers, rows, note = summary_table(items)
    usable = [it for it in items if it.eval_returns is not None]
    kind, label, score_note = _scores(usable) if len(usable) >= 2 else ("raw", "return", "")
    if kind == "normalized" and len({it.env_id for it in usable}) == 1:
        kind, label = "raw", "return"  # one environment: compare the returns themselves
        score_note = "Scores are raw returns (all files share one environment)."
    scores = {it.label: _norm(it, it.eval_returns, kind) for it in usable}  # type: ignore[arg-type]
    poi = poi_pairs([it.label for it in usable], scores)
    missing = [it.label for it in items if it.eval_returns is None]
    warns = [single_run_warning([it.label for it in items])]
    if missing:
        warns.append(f"no clean evaluation returns in {', '.join(missing)} (run certrl "
                     "evaluate): left out of the probability of improvement")
    _warn(warns)
    if args.json:
        print(json.dumps({
            "mode": "episodes",
            "policies": [dict(zip(headers, r, strict=True)) for r in rows],
            "scores": kind,
            "probability_of_improvement": [{"x": x, "y": y, **e.to_json()} for x, y, e in poi],
            "warnings": warns,
        }, indent=1))
        return EXIT_OK
    out = sys.stdout
    _print_table(headers, rows, out)
    if note:
        print(note, file=out)
    print(file=out)
    if poi:
        print(f"Probability of improvement P(X > Y) on clean evaluation returns ({label}), "
              "episodes as samples, 95% bootstrap CI:", file=out)
        h, r = poi_table(poi)
        _print_table(h, r, out)
        print(score_note, file=out)
    else:
        print("No probability of improvement: fewer than two files have clean evaluation "
              "returns (run certrl evaluate).", file=out)
    return EXIT_OK


def _compare_groups(args: argparse.Namespace, groups: list[tuple[str, list[str]]]) -> int:
    from certrl.report.model import load_inputs
    from certrl.report.multi import compare_runs, poi_table, run_table

    files = [f for _, fs in groups for f in fs] + list(args.results)
    items = load_inputs(files)
    by_path: list[tuple[str, list[Any]]] = []
    k = 0
    for name, fs in groups:
        by_path.append((name, items[k:k + len(fs)]))
        k += len(fs)
    for it in items[k:]:  # positional files: one group (one run) each
        by_path.append((it.label, [it]))
    if len(by_path) < 2:
        raise UsageError("compare needs at least two groups (another --group or a results file)")
    comp = compare_runs(by_path)
    headers, rows = run_table(comp)
    _warn(comp.warnings)
    if args.json:
        print(json.dumps({
            "mode": "runs",
            "groups": [dict(zip(headers, r, strict=True)) for r in rows],
            "scores": comp.kind,
            "run_scores": {g.name: g.scores.tolist() for g in comp.groups
                           if g.scores is not None},
            "intervals": {g: {m: e.to_json() for m, e in v.items()}
                          for g, v in comp.intervals.items()},
            "probability_of_improvement": [{"x": x, "y": y, **e.to_json()}
                                           for x, y, e in comp.poi],
            "warnings": comp.warnings,
        }, indent=1))
        return EXIT_OK
    out = sys.stdout
    _print_table(headers, rows, out)
    print(comp.note + " CIs: 95% stratified bootstrap over runs.", file=out)
    print(file=out)
    print(f"Probability of improvement P(X > Y) over runs ({comp.score_label}), 95% "
          "stratified-bootstrap CI:", file=out)
    h, r = poi_table(comp.poi)
    _print_table(h, r, out)
    return EXIT_OK
