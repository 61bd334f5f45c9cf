"""The grading job's result.json as the publishing job sees it: hostile until proven otherwise."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from grader.ci.artifact import ArtifactRejected, Expected, load_result_artifact, read_result
from grader.config.assignment import load_assignment
from grader.contracts.result import CheckStatus, RunContext
from tests.results import HW2, graded_result, rejected_result

SHA = "a" * 40
CONTEXT = RunContext(repository="course/grading", pr_number=7, head_sha=SHA, run_id=99)
EXPECTED = Expected(
    repository="course/grading", pr_number=7, head_sha=SHA, run_id=99, team="team-alpha", assignment=HW2
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "result.json"
    path.write_text(text)
    return path


def load(path: Path, max_bytes: int | None = None):
    options = {"max_bytes": max_bytes} if max_bytes else {}
    return load_result_artifact(path, EXPECTED, load_assignment(HW2), **options)


def test_a_result_of_this_run_is_accepted(tmp_path: Path) -> None:
    result = load(write(tmp_path, graded_result(CONTEXT, lose=4).to_json()))
    assert result.status == "graded" and result.score == 96


def test_missing_symlinked_and_oversized_artifacts_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ArtifactRejected, match="uploaded no result.json"):
        load(tmp_path / "result.json")
    target = write(tmp_path, graded_result(CONTEXT).to_json())
    link = tmp_path / "link.json"
    os.symlink(target, link)
    with pytest.raises(ArtifactRejected, match="not a regular file"):
        load(link)
    with pytest.raises(ArtifactRejected, match="over the 1000-byte cap"):
        load(target, max_bytes=1000)


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]", '{"schema": 1}', "{" * 100000])
def test_malformed_artifacts_are_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(ArtifactRejected, match="does not match the result schema"):
        read_result(write(tmp_path, text))


def test_unknown_fields_are_rejected(tmp_path: Path) -> None:
    data = json.loads(graded_result(CONTEXT).to_json())
    data["grade_override"] = 100
    with pytest.raises(ArtifactRejected, match="schema"):
        load(write(tmp_path, json.dumps(data)))


@pytest.mark.parametrize(
    "change",
    [{"pr_number": 8}, {"head_sha": "b" * 40}, {"run_id": 98}, {"repository": "someone/else"}, {"pr_number": None}],
)
def test_a_result_of_another_pr_commit_or_run_is_rejected(tmp_path: Path, change: dict) -> None:
    forged = graded_result(CONTEXT.model_copy(update=change))
    with pytest.raises(ArtifactRejected, match="belongs to"):
        load(write(tmp_path, forged.to_json()))


def test_scores_that_do_not_add_up_are_rejected(tmp_path: Path) -> None:
    result = graded_result(CONTEXT)
    inflated = result.model_copy(update={"score": 150.0})
    with pytest.raises(ArtifactRejected, match="not the sum"):
        load(write(tmp_path, inflated.to_json()))
    checks = [c.model_copy(update={"points": c.max_points * 2}) for c in result.checks]
    over = result.model_copy(update={"checks": checks, "score": sum(c.points for c in checks)})
    with pytest.raises(ArtifactRejected, match="points"):
        load(write(tmp_path, over.to_json()))
    raised = [c.model_copy(update={"points": 50.0, "max_points": 50.0}) for c in result.checks]
    redefined = result.model_copy(
        update={"checks": raised, "score": 50.0 * len(raised), "max_score": 50.0 * len(raised)}
    )
    with pytest.raises(ArtifactRejected, match="differ from assignment"):
        load(write(tmp_path, redefined.to_json()))


def pending(result, check_id: str):
    """``result`` with ``check_id`` skipped and pending, its points out of the maximum as the engine does it."""
    checks = [
        c.model_copy(update={"status": CheckStatus.SKIPPED, "points": 0.0, "pending": True, "message": "no GPU"})
        if c.id == check_id
        else c
        for c in result.checks
    ]
    held = next(c.max_points for c in checks if c.id == check_id)
    return result.model_copy(
        update={
            "checks": checks,
            "score": sum(c.points for c in checks),
            "max_score": result.max_score - held,
            "pending_points": held,
        }
    )


def test_a_check_that_cannot_be_pending_cannot_shrink_the_maximum(tmp_path: Path) -> None:
    """hw2 has no hardware-only check: a result that calls its speed check pending forges a higher share."""
    forged = pending(graded_result(CONTEXT), "speedup")
    with pytest.raises(ArtifactRejected, match="claims to be pending"):
        load(write(tmp_path, forged.to_json()))


def test_a_pending_check_must_leave_exactly_its_points_out_of_the_maximum(tmp_path: Path) -> None:
    hw6 = load_assignment("hw6-export")
    expected = Expected(**{**EXPECTED.__dict__, "assignment": "hw6-export"})
    honest = pending(graded_result(CONTEXT, assignment="hw6-export"), "tensorrt")
    accepted = load_result_artifact(write(tmp_path, honest.to_json()), expected, hw6)
    assert accepted.max_score == hw6.max_score - 15 and accepted.pending_points == 15
    for forged in (
        honest.model_copy(update={"max_score": honest.max_score - 10}),
        honest.model_copy(update={"pending_points": 0.0}),
    ):
        with pytest.raises(ArtifactRejected, match="less the 15 pending points"):
            load_result_artifact(write(tmp_path, forged.to_json()), expected, hw6)


def test_a_rejected_result_is_filed_under_the_approved_folder(tmp_path: Path) -> None:
    result = load(write(tmp_path, rejected_result(CONTEXT, team="team-alpha", assignment="unknown").to_json()))
    assert result.status == "rejected" and result.assignment.id == HW2 and result.submission.team == "team-alpha"
    assert result.problems[0].message == "models: field required"


def test_a_graded_result_for_another_team_becomes_a_rejection_that_says_why(tmp_path: Path) -> None:
    result = load(write(tmp_path, graded_result(CONTEXT, team="team-beta").to_json()))
    assert result.status == "rejected" and result.score == 0 and result.submission.team == "team-alpha"
    assert "team-beta" in result.problems[0].message and "match the folder" in result.problems[0].hint
