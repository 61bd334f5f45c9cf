"""One ranking: the final project's board is the same entries in the same order with the same
ranks in ``grader leaderboard`` (Markdown, CSV, HTML) and in the gradebook (its HTML table and
its leaderboard CSV), from one rule (``grader.gradebook.final.rank``)."""

from __future__ import annotations

import csv
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import yaml

from grader.config.assignment import load_assignment
from grader.records.store import Store
from tests.results_builders import HW2, make_result
from tests.test_final_project import _entry
from tests.test_gradebook_html import browser  # noqa: F401  (the headless Chromium fixture)

ROOT = Path(__file__).resolve().parent.parent
FINAL = "final-project"
ROSTER = {
    "schema": 1,
    "teams": {
        "team-alpha": {"members": [{"github": "ann"}]},
        "team-beta": {"members": [{"github": "bo"}]},
        "team-gamma": {"members": [{"github": "cy"}]},
        "team-delta": {"members": [{"github": "dee"}]},
        "course-staff": {"staff": True, "members": [{"github": "prof"}]},
    },
}


def grader(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "grader.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_grader_leaderboard_and_the_gradebook_rank_the_same_entries_the_same_way(tmp_path: Path) -> None:
    """The instructor's term: several teams, a late hw2 run, an extension, an override and entries in
    both final-project tracks; the ranking is the same in every output, and the student table counts
    the final project once."""
    entries = [
        _entry("team-alpha", 1.2, 10),
        _entry("team-alpha", 1.4, 50),  # its best entry
        _entry("team-beta", 1.4, 20),  # same score, earlier: ranks above alpha
        _entry("team-gamma", 2.0, 5, gated=False),  # best score, below the gate: listed, not ranked
        _entry("team-delta", 0.9, 30),  # the highest accuracy would sort it first by accuracy
        _entry("course-staff", 1.27, 1),  # a baseline row
        _entry("team-stray", 3.0, 2),  # not on the roster: on no board
    ]
    entries[4] = entries[4].model_copy(
        update={
            "metrics": {
                **entries[4].metrics,
                "candidate.heldout_accuracy": entries[4]
                .metrics["candidate.heldout_accuracy"]
                .model_copy(update={"value": 0.999}),
            }
        }
    )
    deadline = load_assignment(HW2).policy.deadline_utc()
    entries += [
        make_result("team-alpha", score=90, event_time=deadline + timedelta(hours=3), pr=11),  # late
        make_result("team-beta", score=70, event_time=deadline + timedelta(hours=20), pr=12),  # extended
        make_result("team-gamma", score=40, event_time=deadline - timedelta(hours=1), pr=13),  # overridden
        make_result("team-delta", assignment="final-service", score=88, event_time=deadline, pr=14),
    ]
    db = tmp_path / "grades.sqlite"
    with Store(db) as store:
        store.migrate()
        store.add_runs((r, "file") for r in entries)
        store.add_extension("team-beta", HW2, deadline + timedelta(days=2), "medical", "prof")
        store.add_override("team-gamma", HW2, 75.0, "hidden test was wrong", "prof")
    roster = tmp_path / "roster.yaml"
    roster.write_text(yaml.safe_dump(ROSTER))
    common = ["--db", str(db), "--roster", str(roster)]
    grader("leaderboard", *common, "--view", "private", "--out", str(tmp_path / "board"), cwd=ROOT)
    grader("gradebook", *common, "--out", str(tmp_path / "book"), "--formats", "csv,html", cwd=ROOT)

    expected = [
        ("1", "team-beta"),
        ("2", "team-alpha"),
        ("3", "team-delta"),
        ("—", "team-gamma"),
        ("baseline", "course-staff"),
        ("baseline", "(course reference)"),
    ]
    board_csv = list(csv.DictReader((tmp_path / "board" / f"leaderboard-{FINAL}-private.csv").open()))
    assert [(r["rank"], r["team"]) for r in board_csv] == expected
    book_csv = list(csv.DictReader((tmp_path / "book" / f"leaderboard-{FINAL}.csv").open()))
    assert [(r["rank"] or ("baseline" if r["baseline"] == "True" else "—"), r["team"]) for r in book_csv] == expected
    markdown = (tmp_path / "board" / f"leaderboard-{FINAL}-private.md").read_text()
    assert [line.split(" | ")[0].lstrip("| ") for line in markdown.splitlines() if line.startswith("| ")][1:] == [
        rank for rank, _ in expected
    ]
    html = (tmp_path / "book" / "gradebook.html").read_text()
    section = html[html.index(f"Leaderboard: {FINAL}") :]
    section = section[: section.index("</table>")]
    teams_in_html = [team for _, team in expected if f"<td>{team}</td>" in section]
    assert teams_in_html == [team for _, team in expected]
    assert [section.index(f"<td>{team}</td>") for _, team in expected] == sorted(
        section.index(f"<td>{team}</td>") for _, team in expected
    )
    assert "team-stray" not in section and "team-stray" not in markdown

    students = {r["github"]: r for r in csv.DictReader((tmp_path / "book" / "grades.csv").open())}
    assert "final-service" not in students["ann"]  # one column for the two tracks
    assert students["dee"]["final-project"] == "100"  # the better of delta's model (100) and service (88) entries
    assert students["dee"]["final-project_flags"].startswith("final-project")
    assert "superseded" not in students["cy"][f"{HW2}_flags"] and students["cy"][HW2] == "75"
    assert students["bo"][HW2] == "70" and "extension" in students["bo"][f"{HW2}_flags"]
    assert "late 1d" in students["ann"][f"{HW2}_flags"]


def test_the_leaderboard_page_reads_well_in_a_browser(browser, tmp_path: Path) -> None:  # noqa: F811
    from tests.test_report_rendering import open_page

    db = tmp_path / "grades.sqlite"
    with Store(db) as store:
        store.migrate()
        store.add_runs((_entry(f"team-{c}", 1.0 + i / 10, i), "file") for i, c in enumerate(["alpha", "beta", "gamma"]))
    roster = tmp_path / "roster.yaml"
    roster.write_text(yaml.safe_dump(ROSTER))
    for view in ("public", "private"):
        grader(
            "leaderboard", "--db", str(db), "--roster", str(roster), "--view", view, "--out", str(tmp_path), cwd=ROOT
        )
        seen = open_page(browser, tmp_path / f"leaderboard-{FINAL}-{view}.html")
        assert seen["pageWidth"] <= seen["viewWidth"] + 1 and not seen["wide"], seen["wide"][:5]
        assert "team-gamma" in seen["text"] and "Ratios are against the course reference" in seen["text"]
        assert ("members" in seen["text"]) is (view == "private")  # names only in the staff view


def test_a_regrade_that_fails_the_gate_takes_the_rank_away_everywhere(tmp_path: Path) -> None:
    """The commit graded again replaces its earlier grading on the board as in the grade table: the
    old passing grading of that commit cannot keep the team's rank."""
    first = _entry("team-alpha", 1.5, 10)
    regraded = _entry("team-alpha", 1.5, 10, gated=False).model_copy(
        update={"started_at": first.started_at + timedelta(days=3)}
    )  # same PR, commit and event; graded again later, below the gate now
    db = tmp_path / "grades.sqlite"
    with Store(db) as store:
        store.migrate()
        store.add_runs([(first, "file"), (_entry("team-beta", 1.2, 20), "file"), (regraded, "regrade")])
    roster = tmp_path / "roster.yaml"
    roster.write_text(yaml.safe_dump(ROSTER))
    common = ["--db", str(db), "--roster", str(roster)]
    grader("leaderboard", *common, "--view", "private", "--out", str(tmp_path / "board"), cwd=ROOT)
    grader("gradebook", *common, "--out", str(tmp_path / "book"), "--formats", "csv", cwd=ROOT)
    board = [
        (r["rank"], r["team"]) for r in csv.DictReader((tmp_path / "board" / f"leaderboard-{FINAL}-private.csv").open())
    ]
    book = [(r["rank"], r["team"]) for r in csv.DictReader((tmp_path / "book" / f"leaderboard-{FINAL}.csv").open())]
    assert board[:2] == [("1", "team-beta"), ("—", "team-alpha")]
    assert book[:2] == [("1", "team-beta"), ("", "team-alpha")]
