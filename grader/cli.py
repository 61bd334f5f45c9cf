"""``grader``: the command line. Subcommands live in ``grader.commands``; this file only wires them."""

from __future__ import annotations

import argparse
import importlib
import sys

from grader import __version__
from grader.commands.check import EXIT_CODES_HELP

# One entry per subcommand module (each defines register(subparsers)); add new groups here.
COMMAND_MODULES = [
    "grader.commands.check",
    "grader.commands.info",
    "grader.commands.ci",
    "grader.commands.results",
    "grader.commands.gradebook",
    "grader.commands.regrade",
    "grader.commands.leaderboard",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grader",
        description="Autograder for the model-compression course.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"compression-grader {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
