"""Submission limits: at most N graded runs per team, assignment and UTC day, counted from the store.

Used by the final project so a team cannot tune against the held-out set by submitting all day.
A limited run is refused before any model is loaded, and the refusal says when to try again.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from grader.errors import SubmissionError


def graded_runs_on(store_path: Path, team: str, assignment: str, day: datetime) -> int:
    """Graded runs of (team, assignment) whose GitHub event fell on ``day`` (UTC)."""
    from grader.gradebook.store import Store

    start = day.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)
    with Store(store_path) as store:
        runs = store.runs_frame()
    if runs.empty:
        return 0
    times = runs["event_time"].map(lambda t: datetime.fromisoformat(t) if isinstance(t, str) and t else None)
    mask = (runs["team"] == team) & (runs["assignment"] == assignment) & (runs["status"] == "graded")
    return int(sum(1 for ok, t in zip(mask, times) if ok and t is not None and start <= t < end))


def enforce(store_path: Path, team: str, assignment: str, limit: int, event_time: datetime | None) -> None:
    moment = event_time or datetime.now(timezone.utc)
    used = graded_runs_on(store_path, team, assignment, moment)
    if used >= limit:
        tomorrow = (moment.astimezone(timezone.utc) + timedelta(days=1)).strftime("%Y-%m-%d")
        raise SubmissionError(
            f"team {team} already has {used} graded run(s) of {assignment} today (limit {limit} per UTC day); "
            "this run was not graded.",
            f"Push again after {tomorrow} 00:00 UTC; until then test locally with grader check on the public split.",
            kind="limit",
        )
