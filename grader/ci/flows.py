"""The two sequences the course workflow runs: decide the policy, then publish what came of it.

``decide_policy`` only reads (the policy job's token is read-only). ``publish`` runs in the job
that may write to the PR; it decides the policy again itself rather than trusting another job's
output, reads the grading job's artifact as hostile input, and posts exactly one comment per
(PR, team, assignment) plus a commit status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from github import Github

from grader import __version__
from grader.ci.admission import Decision, PolicyLimits, check_changes, check_tree, needs_approval
from grader.ci.api import changed_files, folder_tree
from grader.ci.artifact import ArtifactRejected, Expected, load_result_artifact
from grader.ci.event import PullRequestEvent, RunInfo, run_context
from grader.ci.messages import (
    POLICY_MARKER,
    POLICY_STATUS_CONTEXT,
    refusal_status,
    render_refusal,
    result_status,
    status_context,
)
from grader.ci.publisher import Publisher, write_step_summary
from grader.config.assignment import Assignment, load_assignment
from grader.config.roster import Roster
from grader.contracts.result import AssignmentRef, GraderRef, Problem, Result, SubmissionRef
from grader.report.render import marker, render_markdown

OUTCOME_WORDS = {
    "success": "The grading job finished, but its result could not be trusted",
    "failure": "The grading job failed before it produced a result",
    "cancelled": "The grading job was cancelled before it produced a result",
    "skipped": "The grading job did not run (it may be waiting for, or have been refused, staff approval)",
}


@dataclass(frozen=True)
class PolicyInputs:
    """What the base branch says: who is in which team, which assignments exist, the caps, the gate."""

    roster: Roster
    assignment_ids: list[str]
    limits: PolicyLimits = field(default_factory=PolicyLimits)
    gate: str = "none"


@dataclass(frozen=True)
class Published:
    """What ``publish`` did, for the log: ``action`` is stale, refused, graded, rejected or error."""

    action: str
    comment_url: str | None = None
    detail: str = ""


def decide_policy(
    gh: Github, event: PullRequestEvent, inputs: PolicyInputs, assignments: Path | None = None, count_runs: bool = False
) -> Decision:
    """The policy for this event's head commit, from the API's changed-file list and git tree.

    With ``count_runs`` (the policy job), a PR that may be graded is also held to its
    assignment's runs-per-day limit, counted from the workflow's earlier result artifacts.
    """
    repo = gh.get_repo(event.repository)
    pull = repo.get_pull(event.pr_number)
    facts = {"author": event.author, "head_sha": event.head_sha, "author_teams": inputs.roster.teams_of(event.author)}
    if pull.head.sha != event.head_sha:
        return Decision(verdict="stale", **facts)
    count = pull.changed_files
    changed = changed_files(pull) if count <= inputs.limits.max_changed_files else []
    folder, refusals = check_changes(event.author, changed, count, inputs.roster, inputs.assignment_ids, inputs.limits)
    if folder:
        path = f"submissions/{folder[0]}/{folder[1]}"
        tree = folder_tree(repo, event.head_sha, path, max_pointer_reads=inputs.limits.max_files)
        refusals = check_tree(path, tree, inputs.limits)
    if refusals:
        return Decision(verdict="refuse", refusals=refusals, **facts)
    decision = Decision(
        verdict="grade",
        team=folder[0],
        assignment=folder[1],
        needs_approval=needs_approval(inputs.gate, event.author_association),
        **facts,
    )
    return apply_run_limit(gh, event, inputs, decision, assignments) if count_runs else decision


def apply_run_limit(
    gh: Github, event: PullRequestEvent, inputs: PolicyInputs, decision: Decision, assignments: Path | None
) -> Decision:
    """``limited`` when the team's graded runs of this assignment today reach its limit."""
    from grader.ci.runcount import published_runs
    from grader.config.policy import count_graded

    limit = load_assignment(decision.assignment, assignments).max_runs_per_day
    if not limit:
        return decision
    runs = published_runs(gh, event.repository, inputs.roster, decision.team, decision.assignment, event.event_time)
    used = count_graded(runs, decision.team, decision.assignment, event.event_time, exclude_sha=event.head_sha)
    return with_run_count(decision, used, limit, event.event_time)


def with_run_count(decision: Decision, used: int, limit: int, moment: datetime) -> Decision:
    from grader.ci.admission import refusal
    from grader.config.policy import limit_reached

    reached = limit_reached(decision.team, decision.assignment, used, limit, moment)
    if reached is None:
        return decision.model_copy(update={"runs_today": used})
    return decision.model_copy(
        update={
            "verdict": "limited",
            "runs_today": used,
            "needs_approval": False,
            "refusals": [refusal("runs_per_day", f"{reached.message} {reached.hint}")],
        }
    )


def publish(
    gh: Github,
    publisher: Publisher,
    event: PullRequestEvent,
    run: RunInfo,
    inputs: PolicyInputs,
    assignments: Path | None,
    artifact: Path,
    grade_outcome: str,
    summary: Path | None,
    policy_verdict: str = "",
    runs_today: int | None = None,
    grade_attempt: int | None = None,
) -> Published:
    """Post this run's outcome on the PR: a refusal, or the (validated) result, or an error report.

    The file rules are decided again here, never taken from the policy job. The runs-per-day
    count is the policy job's (``policy_verdict`` ``limited`` with ``runs_today``): it is what
    kept this run off the GPU runner, and counting again now could see runs that finished since.
    """
    decision = decide_policy(gh, event, inputs)
    if decision.verdict == "grade" and policy_verdict == "limited":
        limit = load_assignment(decision.assignment, assignments).max_runs_per_day
        if limit:
            decision = with_run_count(
                decision, runs_today if runs_today is not None else limit, limit, event.event_time
            )
    if decision.verdict == "stale":
        return Published(
            "stale", detail=f"PR #{event.pr_number} has moved past {event.head_sha}; the newer run reports"
        )
    if decision.verdict in ("refuse", "limited"):
        body = render_refusal(decision)
        comment = publisher.upsert_comment(event.pr_number, POLICY_MARKER, body)
        publisher.set_status(event.head_sha, *refusal_status(decision), POLICY_STATUS_CONTEXT, run.run_url)
        write_step_summary(summary, body)
        action = "refused" if decision.verdict == "refuse" else "limited"
        return Published(action, comment.html_url, "; ".join(r.rule for r in decision.refusals))
    publisher.edit_if_present(event.pr_number, POLICY_MARKER, render_refusal(decision))
    assignment = load_assignment(decision.assignment, assignments)
    expected = Expected(
        repository=event.repository,
        pr_number=event.pr_number,
        head_sha=event.head_sha,
        run_id=run.run_id,
        team=decision.team,
        assignment=decision.assignment,
        run_attempt=grade_attempt,
    )
    try:
        result = load_result_artifact(artifact, expected, assignment)
        # The context is restamped from this run's own event: the event time decides lateness,
        # and only this privileged job's copy of it is trusted.
        restamped = run_context(event, run).model_copy(update={"run_attempt": result.context.run_attempt})
        result = result.model_copy(update={"context": restamped})
        detail = ""
    except ArtifactRejected as exc:
        result = unavailable_result(event, run, expected, assignment, exc.reason, grade_outcome)
        detail = exc.reason
    body = render_markdown(result)
    comment = publisher.upsert_comment(event.pr_number, marker(result), body)
    publisher.set_status(event.head_sha, *result_status(result), status_context(assignment.id), run.run_url)
    write_step_summary(summary, body)
    return Published(result.status, comment.html_url, detail)


def unavailable_result(
    event: PullRequestEvent, run: RunInfo, expected: Expected, assignment: Assignment, reason: str, grade_outcome: str
) -> Result:
    """An ``error`` result for a run that produced nothing trustworthy: said plainly, charged to nobody."""
    opening = OUTCOME_WORDS.get(grade_outcome, "The grading job produced no usable result")
    problem = Problem(
        kind="runner",
        message=f"{opening} ({reason}). This is not your fault and is not charged to you.",
        hint="Course staff can see the run's log; pushing a new commit grades again.",
    )
    return Result(
        status="error",
        assignment=AssignmentRef(id=assignment.id, version=assignment.version),
        submission=SubmissionRef(team=expected.team, path=f"submissions/{expected.team}/{expected.assignment}"),
        score=0.0,
        max_score=assignment.max_score,
        problems=[problem],
        grader=GraderRef(version=__version__),
        context=run_context(event, run),
        started_at=datetime.now(timezone.utc),
        duration_s=0.0,
    )
