"""The final project's model track: gate, hardware-normalised score, leaderboard, limits, held-out data."""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from grader import exitcodes
from grader.config.assignment import load_assignment
from grader.config.roster import load_roster
from grader.contracts.figures import SCORE_FIGURE
from grader.contracts.observations import Estimate, Observations
from grader.contracts.result import CheckStatus, Result, RunContext
from grader.gradebook.final import board_from_store, to_csv
from grader.intake.manifest import parse_manifest
from grader.records.runlimit import graded_runs_on
from grader.records.store import Store
from tests.grading import grade, judge
from tests.results import graded_result

ROOT = Path(__file__).resolve().parent.parent
FINAL = "final-project"
SOLUTION = ROOT / "reference" / "solutions" / FINAL
MANIFEST = f"schema: 1\nassignment: {FINAL}\nteam: t\nmembers: [octocat]\nmodels: {{candidate: c.onnx}}\n"


@pytest.fixture(scope="module")
def staff_entry(reference_paths) -> Result:
    grading = grade(SOLUTION)
    assert grading.exit_code == exitcodes.GRADED, grading.result.problems
    return grading.result


def test_the_staff_entry_passes_the_gate_and_its_score_follows_the_printed_formula(staff_entry: Result) -> None:
    checks = {c.id: c for c in staff_entry.checks}
    assert checks["accuracy_gate"].status is CheckStatus.PASS
    m = {k: v.value for k, v in staff_entry.metrics.items()}
    expected = (
        0.5 * np.log2(m["candidate_vs_reference.speedup_b64"])
        + 0.3 * np.log2(m["candidate_vs_reference.size_ratio"])
        + 0.2 * m["candidate_vs_reference.heldout_accuracy_ratio"]
    )
    assert m[SCORE_FIGURE] == pytest.approx(expected)
    assert "0.5·log2(speedup at batch 64)" in checks["score"].message
    assert m["reference.heldout_accuracy"] > 0.95 and staff_entry.environment.data == "public"


@pytest.mark.parametrize("ratio, passes", [(0.99, True), (0.995, True), (0.9899, False), (0.9, False)])
def test_accuracy_gate_boundary(ratio: float, passes: bool) -> None:
    assignment = load_assignment(FINAL)
    figures = {
        "candidate_vs_reference.heldout_accuracy_ratio": Estimate(value=ratio),
        SCORE_FIGURE: Estimate(value=1.0),
    }
    checks = {c.id: c for c in judge(assignment, parse_manifest(MANIFEST), Observations(), figures)}
    assert (checks["accuracy_gate"].status is CheckStatus.PASS) is passes
    assert (checks["score"].status is CheckStatus.SKIPPED) is not passes  # below the gate: listed, not scored


def _busy(seconds: float) -> None:
    end = datetime.now().timestamp() + seconds
    while datetime.now().timestamp() < end:
        pass


def test_a_slower_machine_gives_the_same_normalised_score(staff_entry: Result) -> None:
    """One core, shared with busy loops, simulates a slower runner: the reference slows down too.

    Three loops leave the grader about a quarter of the core, a slowdown no other load on a
    shared CI machine (which slows the first run too) can shrink below the 1.3x this needs.
    """
    original = os.sched_getaffinity(0)
    core = min(original)
    busy = [multiprocessing.Process(target=_busy, args=(120,), daemon=True) for _ in range(3)]
    try:
        os.sched_setaffinity(0, {core})  # the grader, the sandboxed worker and the busy loops share one core
        for loop in busy:
            loop.start()
        slow = grade(SOLUTION).result
    finally:
        for loop in busy:
            loop.terminate()
        os.sched_setaffinity(0, original)
    key = "reference.latency_ms_b64"
    slowdown = slow.metrics[key].value / staff_entry.metrics[key].value
    assert slowdown > 1.3, "the simulated machine was not slower"
    # a score from absolute times would move by 0.5·log2(slowdown); the normalised one moves by under half that
    moved = abs(slow.metrics[SCORE_FIGURE].value - staff_entry.metrics[SCORE_FIGURE].value)
    assert moved < 0.5 * 0.5 * math.log2(slowdown), (moved, slowdown)


def _entry(team: str, score: float, minutes: int, gated: bool = True) -> Result:
    context = RunContext(
        repository="course/grading",
        pr_number=len(team) + minutes,
        head_sha=f"{minutes:040x}",
        event_time=datetime(2026, 12, 1, 12, tzinfo=timezone.utc) + timedelta(minutes=minutes),
    )
    result = graded_result(context, team=team, assignment=FINAL)
    checks = [
        c if c.id != "accuracy_gate" or gated else c.model_copy(update={"status": CheckStatus.FAIL, "points": 0})
        for c in result.checks
    ]
    metrics = {
        SCORE_FIGURE: Estimate(value=score),
        "candidate_vs_reference.speedup_b64": Estimate(value=2**score),
        "candidate.heldout_accuracy": Estimate(value=0.98),
        "candidate_vs_reference.size_ratio": Estimate(value=4.0),
        "candidate_vs_reference.heldout_accuracy_ratio": Estimate(value=0.995),
    }
    return result.model_copy(
        update={"checks": checks, "metrics": metrics, "started_at": context.event_time + timedelta(seconds=30)}
    )


@pytest.fixture
def board_store(tmp_path: Path) -> Path:
    path = tmp_path / "grades.sqlite"
    entries = [
        _entry("team-alpha", 1.2, 10),
        _entry("team-alpha", 1.4, 50),  # its best entry counts
        _entry("team-beta", 1.4, 20),  # same score, earlier: ranks first
        _entry("team-gamma", 2.0, 5, gated=False),  # fastest, but below the gate
        _entry("course-staff", 1.27, 1),  # a baseline row
    ]
    with Store(path) as store:
        store.migrate()
        store.add_runs((r, "file") for r in entries)
    return path


def graded_ids(store: Store) -> list[int]:
    """Every graded final-project run (these boards hold no regrades and nothing past a cutoff)."""
    runs = store.runs_frame()
    return runs.loc[(runs["assignment"] == FINAL) & (runs["status"] == "graded"), "id"].tolist()


BOARD_ROSTER = """schema: 1
teams:
  team-alpha: {members: [{github: ann}]}
  team-beta: {members: [{github: bo}]}
  team-gamma: {members: [{github: cy}]}
  course-staff: {staff: true, members: [{github: prof}]}
"""


@pytest.fixture
def board_roster(tmp_path: Path) -> Path:
    path = tmp_path / "roster.yaml"
    path.write_text(BOARD_ROSTER)
    return path


def test_leaderboard_orders_by_score_breaks_ties_by_time_and_lists_gated_out_teams(
    board_store: Path, board_roster: Path
) -> None:
    with Store(board_store) as store:
        board = board_from_store(store, load_assignment(FINAL), load_roster(board_roster), graded_ids(store))
    rows = [(e.team, e.rank, e.baseline) for e in board]
    assert rows[:3] == [("team-beta", 1, False), ("team-alpha", 2, False), ("team-gamma", None, False)]
    assert rows[3] == ("course-staff", None, True) and rows[4][0] == "(course reference)"
    assert board[1].score == 1.4  # team-alpha's best, not its first entry
    assert board[4].score == pytest.approx(0.2)  # the reference scores what an entry equal to it would


def test_public_view_hides_held_out_figures(board_store: Path) -> None:
    with Store(board_store) as store:
        board = board_from_store(store, load_assignment(FINAL), None, graded_ids(store))
    public = list(csv.reader(to_csv(board, load_assignment(FINAL), "public").splitlines()))
    private = list(csv.reader(to_csv(board, load_assignment(FINAL), "private").splitlines()))
    assert not any("held-out" in h for h in public[0]) and any("held-out" in h for h in private[0])
    assert "members" in private[0] and "members" not in public[0]


def test_leaderboard_command_writes_every_format(board_store: Path, board_roster: Path, tmp_path: Path) -> None:
    out = tmp_path / "board"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grader.cli",
            "leaderboard",
            "--db",
            str(board_store),
            "--roster",
            str(board_roster),
            "--view",
            "private",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "| 1 | team-beta |" in done.stdout
    html = (out / "leaderboard-final-project-private.html").read_text()
    assert "data:image/png;base64," in html and "team-beta" in html


def test_runs_per_day_limit_refuses_before_grading(board_store: Path, reference_paths) -> None:
    day = datetime(2026, 12, 1, 18, tzinfo=timezone.utc)
    assert graded_runs_on(board_store, "team-alpha", FINAL, day) == 2
    assert graded_runs_on(board_store, "team-alpha", FINAL, day + timedelta(days=1)) == 0
    with Store(board_store) as store:
        store.add_runs([(_entry("course-staff", 1.0, 30), "file"), (_entry("course-staff", 1.1, 40), "file")])
    context = RunContext(event_time=day)
    limited = grade(SOLUTION, context=context, store=board_store)
    assert limited.exit_code == exitcodes.REJECTED
    problem = limited.result.problems[0]
    assert problem.kind == "limit" and "3 graded run(s)" in problem.message and "2026-12-02" in problem.hint
    assert limited.result.metrics == {}  # refused before any model ran


def test_held_out_data_comes_from_the_grading_environment(
    reference_paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tests make their own held-out split; the grader reads it from $GRADER_HELDOUT_DIR, not the PR."""
    with np.load(reference_paths["eval_npz"]) as public:
        x, y = public["input"], public["labels"]
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    np.savez(heldout / f"{FINAL}.npz", input=x[:100], labels=(y[:100] + 1) % 10)  # labels no model can match
    monkeypatch.setenv("GRADER_HELDOUT_DIR", str(heldout))
    result = grade(SOLUTION).result
    assert result.environment.data == "held-out"
    assert result.metrics["reference.heldout_accuracy"].value < 0.2


def test_the_run_limit_counts_graded_commits_of_the_utc_day_never_the_one_being_decided() -> None:
    from datetime import datetime, timezone

    from grader.config.policy import GradedRun, count_graded, limit_reached

    def run(sha: str | None, at: str, status: str = "graded", team: str = "team-alpha", key: str = "") -> GradedRun:
        return GradedRun(
            team=team,
            assignment=FINAL,
            status=status,
            event_time=datetime.fromisoformat(at),
            head_sha=sha,
            run_key=key or f"k-{sha}-{at}",
        )

    runs = [
        run("a" * 40, "2026-12-01T00:00:00+00:00"),
        run("a" * 40, "2026-12-01T09:00:00+00:00"),  # re-run: once
        run("b" * 40, "2026-12-01T23:59:59+00:00"),
        run("c" * 40, "2026-12-01T10:00:00+00:00", "error"),
        run("d" * 40, "2026-11-30T23:59:59+00:00"),
        run("e" * 40, "2026-12-01T12:00:00+00:00", team="team-beta"),
        run(None, "2026-12-01T13:00:00+00:00", key="store:7"),
        run(None, "2026-12-01T14:00:00+00:00", key="store:8"),
        run("f" * 40, "2026-12-02T01:00:00+02:00"),
    ]  # 23:00 UTC on the 1st
    moment = datetime(2026, 12, 1, 15, tzinfo=timezone.utc)
    assert count_graded(runs, "team-alpha", FINAL, moment) == 5  # a, b, store:7, store:8, f
    assert count_graded(runs, "team-alpha", FINAL, moment, exclude_sha="b" * 40) == 4
    assert count_graded(runs, "team-alpha", "hw1-baseline", moment) == 0
    assert limit_reached("team-alpha", FINAL, 2, 3, moment) is None
    refusal = limit_reached("team-alpha", FINAL, 3, 3, moment)
    assert refusal is not None and refusal.kind == "limit" and "2026-12-02 00:00 UTC" in refusal.hint
