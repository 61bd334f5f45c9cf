"""``grader ci context|policy|publish``: the steps of the course repository's grading workflow.

The workflow YAML stays thin: each step calls one of these, and every decision is made here, in
tested Python. They read GitHub's ``GITHUB_*`` variables; the token comes only from the
``GITHUB_TOKEN`` environment variable (never a flag, which would show in logs and process lists).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from grader import exitcodes

if TYPE_CHECKING:  # only for annotations: the handlers import these lazily, --help stays light
    from github import Github

    from grader.ci.api import ClientSettings
    from grader.ci.event import PullRequestEvent, RunInfo
    from grader.ci.flows import PolicyInputs

CI_EXIT_CODES_HELP = """exit codes:
  0  done: context written / policy decided (grade, refuse, limited or stale) / outcome published
  2  usage error: not a pull-request event, no token, unreadable event file or roster
  4  GitHub kept failing after every retry, or refused a write (see the message)"""
REGRADE_PLAN_HELP = """step outputs: matrix ({"shard": [0, ..., N-1]}, for strategy.matrix), shards (N), tasks (count)

exit codes:
  0  the tasks file is valid; outputs written
  2  it is not: unreadable, outside the checkout, or invalid (the message says what and where)"""
MATRIX_OUTPUT = re.compile(r'^\{"shard":\[\d+(,\d+)*\]\}$')
OUTPUT_VALUE = re.compile(r"^[A-Za-z0-9._/-]*$")
REGRADE_PLAN_OUTPUTS = ("matrix", "shards", "tasks")  # what the regrade workflow's later jobs may read
POLICY_OUTPUTS = ("decision", "folder", "team", "assignment", "environment", "runs_today")  # what later jobs may read
DEFAULT_BOT = "github-actions[bot]"


def register(sub: argparse._SubParsersAction) -> None:
    ci = sub.add_parser(
        "ci",
        help="steps of the course repository's GitHub workflows (context, policy, publish, regrade-plan)",
        epilog=CI_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    steps = ci.add_subparsers(dest="step", required=True)

    context = _step(steps, "context", "write the run context (PR, head SHA, event time) for grader check --context")
    context.add_argument("--out", type=Path, help="file to write (default: stdout)")
    context.set_defaults(handler=run_context_step)

    policy = _step(steps, "policy", "decide whether this PR may be graded (read-only API calls)")
    _policy_options(policy)
    policy.add_argument(
        "--gate",
        default=os.environ.get("GRADER_GATE") or "none",
        choices=("none", "first-time", "all"),
        help="who needs a person's approval before grading (default $GRADER_GATE or none)",
    )
    policy.add_argument("--out", type=Path, help="also write the decision as JSON here")
    policy.set_defaults(handler=run_policy_step)

    publish = _step(steps, "publish", "post the refusal or the validated result on the PR, with a commit status")
    _policy_options(publish)
    publish.add_argument("--artifact", type=Path, required=True, help="the grading job's result.json (hostile input)")
    publish.add_argument("--grade-outcome", default="", help="the grading job's result (success, failure, ...)")
    publish.add_argument(
        "--policy-decision",
        default="",
        choices=("", "grade", "refuse", "stale", "limited"),
        help="the policy job's decision; only its runs-per-day verdict (limited) is used",
    )
    publish.add_argument("--runs-today", default="", help="the policy job's count of today's graded runs")
    publish.add_argument(
        "--grade-attempt",
        default="",
        help="the run attempt the grading job last ran in (its output); a result from an earlier attempt is refused",
    )
    publish.add_argument(
        "--bot-login",
        default=os.environ.get("GRADER_BOT_LOGIN") or DEFAULT_BOT,
        help=f"login that owns the grader's comments (default $GRADER_BOT_LOGIN or {DEFAULT_BOT})",
    )
    publish.set_defaults(handler=run_publish_step)

    text = "validate a regrade tasks file (grader regrade --tasks) and write its job matrix as step outputs"
    plan = steps.add_parser(
        "regrade-plan",
        help=text,
        description=text,
        epilog=REGRADE_PLAN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    plan.add_argument(
        "--tasks",
        type=Path,
        required=True,
        help="the tasks file, a path inside the repository checkout (the working directory)",
    )
    plan.set_defaults(handler=run_regrade_plan_step)


def _step(steps: argparse._SubParsersAction, name: str, text: str) -> argparse.ArgumentParser:
    parser = steps.add_parser(
        name,
        help=text,
        description=text,
        epilog=CI_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--event", type=Path, help="event JSON (default $GITHUB_EVENT_PATH)")
    return parser


def _policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--roster", type=Path, default=Path("roster.yaml"), help="roster on the base branch")
    parser.add_argument("--assignments", type=Path, help="assignments folder (default: the course repo's)")
    parser.add_argument("--api-url", help="GitHub API URL (default $GITHUB_API_URL)")
    parser.add_argument("--api-spacing", type=float, help="seconds between API requests (default PyGithub's)")
    parser.add_argument("--api-attempts", type=int, default=5, help="tries per API call before giving up")
    parser.add_argument("--api-backoff", type=float, default=2.0, help="first retry wait in seconds (doubles)")
    parser.add_argument(
        "--max-changed-files", type=int, default=100, help="files a pull request may change (default 100)"
    )
    parser.add_argument("--max-files", type=int, default=64, help="files a submission folder may hold (default 64)")
    parser.add_argument("--max-file-mb", type=float, default=100.0, help="MB one submitted file may have (default 100)")
    parser.add_argument(
        "--max-total-mb", type=float, default=300.0, help="MB a submission folder may have in all (default 300)"
    )


def run_context_step(args: argparse.Namespace) -> int:
    from grader.ci.event import load_event, run_context, run_info
    from grader.errors import CIUsageError

    try:
        context = run_context(load_event(event_path=args.event), run_info())
    except CIUsageError as exc:
        return _usage(exc)
    text = context.model_dump_json(indent=2) + "\n"
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return exitcodes.GRADED


def run_policy_step(args: argparse.Namespace) -> int:
    from grader.ci.flows import decide_policy
    from grader.ci.messages import render_refusal
    from grader.ci.publisher import write_step_summary

    try:
        session = _setup(args)
        decision = decide_policy(session.gh, session.event, session.inputs, args.assignments, count_runs=True)
    except _Failed as failed:
        return failed.code
    except Exception as exc:  # noqa: BLE001 - GitHub errors end as a message and exit 4, never a traceback
        return _github_failure(exc)
    runs = "" if decision.runs_today is None else str(decision.runs_today)
    values = (decision.verdict, decision.folder, decision.team, decision.assignment, decision.environment, runs)
    outputs = {key: value or "" for key, value in zip(POLICY_OUTPUTS, values)}
    _write_outputs(outputs)
    if args.out:
        args.out.write_text(decision.model_dump_json(indent=2) + "\n", encoding="utf-8")
    if decision.verdict in ("refuse", "limited"):
        write_step_summary(_env_path("GITHUB_STEP_SUMMARY"), render_refusal(decision))
    reasons = "; ".join(r.rule for r in decision.refusals)
    print(f"policy: {decision.verdict} {decision.folder or ''} {reasons}".rstrip())
    return exitcodes.GRADED


def run_publish_step(args: argparse.Namespace) -> int:
    from grader.ci.flows import publish
    from grader.ci.publisher import Publisher

    try:
        s = _setup(args)
        publisher = Publisher(
            s.gh,
            s.event.repository,
            args.bot_login,
            attempts=s.settings.attempts,
            backoff_s=s.settings.backoff_s,
            secondary_rate_wait_s=s.settings.secondary_rate_wait_s,
        )
        runs_today = int(args.runs_today) if args.runs_today.isdigit() else None
        done = publish(
            s.gh,
            publisher,
            s.event,
            s.run,
            s.inputs,
            args.assignments,
            args.artifact,
            args.grade_outcome,
            _env_path("GITHUB_STEP_SUMMARY"),
            args.policy_decision,
            runs_today,
            int(args.grade_attempt) if args.grade_attempt.isdigit() else None,
        )
    except _Failed as failed:
        return failed.code
    except Exception as exc:  # noqa: BLE001
        return _github_failure(exc)
    print(f"publish: {done.action} {done.comment_url or ''} {done.detail}".rstrip())
    return exitcodes.GRADED


def run_regrade_plan_step(args: argparse.Namespace) -> int:
    """The regrade workflow's plan job: the tasks file is staff-written but read as strictly as the
    runners will read it, so a broken file stops the run before any runner starts."""
    import json
    from collections import Counter

    from grader.gradebook.tasks import TasksFileError, read_tasks

    here = Path.cwd().resolve()
    if args.tasks.is_absolute() or not (here / args.tasks).resolve().is_relative_to(here):
        return _usage(f"--tasks {args.tasks}: must be a path inside the repository checkout")
    try:
        plan = read_tasks(args.tasks)
    except (OSError, TasksFileError) as exc:
        return _usage(f"{args.tasks}: {exc}")
    matrix = json.dumps(plan.matrix, separators=(",", ":"))
    if not MATRIX_OUTPUT.match(matrix):  # built from validated numbers; checked anyway, it is an output line
        raise ValueError(f"refusing to write output matrix={matrix!r}")
    _write_outputs({"shards": str(len(plan.shards)), "tasks": str(len(plan.tasks))})
    path = _env_path("GITHUB_OUTPUT")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"matrix={matrix}\n")
    per_assignment = Counter(task.assignment for _, task in plan.tasks)
    summary = _env_path("GITHUB_STEP_SUMMARY")
    if summary:  # assignment ids are validated names: safe in Markdown
        rows = "".join(f"| {name} | {count} |\n" for name, count in sorted(per_assignment.items()))
        with open(summary, "a", encoding="utf-8") as handle:
            name = re.sub(r"[^A-Za-z0-9._/-]", "?", args.tasks.as_posix())
            handle.write(
                f"### Regrade plan\n\n{len(plan.tasks)} task(s) in {len(plan.shards)} shard(s) "
                f"from `{name}`\n\n| assignment | tasks |\n| --- | --- |\n{rows}"
            )
    print(matrix)
    print(f"regrade-plan: {len(plan.tasks)} task(s) in {len(plan.shards)} shard(s)", file=sys.stderr)
    return exitcodes.GRADED


class _Failed(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


@dataclass
class _Session:
    """Everything a policy or publish step works from."""

    event: PullRequestEvent
    run: RunInfo
    inputs: PolicyInputs
    gh: Github
    settings: ClientSettings


def _setup(args: argparse.Namespace) -> _Session:
    """Event, run, base-branch inputs and a GitHub client; usage problems end as exit code 2."""
    from grader.ci.admission import PolicyLimits
    from grader.ci.api import ClientSettings, make_client
    from grader.ci.event import load_event, run_info
    from grader.ci.flows import PolicyInputs
    from grader.config.assignment import list_assignment_ids
    from grader.config.roster import load_roster
    from grader.errors import CIUsageError, ConfigError

    try:
        event, run = load_event(event_path=args.event), run_info()
        token = os.environ.get("GITHUB_TOKEN")
        if not token:
            raise CIUsageError("GITHUB_TOKEN is not set; pass the job's token in the step's env.")
        roster = load_roster(args.roster)
        limits = PolicyLimits(
            max_changed_files=args.max_changed_files,
            max_files=args.max_files,
            max_file_mb=args.max_file_mb,
            max_total_mb=args.max_total_mb,
        )
        inputs = PolicyInputs(roster, list_assignment_ids(args.assignments), limits, getattr(args, "gate", "none"))
    except (CIUsageError, ConfigError) as exc:
        raise _Failed(_usage(exc)) from exc
    spacing = (
        {} if args.api_spacing is None else {"request_spacing_s": args.api_spacing, "write_spacing_s": args.api_spacing}
    )
    settings = ClientSettings(
        api_url=args.api_url or run.api_url,
        token=token,
        attempts=max(1, args.api_attempts),
        backoff_s=args.api_backoff,
        **spacing,
    )
    return _Session(event, run, inputs, make_client(settings), settings)


def _write_outputs(outputs: dict[str, str]) -> None:
    """Step outputs for later jobs; values are validated so nothing can inject another line."""
    path = _env_path("GITHUB_OUTPUT")
    for key, value in outputs.items():
        if not OUTPUT_VALUE.match(value):
            raise ValueError(f"refusing to write output {key}={value!r}")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.writelines(f"{key}={value}\n" for key, value in outputs.items())


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _usage(exc: Exception) -> int:
    print(f"grader ci: {exc}", file=sys.stderr)
    return exitcodes.USAGE


def _github_failure(exc: Exception) -> int:
    print(f"grader ci: {type(exc).__name__}: {exc}", file=sys.stderr)
    return exitcodes.INTERNAL
