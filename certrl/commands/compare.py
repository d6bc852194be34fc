"""``certrl compare``: policies side by side, with probabilities of improvement.

A console table (policy, environment, clean mean / IQM with 95% CIs, strongest attack,
certified return at the largest budget every file certifies), then ``P(X > Y)`` with a 95%
bootstrap CI for every pair, on the clean evaluation returns (normalized scores when the
policies were evaluated on different environments with reference scores).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from certrl.cli import EXIT_OK, UsageError, _add_common


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare policies from results files (table + probability of improvement)",
        description="Compare policies: clean return, strongest attack, certified return and "
        "the probability of improvement P(X > Y) between every pair, with 95% bootstrap CIs.",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS.json", help="results files")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    _add_common(p)
    p.set_defaults(handler=cmd_compare)


def _print_table(headers: list[str], rows: list[list[str]], file: Any) -> None:
    widths = [max(len(h), *(len(r[j]) for r in rows)) for j, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line, file=file)
    print("-" * len(line), file=file)
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)), file=file)


def cmd_compare(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.report.model import load_inputs
    from certrl.report.multi import _norm, _scores, poi_pairs, poi_table, summary_table

    if len(args.results) < 2:
        raise UsageError("compare needs at least two results files")
    items = load_inputs(args.results)
    headers, rows, note = summary_table(items)
    usable = [it for it in items if it.eval_returns is not None]
    kind, label, score_note = _scores(usable) if len(usable) >= 2 else ("raw", "return", "")
    if kind == "normalized" and len({it.env_id for it in usable}) == 1:
        kind, label = "raw", "return"  # one environment: compare the returns themselves
        score_note = "Scores are raw returns (all files share one environment)."
    scores = {it.label: _norm(it, it.eval_returns, kind) for it in usable}  # type: ignore[arg-type]
    poi = poi_pairs([it.label for it in usable], scores)
    if args.json:
        print(json.dumps({
            "policies": [dict(zip(headers, r, strict=True)) for r in rows],
            "scores": kind,
            "probability_of_improvement": [{"x": x, "y": y, **e.to_json()} for x, y, e in poi],
        }, indent=1))
        return EXIT_OK
    out = sys.stdout
    _print_table(headers, rows, out)
    if note:
        print(note, file=out)
    missing = [it.label for it in items if it.eval_returns is None]
    print(file=out)
    if poi:
        print(f"Probability of improvement P(X > Y) on clean evaluation returns ({label}), "
              "95% bootstrap CI:", file=out)
        h, r = poi_table(poi)
        _print_table(h, r, out)
        print(score_note, file=out)
    else:
        print("No probability of improvement: fewer than two files have clean evaluation "
              "returns (run certrl evaluate).", file=out)
    if missing:
        print(f"Without evaluation returns: {', '.join(missing)}", file=out)
    return EXIT_OK
