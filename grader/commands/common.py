"""Options and error handling shared by the instructor commands (results, gradebook, regrade).

Standard library only at import time, like every module here, so ``grader --help`` stays instant.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from grader import exitcodes

if TYPE_CHECKING:  # the command line stays light: these load only in the handlers
    from grader.config.course import RunnerConfig
    from grader.gradebook.load import Sources
    from grader.records.store import Store
    from grader.sandbox.base import Sandboxes

STAFF_EXIT_CODES = """exit codes:
  0  done
  2  usage or configuration error (bad arguments; unreadable store, roster.yaml or assignment.yaml)
  3  some inputs were rejected (invalid or hostile result files); the valid ones were stored
  4  internal grader error
  5  the GitHub API failed or refused (bad token, unknown repository, network); nothing was stored"""


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", type=Path, help="results store (default $GRADER_DB or grader-data/grades.sqlite)")


def add_policy_options(parser: argparse.ArgumentParser, course_dir: bool = True) -> None:
    add_store_option(parser)
    if course_dir:  # (grader regrade's --course is course.yaml, from add_runner_options; it runs in the checkout)
        parser.add_argument(
            "--course",
            dest="course_dir",
            type=Path,
            help="the course repository (default: the one the working directory is in): its roster.yaml and "
            "assignments/ are used, never the installed package's",
        )
    parser.add_argument(
        "--assignments", type=Path, help="assignments folder (default $GRADER_ASSIGNMENTS or the course repo's)"
    )
    parser.add_argument("--roster", type=Path, help="roster.yaml (default $GRADER_ROSTER or the course repo's)")
    parser.add_argument("--web-url", default="https://github.com", help="GitHub web address for PR links")


def add_runner_options(parser: argparse.ArgumentParser) -> None:
    """Where student files run: the same options for ``grader check`` and ``grader regrade``."""
    runner = parser.add_argument_group("where the models run (default: course.yaml's runner, else local)")
    runner.add_argument(
        "--runner",
        choices=["local", "docker"],
        help="local: a sandboxed child process; docker: a locked-down container (needs an engine)",
    )
    runner.add_argument(
        "--image",
        help="grading image for --runner docker, e.g. ghcr.io/org/grader@sha256:... (implies --runner docker)",
    )
    runner.add_argument(
        "--gpus",
        help="for --runner docker: the one GPU a grading that wants one gets (never several): auto (default, "
        "a free one of this machine's), GPU ids like 0,1 (the first free one of those), or none (CPU only)",
    )
    runner.add_argument(
        "--course", type=Path, help="course settings file (default: course.yaml of the checkout, or $GRADER_COURSE)"
    )


def runner_config(args: argparse.Namespace) -> RunnerConfig:
    """The runner course.yaml names, with the command line's --runner / --image / --gpus on top.

    Raises ``UsageError`` for contradictory options and ``ConfigError`` for a broken course.yaml.
    """
    from grader.config.course import load_course

    if args.course and not args.course.is_file():
        raise UsageError(f"--course {args.course} is not a file")
    config = load_course(args.course).runner
    kind = args.runner or ("docker" if args.image else config.kind)
    if kind == "local" and (args.image or args.gpus):
        raise UsageError("--image and --gpus are for --runner docker")
    docker = config.docker.model_dump()
    if args.image:
        docker["image"] = args.image
    if args.gpus:
        docker["gpus"] = (
            args.gpus if args.gpus in ("auto", "all", "none") else args.gpus.split(",")
        )  # all: refused, saying why
    if kind == "docker" and not docker["image"]:
        raise UsageError("--runner docker needs --image NAME@sha256:... (or runner.docker.image in course.yaml)")
    from pydantic import ValidationError

    try:
        return config.model_validate({"kind": kind, "docker": docker})
    except ValidationError as exc:
        raise UsageError(f"invalid runner options: {exc}") from None


def sandboxes(config: RunnerConfig) -> Sandboxes:
    """Where untrusted code runs, as ``config`` (course.yaml and the command line) chose: the only
    place a sandbox or a service host is picked. A module-level function, so a regrade's process
    pool can take it along."""
    from grader.sandbox.base import Sandboxes

    if config.kind == "docker":
        from grader.sandbox.docker import DockerSandbox
        from grader.sandbox.service_docker import DockerServiceHost

        return Sandboxes(DockerSandbox(config.docker), DockerServiceHost(config.docker))
    from grader.sandbox.local import run_worker, start_early
    from grader.sandbox.service_local import LocalServiceHost

    return Sandboxes(run_worker, LocalServiceHost(), start_early)


def db_path(args: argparse.Namespace) -> Path:
    from grader.records.store import default_db_path

    return args.db or default_db_path()


def existing_store(args: argparse.Namespace) -> Store:
    """Open the store for reading; a missing file is a usage error, not an empty gradebook."""
    from grader.records.store import Store

    path = db_path(args)
    if not path.is_file():
        raise UsageError(f"no results store at {path}: run 'grader results import' or 'collect' first, or pass --db")
    return Store(path)


def sources(args: argparse.Namespace) -> Sources:
    from grader.gradebook.load import Sources

    return Sources(db=db_path(args), assignments=args.assignments, roster=args.roster, web_url=args.web_url)


def who(args: argparse.Namespace) -> str:
    return args.by or os.environ.get("GITHUB_ACTOR") or getpass.getuser()


GRADEBOOK_MODULES = {"pandas", "openpyxl", "matplotlib", "github"}  # the [gradebook] extra


class UsageError(Exception):
    """A wrong argument or a missing file the user named: exit 2 with this message."""


def find_course_repo(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that holds a course's ``roster.yaml`` and ``assignments/``."""
    for folder in (start, *start.parents):
        if (folder / "roster.yaml").is_file() and (folder / "assignments").is_dir():
            return folder
    return None


def resolve_course(args: argparse.Namespace) -> None:
    """Fill ``--roster`` and ``--assignments`` from the course repository the command works on.

    Staff run the gradebook in their checkout of the course repository (or name it with
    ``--course DIR``); the roster and assignments are that repository's, never those of wherever the
    package happens to be installed. An explicit option or ``$GRADER_ROSTER`` / ``$GRADER_ASSIGNMENTS``
    still wins.
    """
    explicit = getattr(args, "course_dir", None)
    need_roster = args.roster is None and not os.environ.get("GRADER_ROSTER")
    need_assignments = args.assignments is None and not os.environ.get("GRADER_ASSIGNMENTS")
    if explicit is None and not (need_roster or need_assignments):
        return
    root = find_course_repo(explicit.resolve()) if explicit else find_course_repo(Path.cwd())
    if explicit is not None and (root is None or root != explicit.resolve()):
        raise UsageError(f"--course {explicit} is not a course repository (no roster.yaml and assignments/ in it)")
    if root is None:
        raise UsageError(
            "no course repository here: run this in a checkout of the course repository (a folder with roster.yaml "
            "and assignments/), or pass --course DIR (or --roster and --assignments)"
        )
    if need_roster:
        args.roster = root / "roster.yaml"
    if need_assignments:
        args.assignments = root / "assignments"


def staff_command(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn a staff configuration problem into a one-line message and exit code 2, not a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from grader.errors import ConfigError

        try:
            if hasattr(args, "roster") and hasattr(args, "assignments"):
                resolve_course(args)
            return handler(args)
        except (UsageError, ConfigError) as exc:
            print(f"grader: {exc}", file=sys.stderr)
            return exitcodes.USAGE
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in GRADEBOOK_MODULES:
                print(
                    f"grader: this command needs {exc.name}: pip install 'compression-grader[gradebook]'",
                    file=sys.stderr,
                )
                return exitcodes.USAGE
            raise
        except Exception as exc:  # noqa: BLE001 - a one-line report; the traceback only on request
            if os.environ.get("GRADER_DEBUG"):
                raise
            print(
                f"grader: internal error ({type(exc).__name__}: {exc}); set GRADER_DEBUG=1 for the traceback",
                file=sys.stderr,
            )
            return exitcodes.INTERNAL

    return run
