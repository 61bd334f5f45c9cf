"""``grader check DIR``: grade one submission folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grader import exitcodes

EXIT_CODES_HELP = """exit codes:
  0  graded (whatever the score)
  2  usage error
  3  rejected: the submission cannot be graded as it stands; result.json and report.md say what to fix
  4  internal grader error (not the student's fault)"""


def register(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check", help="grade a submission folder (one holding submission.yaml)",
                           epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("folder", type=Path, help="e.g. submissions/team-alpha/hw2-quantization-pruning")
    check.add_argument("--out", type=Path, help="output folder (default grader-out/<team>/<assignment>/)")
    check.add_argument("--assignments", type=Path, help="assignments folder (default: the course repo's)")
    check.add_argument("--quiet", action="store_true", help="print only the output folder")
    check.add_argument("--store", type=Path, help="results store whose graded runs count against an assignment's "
                       "runs-per-day limit (the final project's)")
    check.add_argument("--context", type=Path, help="JSON with repository, pr_number, head_sha, event_time "
                       "(written by the CI workflow from GitHub's event; recorded in result.json)")
    runner = check.add_argument_group("where the models run (default: course.yaml's runner, else local)")
    runner.add_argument("--runner", choices=["local", "docker"],
                        help="local: a sandboxed child process; docker: a locked-down container (needs an engine)")
    runner.add_argument("--image", help="grading image for --runner docker, e.g. ghcr.io/org/grader@sha256:... "
                        "(implies --runner docker)")
    runner.add_argument("--gpus", help="for --runner docker: auto (default), all, none, or GPU ids like 0,1")
    runner.add_argument("--course", type=Path, help="course settings file (default: course.yaml of the checkout, "
                        "or $GRADER_COURSE)")
    check.set_defaults(handler=run)


def choose_runner(args: argparse.Namespace):
    """The runner course.yaml names, with the command line's --runner / --image / --gpus on top."""
    from grader.course import load_course
    from grader.runner import select_runner

    config = load_course(args.course).runner
    kind = args.runner or ("docker" if args.image else config.kind)
    if kind == "local" and (args.image or args.gpus):
        raise UsageError("--image and --gpus are for --runner docker")
    docker = config.docker.model_dump()
    if args.image:
        docker["image"] = args.image
    if args.gpus:
        docker["gpus"] = args.gpus if args.gpus in ("auto", "all", "none") else args.gpus.split(",")
    if kind == "docker" and not docker["image"]:
        raise UsageError("--runner docker needs --image NAME@sha256:... (or runner.docker.image in course.yaml)")
    return select_runner(config.model_validate({"kind": kind, "docker": docker}))


class UsageError(Exception):
    """The command line asks for something that cannot work; said on stderr with exit code 2."""


def run(args: argparse.Namespace) -> int:
    from grader.grading import grade
    from grader.report.render import write_reports
    from grader.summary import print_summary

    if not args.folder.is_dir():
        print(f"grader: {args.folder} is not a folder", file=sys.stderr)
        return exitcodes.USAGE
    context = None
    if args.context:
        from pydantic import ValidationError

        from grader.result import RunContext

        try:
            context = RunContext.model_validate_json(args.context.read_text(encoding="utf-8"))
        except (OSError, ValidationError) as exc:
            print(f"grader: cannot read --context {args.context}: {exc}", file=sys.stderr)
            return exitcodes.USAGE
    runner = _runner_or_exit_code(args)
    if isinstance(runner, int):
        return runner
    grading = grade(args.folder, args.assignments, context, runner, args.store)
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


def _runner_or_exit_code(args: argparse.Namespace):
    """The chosen runner, or the exit code after saying on stderr why there is none."""
    from pydantic import ValidationError

    from grader.errors import ConfigError

    if args.course and not args.course.is_file():
        print(f"grader: --course {args.course} is not a file", file=sys.stderr)
        return exitcodes.USAGE
    try:
        return choose_runner(args)
    except (UsageError, ValidationError) as exc:
        print(f"grader: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    except ConfigError as exc:  # a broken course.yaml is staff's to fix, not the student's
        print(f"grader: {exc}", file=sys.stderr)
        return exitcodes.INTERNAL
