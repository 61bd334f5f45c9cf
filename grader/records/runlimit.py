"""Submission limits: at most N graded runs per team, assignment and UTC day.

Used by the final project so a team cannot tune against the held-out set by submitting all day.
Two places count, with the same rule (``count_graded``): ``grader check --store`` from the
results store, and the CI policy job from the grading workflow's earlier result artifacts
(``grader.ci.runcount``), so a PR over the limit is refused before it reaches the GPU runner. A
limited run is refused before any model is loaded, and the refusal says when to try again.

A run counts once per commit: grading the same commit again (a re-run of the workflow, or a
regrade) is not charged a second time, and the commit being decided is never counted against
itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

from grader.errors import SubmissionError


@dataclass(frozen=True)
class GradedRun:
    """The facts of one stored or published grading that the limit needs."""

    team: str
    assignment: str
    status: str
    event_time: datetime | None
    head_sha: str | None
    run_key: str  # tells runs apart when there is no commit SHA


def utc_day(moment: datetime) -> tuple[datetime, datetime]:
    start = moment.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


def count_graded(runs: Iterable[GradedRun], team: str, assignment: str, moment: datetime,
                 exclude_sha: str | None = None) -> int:
    """Distinct graded commits of (team, assignment) whose GitHub event fell on ``moment``'s UTC day."""
    start, end = utc_day(moment)
    commits = {run.head_sha or run.run_key for run in runs
               if run.team == team and run.assignment == assignment and run.status == "graded"
               and run.event_time is not None and start <= run.event_time < end
               and (exclude_sha is None or run.head_sha != exclude_sha)}
    return len(commits)


def limit_reached(team: str, assignment: str, used: int, limit: int, moment: datetime) -> SubmissionError | None:
    """The refusal for a run over the limit, or None when it may be graded."""
    if used < limit:
        return None
    tomorrow = (moment.astimezone(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%d")
    return SubmissionError(
        f"team {team} already has {used} graded run(s) of {assignment} today (limit {limit} per UTC day); "
        "this run was not graded.",
        f"Push again after {tomorrow} 00:00 UTC; until then test locally with grader check on the public split.",
        kind="limit",
    )


def stored_runs(store_path: Path) -> list[GradedRun]:
    from grader.records.store import Store

    with Store(store_path) as store:
        runs = store.runs_frame()
    return [GradedRun(team=row.team, assignment=row.assignment, status=row.status,
                      event_time=datetime.fromisoformat(row.event_time) if isinstance(row.event_time, str) and row.event_time else None,
                      head_sha=row.head_sha if isinstance(row.head_sha, str) else None, run_key=f"store:{row.id}")
            for row in runs.itertuples(index=False)]


def graded_runs_on(store_path: Path, team: str, assignment: str, day: datetime, exclude_sha: str | None = None) -> int:
    """Graded commits of (team, assignment) in the store whose GitHub event fell on ``day`` (UTC)."""
    return count_graded(stored_runs(store_path), team, assignment, day, exclude_sha)


def enforce(store_path: Path, team: str, assignment: str, limit: int, event_time: datetime | None,
            head_sha: str | None = None) -> None:
    moment = event_time or datetime.now(timezone.utc)
    refusal = limit_reached(team, assignment, graded_runs_on(store_path, team, assignment, moment, head_sha),
                            limit, moment)
    if refusal is not None:
        raise refusal
