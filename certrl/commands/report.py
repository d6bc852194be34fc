"""``certrl report``: self-contained HTML and/or PDF robustness report from results files."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from certrl.commands.options import EXIT_OK, add_common
from certrl.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="HTML / PDF robustness report from one or more results files",
        description="Render a self-contained robustness report (verdict, certified return vs. "
        "budget, attacks, return distributions, comparison across policies, provenance). "
        "The format follows each -o extension: .html (inline SVG, no scripts, no external "
        "resources) or .pdf; give -o twice for both.",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS.json",
                   help="results files written by certrl evaluate / certify / attack")
    p.add_argument("-o", "--output", action="append", required=True, metavar="FILE",
                   help="report file: report.html or report.pdf (repeatable)")
    p.add_argument("--require", action="append", default=[], metavar="REQ",
                   help="gate requirement shown as PASS/FAIL in each verdict, in certrl gate "
                   "syntax, e.g. 'certified_return@B=0.1 >= 2500' (repeatable; the report's "
                   "exit code stays 0: use certrl gate to fail a CI job)")
    add_common(p)
    p.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.report import parse_requirements, write_reports

    if len(set(args.output)) != len(args.output):
        raise UsageError("the same -o file is given twice")
    try:
        parse_requirements(args.require)
    except ValueError as e:
        raise UsageError(f"--require: {e}") from None
    outs = write_reports(args.results, args.output, args.require)
    n = len(args.results)
    for o in outs:
        print(f"report: {o} ({n} results file{'s' if n != 1 else ''})", file=sys.stdout)
    return EXIT_OK
