"""``grader gradebook``: the grade table from the results store, printed and written as files."""

from __future__ import annotations

import argparse
from pathlib import Path

from grader import exitcodes
from grader.commands.common import (
    STAFF_EXIT_CODES,
    UsageError,
    add_policy_options,
    existing_store,
    sources,
    staff_command,
)

FORMATS = ("csv", "md", "xlsx", "html")


def register(sub: argparse._SubParsersAction) -> None:
    book = sub.add_parser(
        "gradebook",
        help="students x assignments: print it, write CSV, Markdown, Excel, HTML",
        epilog=STAFF_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_policy_options(book)
    book.add_argument("--out", type=Path, default=Path("grader-out") / "gradebook", help="folder for the files")
    book.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated subset of {','.join(FORMATS)}")
    book.add_argument("--team", help="print this team's runs instead of the table")
    book.add_argument("--rows", type=int, default=60, help="students printed in the terminal (all are written)")
    book.set_defaults(handler=run)


@staff_command
def run(args: argparse.Namespace) -> int:
    formats = tuple(f for f in args.formats.split(",") if f)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise UsageError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    from grader.gradebook.console import print_gradebook, print_team_runs
    from grader.gradebook.export import write_all
    from grader.gradebook.load import open_gradebook

    with existing_store(args) as store:
        book = open_gradebook(sources(args), store)
    if args.team:
        print_team_runs(book, args.team)
        return exitcodes.GRADED
    print_gradebook(book, limit=args.rows)
    paths = write_all(book, args.out, formats)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return exitcodes.GRADED
