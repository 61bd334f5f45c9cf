"""``grader assignments`` and ``grader schema``: what can be graded, and the result's schema."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader import exitcodes


def register(sub: argparse._SubParsersAction) -> None:
    listing = sub.add_parser(
        "assignments",
        help="list assignments with their checks and points",
        epilog="exit codes:\n  0  listed (or, with --validate, every assignment is valid)\n"
        "  2  an assignment.yaml or checker.py is invalid (each problem is printed)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listing.add_argument("--assignments", type=Path, help="assignments folder (default: the course repo's)")
    listing.add_argument(
        "--validate",
        action="store_true",
        help="load every assignment.yaml and checker.py and check each check's rule and parameters "
        "(unknown rule, unknown or mistyped parameter, unknown model role, a check id used "
        "twice), before any submission is graded",
    )
    listing.set_defaults(handler=run_assignments)

    schema = sub.add_parser("schema", help="print the result.json JSON Schema")
    schema.add_argument("--write", type=Path, help="write it to this file instead")
    schema.set_defaults(handler=run_schema)


def run_assignments(args: argparse.Namespace) -> int:
    from grader.config.assignment import list_assignment_ids, load_assignment
    from grader.config.paths import assignments_root
    from grader.errors import ConfigError

    root = args.assignments or assignments_root()
    ids = list_assignment_ids(root)
    if not args.validate:
        from grader.report.terminal import print_assignments

        print_assignments([load_assignment(i, root) for i in ids])
        return exitcodes.GRADED
    from grader.checks import validate

    failed = 0
    loaded = []
    for assignment_id in ids:
        try:
            loaded.append(load_assignment(assignment_id, root))
            checks = validate(loaded[-1], root / assignment_id)
        except ConfigError as exc:
            failed += 1
            print(f"invalid  {assignment_id}: {exc}", file=sys.stderr)
            continue
        print(f"valid    {assignment_id}: {len(checks)} checks ({', '.join(c.spec.rule for c in checks)})")
    if not ids:
        print(f"grader: no assignments under {root}", file=sys.stderr)
        return exitcodes.USAGE
    for problem in course_item_problems(loaded):
        failed += 1
        print(f"invalid  {problem}", file=sys.stderr)
    print(f"{len(ids) - failed} of {len(ids)} assignment(s) valid")
    return exitcodes.USAGE if failed else exitcodes.GRADED


def course_item_problems(assignments: list) -> list[str]:
    """Alternatives (a shared ``course_item``) must be worth the same: the gradebook keeps the
    team's better one by points, counted once."""
    maxima: dict[str, set[float]] = {}
    for a in assignments:
        maxima.setdefault(a.item, set()).add(a.max_score)
    return [
        f"course item {item}: its assignments are worth {sorted(worth)} points; alternatives must be worth the same"
        for item, worth in maxima.items()
        if len(worth) > 1
    ]


def run_schema(args: argparse.Namespace) -> int:
    from grader.contracts.result import json_schema

    text = json_schema()
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return exitcodes.GRADED
