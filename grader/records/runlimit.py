"""The runs-per-day limit counted from the results store (the rule itself is ``grader.config.policy``'s).

``grader check --store`` refuses a run over the limit before any model is loaded; the refusal
says when to try again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from grader.config.policy import GradedRun, count_graded


def stored_runs(store_path: Path) -> list[GradedRun]:
    from grader.records.store import Store

    with Store(store_path) as store:
        runs = store.runs_frame()
    return [
        GradedRun(
            team=row.team,
            assignment=row.assignment,
            status=row.status,
            event_time=datetime.fromisoformat(row.event_time)
            if isinstance(row.event_time, str) and row.event_time
            else None,
            head_sha=row.head_sha if isinstance(row.head_sha, str) else None,
            run_key=f"store:{row.id}",
        )
        for row in runs.itertuples(index=False)
    ]


def graded_runs_on(store_path: Path, team: str, assignment: str, day: datetime, exclude_sha: str | None = None) -> int:
    """Graded commits of (team, assignment) in the store whose GitHub event fell on ``day`` (UTC)."""
    return count_graded(stored_runs(store_path), team, assignment, day, exclude_sha)


@dataclass(frozen=True)
class StoredRunCount:
    """A ``grader.grading.pipeline.RunCount`` over the results store at ``path``."""

    path: Path

    def __call__(self, team: str, assignment: str, moment: datetime, head_sha: str | None) -> int:
        return graded_runs_on(self.path, team, assignment, moment, head_sha)
