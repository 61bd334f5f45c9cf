"""One ranking: the final project's board is the same entries in the same order with the same
ranks in ``grader leaderboard`` (Markdown, CSV, HTML) and in the gradebook (its HTML table and
its leaderboard CSV), from one rule (``grader.gradebook.final.rank``)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import yaml

from grader.records.store import Store
from tests.test_final_project import _entry

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
    db = tmp_path / "grades.sqlite"
    with Store(db) as store:
        store.migrate()
        store.add_runs((r, "file") for r in entries)
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
