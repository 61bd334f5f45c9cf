"""``grader regrade``: grade stored submissions again at their graded SHA with today's config."""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from grader import exitcodes
from grader.commands.common import (
    STAFF_EXIT_CODES,
    UsageError,
    add_policy_options,
    add_runner_options,
    existing_store,
    runner_config,
    sandboxes,
    sources,
    staff_command,
)

if TYPE_CHECKING:  # the command line stays light: these load only in the handlers
    from grader.gradebook.regrade import Outcome
    from grader.gradebook.tasks import Task

EPILOG = (
    """Without --yes it prints what would change (old score -> new score) and asks before storing;
without a terminal it stores nothing unless --yes is given. A regrade that ends in an internal
error is never stored. For a runner pool (.github/workflows/regrade.yml): --tasks FILE --shards N
writes a workflow_dispatch matrix and the work; each runner first runs
  grader regrade --run-tasks FILE --shard K --fetch-only     (token from $GITHUB_TOKEN, if any)
then, in a step without the token,
  grader regrade --run-tasks FILE --shard K --out DIR [--runner docker --image ...]
and the result.json files are stored with  grader results import DIR --tasks FILE.

"""
    + STAFF_EXIT_CODES
)


def register(sub: argparse._SubParsersAction) -> None:
    regrade = sub.add_parser(
        "regrade",
        help="re-run the checker on stored submissions at their graded SHA",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_policy_options(regrade, course_dir=False)
    regrade.add_argument("--assignment", help="only this assignment's gradings")
    regrade.add_argument("--team", help="only this team's gradings")
    regrade.add_argument("--repo-dir", type=Path, default=Path("."), help="git clone of the course repository")
    regrade.add_argument("--jobs", type=int, help="parallel gradings (default: one per CPU core)")
    regrade.add_argument("--yes", action="store_true", help="store the new gradings without asking")
    regrade.add_argument("--dry-run", action="store_true", help="show the changes, store nothing")
    regrade.add_argument("--tasks", type=Path, help="write the work as a job matrix to this file instead")
    regrade.add_argument("--shards", type=int, default=20, help="matrix jobs for --tasks (at most 256)")
    regrade.add_argument("--run-tasks", type=Path, help="on a runner: grade one shard of a --tasks file")
    regrade.add_argument(
        "--shard", type=int, default=0, help="with --run-tasks: which shard of the tasks file to grade"
    )
    regrade.add_argument("--out", type=Path, help="with --run-tasks: folder for the result.json files")
    regrade.add_argument(
        "--fetch-only",
        action="store_true",
        help="with --run-tasks: only fetch the shard's commits from origin (token from $GITHUB_TOKEN, "
        "sent as a header through git's environment, never stored); grade later without it",
    )
    add_runner_options(regrade)
    regrade.set_defaults(handler=run)


@staff_command
def run(args: argparse.Namespace) -> int:
    from grader.gradebook import regrade

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.shards < 1:
        raise UsageError("--shards must be at least 1")
    if args.fetch_only and not args.run_tasks:
        raise UsageError("--fetch-only goes with --run-tasks FILE --shard K")
    if not (args.repo_dir / ".git").exists():
        raise UsageError(f"{args.repo_dir} is not a git clone of the course repository (see --repo-dir)")
    if not args.fetch_only:  # fetching runs nothing: course.yaml's runner does not matter to it
        args.runner_settings = runner_config(args)  # refuse bad runner options before any work
    if args.run_tasks:
        return _run_shard(args)
    from grader.gradebook.load import open_gradebook

    with existing_store(args) as store:
        book = open_gradebook(sources(args), store, with_metrics=False)
    tasks, skipped = regrade.select_tasks(book.runs, args.assignment, args.team)
    for reason in skipped:
        print(f"skipped {reason}", file=sys.stderr)
    if args.tasks:
        from grader.gradebook.tasks import tasks_file

        if not tasks:
            raise UsageError("nothing to regrade: no tasks file written")
        data = tasks_file(tasks, args.shards, args.tasks)
        print(f"wrote {len(tasks)} task(s) in {len(data['matrix']['shard'])} shard(s) to {args.tasks}")
        return exitcodes.GRADED
    if not tasks:
        print("nothing to regrade")
        return exitcodes.GRADED
    outcomes = _grade_with_progress(tasks, args)
    from grader.gradebook.console import print_regrade_changes

    print_regrade_changes(outcomes)
    new = regrade.storable(outcomes)
    if not new or args.dry_run or not _confirmed(args, len(new)):
        print("nothing stored")
        return exitcodes.GRADED
    from grader.records.store import Store

    with Store(sources(args).db) as store:
        report = store.add_runs((r, "regrade") for r in new)
    print(f"stored {report.added} new grading(s); they replace the earlier gradings of the same commits")
    return exitcodes.GRADED


def _grade_with_progress(tasks: list[Task], args: argparse.Namespace) -> list[Outcome]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from grader.gradebook import regrade

    workers = min(args.jobs or regrade.default_workers(), max(1, len(tasks)))
    columns = (TextColumn("regrading"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    started = time.perf_counter()
    with Progress(*columns, transient=False) as progress:
        bar = progress.add_task("regrade", total=len(tasks))
        outcomes = regrade.run_tasks(
            tasks,
            args.repo_dir.resolve(),
            args.assignments,
            workers,
            functools.partial(sandboxes, args.runner_settings),
            lambda _: progress.advance(bar),
        )
    elapsed = time.perf_counter() - started
    cores = "; ".join(",".join(map(str, s)) for s in regrade.core_slices(workers))
    print(
        f"regraded {len(outcomes)} submission(s) in {elapsed:.1f} s with {workers} parallel grading(s) pinned to "
        f"cores [{cores}]: {len(outcomes) / max(elapsed, 1e-9) * 60:.1f} per minute"
    )
    return outcomes


def _confirmed(args: argparse.Namespace, count: int) -> bool:
    if args.yes:
        return True
    if not sys.stdin.isatty():
        print("not a terminal: rerun with --yes to store these gradings", file=sys.stderr)
        return False
    return input(f"store {count} new grading(s)? [y/N] ").strip().lower() in ("y", "yes")


def _run_shard(args: argparse.Namespace) -> int:
    from grader.gradebook.tasks import TasksFileError, shard_tasks

    if not args.out and not args.fetch_only:
        raise UsageError("--run-tasks needs --out (a folder for the result.json files) or --fetch-only")
    try:
        tasks = shard_tasks(args.run_tasks, args.shard)
    except OSError as exc:
        raise UsageError(f"cannot read {args.run_tasks}: {exc}") from None
    except TasksFileError as exc:
        raise UsageError(f"{args.run_tasks}: {exc}") from None
    if args.fetch_only:
        return _fetch_shard(args, tasks)
    from grader.gradebook import regrade

    outcomes = _grade_with_progress(tasks, args)
    from grader.gradebook.console import print_regrade_changes

    print_regrade_changes(outcomes)
    written = regrade.write_outcomes(outcomes, args.out)
    print(f"wrote {len(written)} result.json file(s) to {args.out}")
    return exitcodes.GRADED


def _fetch_shard(args: argparse.Namespace, tasks: list[Task]) -> int:
    """Exit 5 when commits were needed and none could be fetched (a token or network problem);
    a commit GitHub no longer has is listed, and the grading step reports it as not regraded."""
    from grader.gradebook.regrade import fetch_commits

    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    try:
        done = fetch_commits(args.repo_dir.resolve(), tasks, token)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    for line in done.missing:
        print(f"not fetched: {line}", file=sys.stderr)
    print(
        f"shard {args.shard}: {len(done.present)} commit(s) already here, {len(done.fetched)} fetched "
        f"({'with' if token else 'without'} a token), {len(done.missing)} missing"
    )
    return exitcodes.UNAVAILABLE if done.missing and not done.fetched else exitcodes.GRADED
