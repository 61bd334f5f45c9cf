"""``grader``: the command line. Imports stay inside commands so ``grader --help`` is instant."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader import __version__, exitcodes

EXIT_CODES_HELP = """exit codes:
  0  graded (whatever the score)
  2  usage error
  3  rejected: the submission cannot be graded as it stands; result.json and report.md say what to fix
  4  internal grader error (not the student's fault)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grader", description="Autograder for the model-compression course.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"compression-grader {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="grade a submission folder (one holding submission.yaml)",
                           epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("folder", type=Path, help="e.g. submissions/team-alpha/hw2-quantization-pruning")
    check.add_argument("--out", type=Path, help="output folder (default grader-out/<team>/<assignment>/)")
    check.add_argument("--assignments", type=Path, help="assignments folder (default: the course repo's)")
    check.add_argument("--quiet", action="store_true", help="print only the output folder")

    listing = sub.add_parser("assignments", help="list assignments with their checks and points")
    listing.add_argument("--assignments", type=Path)

    schema = sub.add_parser("schema", help="print the result.json JSON Schema")
    schema.add_argument("--write", type=Path, help="write it to this file instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"check": cmd_check, "assignments": cmd_assignments, "schema": cmd_schema}
    return handlers[args.command](args)


def cmd_check(args: argparse.Namespace) -> int:
    from grader.grading import grade
    from grader.report.render import write_reports
    from grader.summary import print_summary

    if not args.folder.is_dir():
        print(f"grader: {args.folder} is not a folder", file=sys.stderr)
        return exitcodes.USAGE
    grading = grade(args.folder, args.assignments)
    result = grading.result
    out = args.out or Path("grader-out") / result.submission.team / result.assignment.id
    paths = write_reports(result, out)
    if grading.internal_error:
        (out / "internal-error.txt").write_text(grading.internal_error, encoding="utf-8")
        print(grading.internal_error, file=sys.stderr)
    if args.quiet:
        print(out)
    else:
        print_summary(result, paths)
    return grading.exit_code


def cmd_assignments(args: argparse.Namespace) -> int:
    from grader.assignment import list_assignment_ids, load_assignment
    from grader.summary import print_assignments

    ids = list_assignment_ids(args.assignments)
    print_assignments([load_assignment(i, args.assignments) for i in ids])
    return exitcodes.GRADED


def cmd_schema(args: argparse.Namespace) -> int:
    from grader.result import json_schema

    text = json_schema()
    if args.write:
        args.write.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return exitcodes.GRADED


if __name__ == "__main__":
    sys.exit(main())
