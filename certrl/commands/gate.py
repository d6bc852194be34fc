"""``certrl gate``: fail a CI job when a certified (or lower-confidence) return regresses.

    certrl gate results/Hopper-v5_hopper.json \\
        --require "certified_return@B=0.1 >= 2500" --require "attack_min >= 1500" \\
        --junit gate.xml --json gate.json

The requirement language, the metrics, the exit codes and the outputs are documented in
:mod:`certrl.gate` and ``docs/ci.md``. Exit codes: 0 pass, 1 a requirement failed, 2
usage/configuration error, 3 load/runtime error (a results file that cannot be read; an
unexpected error); 2 and 3 also with ``--warn-only``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from certrl.commands.options import add_common
from certrl.errors import UsageError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "gate",
        help="CI gate: exit 1 when a certified / lower-confidence return is below a threshold",
        description="Check requirements 'METRIC[@B=budget] OP NUMBER' (OP: >=, >, <=, <) on "
        "results files. Metrics: certified_return@B=x, certified_qQ@B=x (e.g. "
        "certified_q0.1@B=0.1), clean_return, smoothed_return, attack_min, attack:NAME, "
        "worst_case_return. Every metric is a lower confidence bound (the certificate, or "
        "the lower end of a CI), never a point estimate. Exit codes: 0 pass, 1 a requirement "
        "failed, 2 usage/configuration error (bad requirement, missing section/metric/budget; "
        "also with --warn-only), 3 load/runtime error (missing or unreadable results file, "
        "unexpected error; also with --warn-only). See docs/ci.md.",
    )
    p.add_argument("results", nargs="+", metavar="RESULTS.json",
                   help="results file(s); every requirement is checked in every file")
    p.add_argument("--require", "-r", action="append", required=True, metavar="REQ",
                   help="a requirement, e.g. \"certified_return@B=0.1 >= 2500\" (repeatable)")
    p.add_argument("--junit", metavar="XML", help="write a JUnit XML report (GitLab: "
                   "artifacts:reports:junit)")
    p.add_argument("--json", dest="json_out", metavar="FILE",
                   help="write a machine-readable JSON report")
    p.add_argument("--warn-only", action="store_true",
                   help="report failed requirements but exit 0 (configuration and load errors "
                   "still exit 2 and 3)")
    add_common(p)
    p.set_defaults(handler=cmd_gate)


def cmd_gate(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.gate import (
        console_lines,
        evaluate,
        github_report,
        parse_requirement,
        write_json,
        write_junit,
    )

    try:
        reqs = [parse_requirement(t) for t in args.require]
    except ValueError as e:
        raise UsageError(str(e)) from None
    report = evaluate(reqs, args.results, warn_only=args.warn_only)
    for line in console_lines(report):
        print(line)
    github_report(report)
    if args.junit:
        write_junit(report, args.junit)
    if args.json_out:
        write_json(report, args.json_out)
    seen: set[str] = set()
    for c in report.errors:  # one line per problem (a missing file: once, not per requirement)
        line = c.error if c.error_kind == "load" else c.message
        if line not in seen:
            seen.add(line)
            print(f"certrl: error: {line}", file=sys.stderr)
    return report.exit_code
