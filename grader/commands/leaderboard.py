"""``grader leaderboard``: the final project's ranked board from the results store."""

from __future__ import annotations

import argparse
from pathlib import Path

from grader import exitcodes
from grader.commands.common import (
    STAFF_EXIT_CODES,
    add_policy_options,
    db_path,
    existing_store,
    sources,
    staff_command,
)


def register(sub: argparse._SubParsersAction) -> None:
    board = sub.add_parser(
        "leaderboard",
        help="the final project's leaderboard (Markdown, CSV, HTML)",
        epilog=STAFF_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_policy_options(board)
    board.add_argument(
        "--assignment", default="final-project", help="the assignment whose board to build (default final-project)"
    )
    board.add_argument(
        "--view",
        choices=["public", "private"],
        default="public",
        help="public: no held-out figures, members or links; private: everything, with the scatter",
    )
    board.add_argument(
        "--out", type=Path, default=Path("grader-out") / "leaderboard", help="folder for the board files"
    )
    board.set_defaults(handler=staff_command(run))


def run(args: argparse.Namespace) -> int:
    from grader.config.assignment import load_assignment
    from grader.config.roster import default_roster_path, load_roster
    from grader.gradebook.final import board_from_store, to_markdown, write
    from grader.gradebook.load import board_run_ids, open_gradebook

    assignment = load_assignment(args.assignment, args.assignments)
    roster = load_roster(args.roster or default_roster_path())
    with existing_store(args) as store:
        book = open_gradebook(sources(args), store, with_metrics=False)
        entries = board_from_store(store, assignment, roster, board_run_ids(book, assignment))
    source = f"store {db_path(args)}, roster {args.roster or default_roster_path()} ({len(roster.teams)} teams)"
    print(to_markdown(entries, assignment, args.view, source), end="")
    paths = write(entries, assignment, args.view, args.out, source)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return exitcodes.GRADED
