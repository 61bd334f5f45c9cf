"""``grader check DIR``: grade one submission folder."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from grader import exitcodes
from grader.commands.common import UsageError, add_runner_options, runner_config, sandboxes

if TYPE_CHECKING:  # the command line stays light: these load only in the handlers
    from grader.config.course import RunnerConfig

EXIT_CODES_HELP = """exit codes:
  0  graded (whatever the score)
  2  usage error
  3  rejected: the submission cannot be graded as it stands; result.json and report.md say what to fix
  4  internal grader error (not the student's fault)
  130, 143  stopped by SIGINT / SIGTERM (a cancelled CI job): its containers removed, no result written"""


def register(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser(
        "check",
        help="grade a submission folder (one holding submission.yaml)",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("folder", type=Path, help="e.g. submissions/team-alpha/hw2-quantization-pruning")
    check.add_argument("--out", type=Path, help="output folder (default grader-out/<team>/<assignment>/)")
    check.add_argument("--assignments", type=Path, help="assignments folder (default: the course repo's)")
    check.add_argument("--quiet", action="store_true", help="print only the output folder")
    check.add_argument(
        "--store",
        type=Path,
        help="results store whose graded runs count against an assignment's runs-per-day limit (the final project's)",
    )
    check.add_argument(
        "--context",
        type=Path,
        help="JSON with repository, pr_number, head_sha, event_time "
        "(written by the CI workflow from GitHub's event; recorded in result.json)",
    )
    add_runner_options(check)
    check.set_defaults(handler=run)


@contextmanager
def progress_shown(on_terminal: bool) -> Iterator[Callable[[str], None]]:
    """What the grading is doing, as a rich status line on a terminal; nothing in a CI log."""
    if not on_terminal:
        yield lambda _: None
        return
    from rich.console import Console

    with Console(stderr=True).status("grading") as status:
        yield lambda phrase: status.update(f"grading: {phrase}")


def run(args: argparse.Namespace) -> int:
    from grader.grading.pipeline import grade
    from grader.report.render import write_reports
    from grader.report.terminal import print_summary

    if not args.folder.is_dir():
        print(f"grader: {args.folder} is not a folder", file=sys.stderr)
        return exitcodes.USAGE
    context = None
    if args.context:
        from pydantic import ValidationError

        from grader.contracts.result import RunContext

        try:
            context = RunContext.model_validate_json(args.context.read_text(encoding="utf-8"))
        except (OSError, ValidationError) as exc:
            print(f"grader: cannot read --context {args.context}: {exc}", file=sys.stderr)
            return exitcodes.USAGE
    config = _runner_config_or_exit_code(args)
    if isinstance(config, int):
        return config
    from grader.records.runlimit import StoredRunCount

    with progress_shown(not args.quiet and sys.stderr.isatty()) as progress:
        grading = grade(
            args.folder,
            sandboxes(config),
            args.assignments,
            context,
            StoredRunCount(args.store) if args.store else None,
            progress,
        )
    result = grading.result
    out = args.out or Path("grader-out") / result.submission.team / result.assignment.id
    paths = write_reports(result, out)
    if grading.internal_error:
        # the host's traceback goes to a file, not to the log a student reads in CI (never the sandbox's log)
        (out / "internal-error.txt").write_text(grading.internal_error, encoding="utf-8")
        print(
            f"grader: internal error, not charged to the student; details in {out / 'internal-error.txt'}",
            file=sys.stderr,
        )
    if args.quiet:
        print(out)
    else:
        print_summary(result, paths)
    return grading.exit_code


def _runner_config_or_exit_code(args: argparse.Namespace) -> RunnerConfig | int:
    """The chosen runner settings, or the exit code after saying on stderr why there are none."""
    from grader.errors import ConfigError

    try:
        return runner_config(args)
    except UsageError as exc:
        print(f"grader: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    except ConfigError as exc:  # a broken course.yaml is staff's to fix, not the student's
        print(f"grader: {exc}", file=sys.stderr)
        return exitcodes.INTERNAL
