"""``grader``: the command line. Subcommands live in ``grader.commands``; this file only wires them."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from grader import __version__, exitcodes
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
    "grader.commands.doctor",
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


class Stopped(BaseException):
    """A stop signal, raised where the program is so that every ``finally`` runs (the grading
    container is removed, the local sandbox's process group is killed). A ``BaseException``: no
    ``except Exception`` on the way can swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: object) -> None:
    # GitHub's runner cancels with SIGINT, then SIGTERM, then kills the tree: the clean-up the
    # first signal starts must not be cut short by the next one.
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    raise Stopped(signum)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for number in STOP_SIGNALS:
        signal.signal(number, _stop)
    try:
        return args.handler(args)
    except Stopped as stopped:
        name = signal.Signals(stopped.signum).name
        print(f"grader: stopped by {name}; what it had started was cleaned up, no result was written", file=sys.stderr)
        return exitcodes.STOPPED_BY_SIGNAL + stopped.signum


if __name__ == "__main__":
    sys.exit(main())
