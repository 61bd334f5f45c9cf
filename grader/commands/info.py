"""``grader assignments`` and ``grader schema``: what can be graded, and the result's schema."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader import exitcodes


def register(sub: argparse._SubParsersAction) -> None:
    listing = sub.add_parser("assignments", help="list assignments with their checks and points")
    listing.add_argument("--assignments", type=Path)
    listing.set_defaults(handler=run_assignments)

    schema = sub.add_parser("schema", help="print the result.json JSON Schema")
    schema.add_argument("--write", type=Path, help="write it to this file instead")
    schema.set_defaults(handler=run_schema)


def run_assignments(args: argparse.Namespace) -> int:
    from grader.config.assignment import list_assignment_ids, load_assignment
    from grader.report.terminal import print_assignments

    ids = list_assignment_ids(args.assignments)
    print_assignments([load_assignment(i, args.assignments) for i in ids])
    return exitcodes.GRADED


def run_schema(args: argparse.Namespace) -> int:
    from grader.contracts.result import json_schema

    text = json_schema()
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return exitcodes.GRADED
