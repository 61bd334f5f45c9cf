"""Results for the gradebook tests: real ``Result`` objects, as the grader writes them, built quickly."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

from grader.contracts.observations import Estimate
from grader.contracts.result import (
    AssignmentRef,
    CheckResult,
    CheckStatus,
    GraderRef,
    Result,
    RunContext,
    SubmissionRef,
)

HW2 = "hw2-quantization-pruning"
REPO = "course/compression-2026"


def sha_for(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()


def make_result(
    team: str = "team-alpha",
    score: float = 80.0,
    event_time: datetime | None = None,
    assignment: str = HW2,
    status: str = "graded",
    pr: int | None = 7,
    head_sha: str | None = None,
    graded_at: datetime | None = None,
    max_score: float = 100.0,
    metrics: dict[str, float] | None = None,
) -> Result:
    """A result as ``grader check --context`` writes it; times are UTC unless given otherwise."""
    event_time = event_time or datetime(2026, 12, 10, 12, 0, tzinfo=timezone.utc)
    graded_at = graded_at or event_time + timedelta(minutes=2)
    head_sha = head_sha if head_sha is not None else sha_for(team, assignment, event_time.isoformat())
    checks = [
        CheckResult(
            id="loads", title="Loads", status=CheckStatus.PASS, points=min(score, 10.0), max_points=10, message="ok"
        ),
        CheckResult(
            id="rest",
            title="Everything else",
            status=CheckStatus.PARTIAL if score < max_score else CheckStatus.PASS,
            points=max(score - 10.0, 0.0),
            max_points=max_score - 10,
            message="measured",
        ),
    ]
    return Result(
        status=status,
        assignment=AssignmentRef(id=assignment, version=1),
        submission=SubmissionRef(team=team, members=["octocat"], path=f"submissions/{team}/{assignment}"),
        score=score if status != "error" else 0.0,
        max_score=max_score,
        checks=checks,
        metrics={k: Estimate(value=v) for k, v in (metrics or {}).items()},
        grader=GraderRef(version="0.1.0"),
        context=RunContext(
            repository=REPO,
            pr_number=pr,
            head_sha=head_sha,
            event_time=event_time,
            run_id=1234,
            run_url=f"https://github.com/{REPO}/actions/runs/1234",
        ),
        started_at=graded_at,
        duration_s=12.0,
    )
