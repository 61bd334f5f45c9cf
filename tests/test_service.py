"""The service track end to end: real services in the real sandbox, the real load generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader import exitcodes
from grader.contracts.result import CheckStatus, Result
from tests.grading import grade
from tests.services import team_service


@pytest.fixture(scope="module")
def graded(reference_paths, service_root: Path, tmp_path_factory: pytest.TempPathFactory):
    cache: dict[str, tuple[Result, int]] = {}

    def run(behaviour: str) -> tuple[Result, int]:
        if behaviour not in cache:
            folder = team_service(
                tmp_path_factory.mktemp(behaviour) / "final-service", behaviour, reference_paths["model_onnx"]
            )
            grading = grade(folder, service_root)
            cache[behaviour] = (grading.result, grading.exit_code)
        return cache[behaviour]

    return run


def check(result: Result, check_id: str):
    return next(c for c in result.checks if c.id == check_id)


def test_a_correct_service_is_graded_against_the_reference_service(graded) -> None:
    result, code = graded("good")
    assert code == exitcodes.GRADED, result.problems
    for check_id in ("healthy", "correct", "reliable"):
        assert check(result, check_id).status is CheckStatus.PASS, check(result, check_id).message
    assert result.metrics["service.agreement"].value == 1.0
    assert result.metrics["service.error_rate"].value == 0.0
    assert result.problems == []  # nothing failed under load, so nothing to report
    assert result.metrics["service.throughput_c4"].value > 0
    assert result.metrics["reference_service.throughput_c4"].value > 0
    assert result.metrics["service.p99_ms_c4"].value >= result.metrics["service.p50_ms_c4"].value
    # the same model behind the same kind of server: about the reference's speed
    assert 0.3 < result.metrics["service_vs_reference_service.throughput_ratio"].value < 3
    assert result.environment.data == "public"


def test_wrong_answers_fail_correctness_and_earn_no_throughput(graded) -> None:
    result, _ = graded("wrong")
    assert check(result, "correct").status is CheckStatus.FAIL
    assert result.metrics["service.agreement"].value == 0.0
    assert result.metrics["service.best_throughput"].value == 0.0
    assert check(result, "throughput").status is CheckStatus.FAIL


def test_malformed_json_fails_reliability(graded) -> None:
    result, _ = graded("malformed")
    assert check(result, "reliable").status is CheckStatus.FAIL
    assert result.metrics["service.error_rate"].value == 1.0
    assert check(result, "correct").status is CheckStatus.FAIL


def test_errors_under_load_are_counted(graded) -> None:
    result, _ = graded("flaky")
    rate = result.metrics["service.error_rate"].value
    assert 0.25 < rate < 0.42  # every third request is refused
    assert check(result, "reliable").status is CheckStatus.FAIL
    assert check(result, "correct").status is CheckStatus.PASS  # the answers it did give were right


def test_a_service_that_hangs_under_load_is_graded_with_its_log_lines(graded) -> None:
    result, code = graded("hangs")
    assert code == exitcodes.GRADED and result.status == "graded"
    assert check(result, "reliable").status is CheckStatus.FAIL
    [note] = result.problems
    assert "timed out" in note.message and "stuck waiting for the batch queue" in note.hint


def test_a_service_that_never_becomes_healthy_is_rejected_with_its_log(graded) -> None:
    result, code = graded("never_healthy")
    assert code == exitcodes.REJECTED
    assert result.problems[0].kind == "load"
    assert "GET /health" in result.problems[0].message
    assert "Its last log lines" in result.problems[0].hint
    assert all(c.status is CheckStatus.SKIPPED for c in result.checks if c.id != "healthy")


def test_a_service_that_crashes_on_start_shows_why(reference_paths, service_root: Path, tmp_path: Path) -> None:
    folder = team_service(tmp_path / "final-service", "good", reference_paths["model_onnx"])
    (folder / "app.py").write_text("raise SystemExit('model file missing: weights.onnx')\n")
    result, code = (lambda g: (g.result, g.exit_code))(grade(folder, service_root))
    assert code == exitcodes.REJECTED
    assert "exited" in result.problems[0].message
    assert "weights.onnx" in result.problems[0].hint


def test_manifest_without_service_is_rejected(service_root: Path, tmp_path: Path) -> None:
    folder = tmp_path / "final-service"
    folder.mkdir()
    (folder / "submission.yaml").write_text("schema: 1\nassignment: final-service\nteam: t\nmembers: [octocat]\n")
    grading = grade(folder, service_root)
    assert grading.exit_code == exitcodes.REJECTED
    assert "service" in grading.result.problems[0].message


def test_command_placeholders_are_replaced_literally(tmp_path: Path) -> None:
    """Student text never reaches str.format: other braces pass through and nothing is evaluated."""
    import sys

    from grader.sandbox.service_local import expand

    parts = expand(
        ["{python}", "--uds={socket}", "{python.__class__}", "{unknown}", "{folder}/x"],
        sys.executable,
        str(tmp_path / "s.sock"),
        str(tmp_path),
    )
    assert parts == [sys.executable, f"--uds={tmp_path / 's.sock'}", "{python.__class__}", "{unknown}", f"{tmp_path}/x"]


def test_a_crash_that_prints_a_huge_line_still_gets_a_report_with_the_end_of_its_log(
    reference_paths, service_root: Path, tmp_path: Path
) -> None:
    folder = team_service(tmp_path / "final-service", "good", reference_paths["model_onnx"])
    (folder / "app.py").write_text("raise SystemExit('x' * 20000 + ' model file missing: weights.onnx')\n")
    grading = grade(folder, service_root)
    assert grading.exit_code == exitcodes.REJECTED, grading.internal_error
    assert grading.result.problems[0].hint.endswith("weights.onnx")


def test_slices_of_a_level_combine_into_one_level() -> None:
    from grader.grading.loadgen import LevelStats

    first = LevelStats(
        4, duration_s=2.0, ok=90, wrong=5, failed=5, labelled=95, correct_labels=80, latencies_s=[0.01] * 100
    )
    second = LevelStats(
        4, duration_s=3.0, ok=210, malformed=10, labelled=210, correct_labels=200, latencies_s=[0.02] * 220
    )
    total = LevelStats.combined([first, second])
    assert (total.concurrency, total.duration_s, total.requests) == (4, 5.0, 320)
    assert total.throughput == 300 / 5.0  # correct answers over the time both slices took, not a mean of rates
    assert total.error_rate == 15 / 320
    assert total.percentile_ms(50) == 20.0 and len(total.latencies_s) == 320


def test_the_service_leaderboard_ranks_correct_services_by_throughput_only() -> None:
    """A fast service with wrong answers is listed, never ranked: correct answers are required."""
    from datetime import datetime, timezone

    from grader.config.assignment import load_assignment
    from grader.contracts.figures import SCORE_FIGURE
    from grader.contracts.observations import Estimate
    from grader.contracts.result import RunContext
    from grader.gradebook.final import entry_of, rank, to_markdown
    from tests.results import graded_result

    assignment = load_assignment("final-service")

    def entry(team: str, ratio: float, correct: CheckStatus, minute: int):
        context = RunContext(event_time=datetime(2026, 12, 1, 12, minute, tzinfo=timezone.utc))
        result = graded_result(context, team=team, assignment="final-service")
        checks = [c.model_copy(update={"status": correct}) if c.id == "correct" else c for c in result.checks]
        metrics = {
            "service_vs_reference_service.throughput_ratio": Estimate(value=ratio),
            "service.p99_ms_c16": Estimate(value=40.0),
            SCORE_FIGURE: assignment.score.evaluate(
                {"service_vs_reference_service.throughput_ratio": Estimate(value=ratio)}
            ),
        }
        return entry_of(result.model_copy(update={"checks": checks, "metrics": metrics}), assignment)

    board = rank(
        [
            entry("team-fast-wrong", 3.0, CheckStatus.PARTIAL, 1),
            entry("team-a", 1.5, CheckStatus.PASS, 2),
            entry("team-b", 1.5, CheckStatus.PASS, 1),
            entry("team-c", 0.8, CheckStatus.PASS, 3),
        ],
        None,
        assignment,
    )
    assert [(e.team, e.rank) for e in board] == [
        ("team-b", 1),
        ("team-a", 2),
        ("team-c", 3),
        ("team-fast-wrong", None),
        ("(course reference)", None),
    ]
    assert board[0].score == 1.5 and board[-1].score == 1.0  # the reference service scores 1 by definition
    text = to_markdown(board, assignment, "public")
    assert "Its answers agree with the reference model" in text and "below gate" in text
