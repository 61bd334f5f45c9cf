"""Results as the grading job would write them, for tests of the stages that read result.json."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from grader.config.assignment import load_assignment
from grader.contracts.result import (
    AssignmentRef,
    CheckResult,
    CheckStatus,
    GraderRef,
    Problem,
    Result,
    RunContext,
    SubmissionRef,
)

HW2 = "hw2-quantization-pruning"


def graded_result(
    context: RunContext, team: str = "team-alpha", assignment: str = HW2, lose: float = 0.0, root: Path | None = None
) -> Result:
    """A graded result consistent with the assignment's checks; ``lose`` points come off the last check."""
    spec = load_assignment(assignment, root)
    checks = [
        CheckResult(id=c.id, title=c.title, status=CheckStatus.PASS, points=c.points, max_points=c.points, message="ok")
        for c in spec.checks
    ]
    if lose:
        last = checks[-1]
        checks[-1] = last.model_copy(
            update={"points": last.points - lose, "status": CheckStatus.PARTIAL, "message": "slower than the threshold"}
        )
    return Result(
        status="graded",
        assignment=AssignmentRef(id=spec.id, version=spec.version),
        submission=SubmissionRef(team=team, members=["octocat"], path=f"submissions/{team}/{assignment}"),
        score=sum(c.points for c in checks),
        max_score=spec.max_score,
        checks=checks,
        grader=GraderRef(version="0.1.0"),
        context=context,
        started_at=datetime(2026, 11, 30, tzinfo=timezone.utc),
        duration_s=12.0,
    )


def rejected_result(context: RunContext, team: str = "team-alpha", assignment: str = "unknown") -> Result:
    """What grader check writes for an unreadable submission.yaml: no trustworthy assignment in it."""
    return Result(
        status="rejected",
        assignment=AssignmentRef(id=assignment, version=0),
        submission=SubmissionRef(team=team, path=f"submissions/{team}/x"),
        score=0,
        max_score=0,
        problems=[Problem(kind="manifest", field="models", message="models: field required", hint="List your models.")],
        grader=GraderRef(version="0.1.0"),
        context=context,
        started_at=datetime(2026, 11, 30, tzinfo=timezone.utc),
        duration_s=0.2,
    )
