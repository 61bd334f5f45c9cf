"""An assignment's grading policy: deadline, late rule, which run counts, its leaderboard axes.

It lives in ``assignment.yaml`` on the base branch (so it is versioned with the thresholds and a
student cannot change it). Only the schema is here; ``grader.gradebook.late`` applies it. The
deadline must be unambiguous: either an ISO time with a UTC offset, or a local time plus an IANA
``timezone`` (which is how a course announces it, and which gets daylight saving right).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, model_validator

from grader.contracts.base import Strict
from grader.errors import SubmissionError

SECONDS_PER_DAY = 86_400


class LateRule(Strict):
    """Points lost per started day late (1 second late is 1 day), up to ``cap``; none after ``cutoff_days``."""

    per_day: float = Field(0.0, ge=0, le=1, description="fraction lost per started day late")
    basis: Literal["score", "max_score"] = Field("score", description="fraction of the run's score or of the maximum")
    cap: float = Field(1.0, ge=0, le=1, description="at most this fraction is lost")
    grace_minutes: float = Field(0.0, ge=0, description="lateness up to this is forgiven (clock skew, queues)")
    cutoff_days: float | None = Field(None, gt=0, description="runs later than this after the deadline do not count")


class Axis(Strict):
    metric: str = Field(description="a key of result.metrics, e.g. candidate.accuracy")
    label: str
    higher_is_better: bool = True


class Leaderboard(Strict):
    """Two figures of the counted run, plotted against each other with their Pareto front."""

    x: Axis
    y: Axis
    ranked_if: list[str] = Field(
        [],
        description="checks an entry must pass to be ranked, besides the gate checks "
        "(the service track: correct answers)",
    )


class Policy(Strict):
    deadline: datetime | None = None
    timezone: str | None = Field(None, description="IANA zone for a deadline written without a UTC offset")
    late: LateRule = LateRule()
    counts: Literal["best", "last"] = Field(
        "best", description="best: the highest score after late penalties; last: the latest run before the cutoff"
    )

    @model_validator(mode="before")
    @classmethod
    def _localise_deadline(cls, data: Any) -> Any:
        """Turn a local deadline + zone into an aware time; refuse a deadline that is neither."""
        if not isinstance(data, dict) or data.get("deadline") is None:
            return data
        deadline = data["deadline"]
        if isinstance(deadline, str):
            try:
                deadline = datetime.fromisoformat(deadline)
            except ValueError as exc:
                raise ValueError(f"deadline '{deadline}' is not an ISO 8601 time (e.g. 2026-12-11 23:59)") from exc
        if not isinstance(deadline, datetime):
            raise ValueError("deadline must be a date and time, e.g. 2026-12-11 23:59")
        zone_name = data.get("timezone")
        zone = None
        if zone_name is not None:
            try:
                zone = ZoneInfo(str(zone_name))
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"timezone '{zone_name}' is not an IANA zone name (e.g. Europe/Zurich)") from exc
        if deadline.tzinfo is None:
            if zone is None:
                raise ValueError("deadline has no UTC offset: add one (2026-12-11T23:59:00+01:00) or set timezone")
            deadline = deadline.replace(tzinfo=zone)
        return {**data, "deadline": deadline}

    def deadline_utc(self) -> datetime | None:
        return self.deadline.astimezone(timezone.utc) if self.deadline else None


# --------------------------------------------------------------------------- runs per day
# At most N graded runs per team, assignment and UTC day (the final project's ``max_runs_per_day``),
# so a team cannot tune against the held-out set by submitting all day. The same rule counts in
# two places: ``grader check --store`` from the results store (``grader.records.runlimit``), and
# the CI policy job from the grading workflow's result artifacts (``grader.ci.runcount``). A run
# counts once per commit: grading the same commit again (a re-run, a regrade) is not charged a
# second time, and the commit being decided is never counted against itself.


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


def count_graded(
    runs: Iterable[GradedRun], team: str, assignment: str, moment: datetime, exclude_sha: str | None = None
) -> int:
    """Distinct graded commits of (team, assignment) whose GitHub event fell on ``moment``'s UTC day."""
    start, end = utc_day(moment)
    commits = {
        run.head_sha or run.run_key
        for run in runs
        if run.team == team
        and run.assignment == assignment
        and run.status == "graded"
        and run.event_time is not None
        and start <= run.event_time < end
        and (exclude_sha is None or run.head_sha != exclude_sha)
    }
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
