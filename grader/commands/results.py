"""``grader results ...``: fill the results store and act on it (overrides, extensions, exports)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from datetime import timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from grader import exitcodes
from grader.commands.common import (
    STAFF_EXIT_CODES,
    UsageError,
    add_policy_options,
    add_store_option,
    db_path,
    existing_store,
    sources,
    staff_command,
    who,
)

if TYPE_CHECKING:  # the command line stays light: these load only in the handlers
    from grader.records.ingest import Batch


def register(sub: argparse._SubParsersAction) -> None:
    results = sub.add_parser(
        "results",
        help="the results store: import, collect from GitHub, override, extend, export",
        epilog=STAFF_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = results.add_subparsers(dest="action", required=True)

    imp = actions.add_parser("import", help="store result.json files (folders are searched recursively)")
    imp.add_argument("paths", nargs="+", type=Path, help="result.json files, or folders searched for them")
    imp.add_argument(
        "--tasks",
        type=Path,
        help="a regrade's tasks file: store only results that are the grading "
        "of one of its tasks (team, assignment, commit, PR, repository and event time all match)",
    )
    add_store_option(imp)
    imp.set_defaults(handler=run_import)

    col = actions.add_parser(
        "collect",
        help="store results from GitHub: the bot's PR comments and/or workflow "
        "artifacts (token from GITHUB_TOKEN or GH_TOKEN)",
    )
    col.add_argument("--repo", required=True, help="OWNER/NAME of the course repository")
    col.add_argument(
        "--from",
        dest="kinds",
        choices=["comments", "artifacts", "both"],
        default="both",
        help="where to read results: PR comments, workflow artifacts, or both (default)",
    )
    col.add_argument(
        "--bot",
        default=os.environ.get("GRADER_BOT_LOGIN"),
        help="login whose comments are trusted (default $GRADER_BOT_LOGIN or github-actions[bot])",
    )
    col.add_argument(
        "--artifact-name",
        default=None,
        help="name of the result artifacts: NAME or NAME-<team>-<assignment> "
        "(default: result, as grade.yml uploads them)",
    )
    col.add_argument(
        "--api-url",
        default=os.environ.get("GITHUB_API_URL", "https://api.github.com"),
        help="GitHub API base URL (default $GITHUB_API_URL or https://api.github.com)",
    )
    add_store_option(col)
    col.set_defaults(handler=run_collect)

    runs = actions.add_parser("runs", help="every stored run of a team, with late marks and PR links")
    runs.add_argument("--team", required=True, help="the team whose runs to list")
    runs.add_argument("--assignment", help="only this assignment's runs")
    add_policy_options(runs)
    runs.set_defaults(handler=run_runs)

    ovr = actions.add_parser("override", help="set a team's points for an assignment, with a reason")
    _team_assignment(ovr)
    points = ovr.add_mutually_exclusive_group(required=True)
    points.add_argument("--points", type=float, help="the points that replace the grade")
    points.add_argument("--clear", action="store_true", help="remove the override")
    ovr.add_argument("--reason", required=True, help="why, kept with the override and shown to staff")
    ovr.add_argument(
        "--allow-over",
        action="store_true",
        help="accept points above the assignment's maximum plus its bonus (refused otherwise: a typo such as "
        "850 for 85 would otherwise become the grade)",
    )
    ovr.add_argument("--by", help="who decided (default $GITHUB_ACTOR or the local user)")
    add_policy_options(ovr)
    ovr.set_defaults(handler=run_override)

    ext = actions.add_parser("extend", help="give a team its own deadline for an assignment")
    _team_assignment(ext)
    due = ext.add_mutually_exclusive_group(required=True)
    due.add_argument("--until", help="new deadline, ISO 8601 with offset or in the assignment's timezone")
    due.add_argument("--days", type=float, help="days after the assignment's deadline")
    ext.add_argument("--reason", required=True, help="why the extension was granted")
    ext.add_argument("--by", help="who granted it (default $GITHUB_ACTOR or the local user)")
    add_policy_options(ext)
    ext.set_defaults(handler=run_extend)

    exp = actions.add_parser("export", help="write the counted results in another system's format")
    exp.add_argument("--format", choices=["gradescope"], required=True, help="the export format")
    exp.add_argument(
        "--out", type=Path, default=Path("grader-out") / "gradescope", help="folder for the exported files"
    )
    add_policy_options(exp)
    exp.set_defaults(handler=run_export)


def _team_assignment(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--team", required=True, help="the team")
    parser.add_argument("--assignment", required=True, help="the assignment")


def _report_batch(batch: Batch, added: int, duplicates: int) -> int:
    print(f"stored {added} new run(s); {duplicates} already stored")
    for rejection in batch.rejected:
        print(f"rejected {rejection.source}: {rejection.reason}", file=sys.stderr)
    return exitcodes.REJECTED if batch.rejected else exitcodes.GRADED


@staff_command
def run_import(args: argparse.Namespace) -> int:
    from grader.records.ingest import read_results
    from grader.records.store import Store

    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {', '.join(missing)}")
    batch = read_results(args.paths)
    if args.tasks:
        from grader.gradebook.tasks import TasksFileError, keep_task_results, read_tasks

        try:
            plan = read_tasks(args.tasks)
        except (OSError, TasksFileError) as exc:
            raise UsageError(f"--tasks {args.tasks}: {exc}") from None
        batch = keep_task_results(batch, plan)
    with Store(db_path(args)) as store:
        report = store.add_runs(batch.results)
    return _report_batch(batch, report.added, report.duplicates)


@staff_command
def run_collect(args: argparse.Namespace) -> int:
    from github import GithubException
    from requests import RequestException

    from grader.ci.collect import DEFAULT_ARTIFACT, DEFAULT_BOT, Source, collect
    from grader.records.ingest import REPOSITORY
    from grader.records.store import Store

    if not REPOSITORY.match(args.repo):
        raise UsageError(f"--repo must be OWNER/NAME, not {args.repo!r}")
    source = Source(
        repository=args.repo,
        token=os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN"),
        api_url=args.api_url,
        bot=args.bot or DEFAULT_BOT,
        artifact_name=args.artifact_name or DEFAULT_ARTIFACT,
    )
    kinds = ("comments", "artifacts") if args.kinds == "both" else (args.kinds,)
    try:
        batch = collect(source, kinds)
    except (GithubException, RequestException) as exc:
        status = getattr(exc, "status", "")
        print(
            f"grader: GitHub API error {status} while collecting from {args.repo}: "
            f"{getattr(exc, 'message', None) or type(exc).__name__}",
            file=sys.stderr,
        )
        return exitcodes.UNAVAILABLE
    with Store(db_path(args)) as store:
        report = store.add_runs(batch.results)
    return _report_batch(batch, report.added, report.duplicates)


@staff_command
def run_runs(args: argparse.Namespace) -> int:
    from grader.gradebook.console import print_team_runs
    from grader.gradebook.load import open_gradebook

    with existing_store(args) as store:
        book = open_gradebook(sources(args), store, with_metrics=False)
    if args.team not in set(book.runs["team"]) and args.team not in set(book.grades["team"]):
        raise UsageError(f"no runs stored for team '{args.team}'")
    print_team_runs(book, args.team, args.assignment)
    return exitcodes.GRADED


def _known_assignment(args: argparse.Namespace) -> str:
    from grader.config.assignment import list_assignment_ids, load_assignment

    known = list_assignment_ids(args.assignments)
    if args.assignment not in known:
        raise UsageError(f"unknown assignment '{args.assignment}' (known: {', '.join(known) or 'none'})")
    return load_assignment(args.assignment, args.assignments)


def _known_team(args: argparse.Namespace) -> None:
    from grader.config.roster import default_roster_path, load_roster

    roster = load_roster(args.roster or default_roster_path())
    if args.team not in roster.teams:
        raise UsageError(f"team '{args.team}' is not in the roster")


@staff_command
def run_override(args: argparse.Namespace) -> int:
    from grader.records.store import Store

    assignment = _known_assignment(args)
    _known_team(args)
    if args.points is not None and not math.isfinite(args.points):
        raise UsageError("--points must be a number of points")
    if args.points is not None and args.points < 0:
        raise UsageError("--points must not be negative")
    ceiling = assignment.max_score + assignment.bonus_points
    if args.points is not None and args.points > ceiling and not args.allow_over:
        bonus = f" plus {assignment.bonus_points:g} bonus" if assignment.bonus_points else ""
        raise UsageError(
            f"--points {args.points:g} is above {assignment.id}'s {assignment.max_score:g} points{bonus}; "
            "pass --allow-over if that is what you mean"
        )
    with Store(db_path(args)) as store:
        store.add_override(args.team, args.assignment, None if args.clear else args.points, args.reason, who(args))
    what = "cleared the override" if args.clear else f"set {args.points:g} points"
    print(f"{args.team} / {args.assignment}: {what} ({args.reason})")
    return exitcodes.GRADED


@staff_command
def run_extend(args: argparse.Namespace) -> int:
    from grader.config.policy import Policy
    from grader.records.store import Store

    assignment = _known_assignment(args)
    _known_team(args)
    policy = assignment.policy
    if args.days is not None:
        if policy.deadline is None:
            raise UsageError(f"{assignment.id} has no deadline to extend; use --until")
        due = policy.deadline + timedelta(days=args.days)
    else:
        try:
            due = Policy.model_validate({"deadline": args.until, "timezone": policy.timezone}).deadline
        except ValueError as exc:
            raise UsageError(f"--until: {exc}") from None
    with Store(db_path(args)) as store:
        store.add_extension(args.team, args.assignment, due, args.reason, who(args))
    print(
        f"{args.team} / {args.assignment}: deadline {due.isoformat()} "
        f"({due.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC) ({args.reason})"
    )
    return exitcodes.GRADED


@staff_command
def run_export(args: argparse.Namespace) -> int:
    from grader.gradebook.gradescope import export_gradescope
    from grader.gradebook.load import open_gradebook

    with existing_store(args) as store:
        book = open_gradebook(sources(args), store)
        counted = book.grades["run_id"].dropna().astype(int).tolist()
        results = store.results(counted)
    written = export_gradescope(book, results, args.out)
    print(f"wrote {len(written)} results.json file(s) under {args.out}")
    return exitcodes.GRADED
