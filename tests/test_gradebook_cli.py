"""The instructor commands as a user runs them: real processes, files and exit codes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.results_builders import HW2, make_result

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = datetime(2026, 12, 11, 22, 59, tzinfo=timezone.utc)  # hw2's shipped policy: 23:59 Zurich
ROSTER = """schema: 1
teams:
  team-alpha:
    members:
      - {github: ann, name: Ann Lee, student_id: S1, email: ann@uni.example}
      - {github: bo, name: Bo Chen, student_id: S2}
  team-beta:
    members:
      - {github: cy, name: Cy Diaz, student_id: S3}
"""


def grader(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run the CLI with the caller's environment minus anything that would pick another store or roster."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRADER_", "GITHUB_", "GH_"))}
    return subprocess.run(
        [sys.executable, "-m", "grader.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env | {"COLUMNS": "200"},
    )


@pytest.fixture
def course(tmp_path: Path) -> dict[str, Path]:
    """A results folder as the workflows leave it, a roster, and where the store goes."""
    results = tmp_path / "results"
    runs = [
        make_result("team-alpha", score=70, event_time=DEADLINE - timedelta(hours=3), pr=1),
        make_result("team-alpha", score=95, event_time=DEADLINE + timedelta(hours=2), pr=1),  # 1 day late
        make_result("team-beta", score=60, event_time=DEADLINE - timedelta(days=1), pr=2),
        make_result("team-beta", status="error", event_time=DEADLINE - timedelta(hours=1), pr=2),
    ]
    for i, result in enumerate(runs):
        (results / f"run{i}").mkdir(parents=True)
        (results / f"run{i}" / "result.json").write_text(result.to_json())
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER)
    return {"results": results, "roster": roster, "db": tmp_path / "grades.sqlite", "out": tmp_path / "book"}


def policy_args(course: dict[str, Path]) -> list[str]:
    return ["--db", str(course["db"]), "--roster", str(course["roster"])]


def test_import_then_gradebook_writes_every_file(course: dict[str, Path]) -> None:
    done = grader("results", "import", str(course["results"]), "--db", str(course["db"]))
    assert done.returncode == 0 and "stored 4 new run(s); 0 already stored" in done.stdout
    again = grader("results", "import", str(course["results"]), "--db", str(course["db"]))
    assert "stored 0 new run(s); 4 already stored" in again.stdout

    book = grader("gradebook", *policy_args(course), "--out", str(course["out"]))
    assert book.returncode == 0, book.stderr
    assert "Ann Lee" in book.stdout and "late 1d -9.5" in book.stdout and "1 error run(s)" in book.stdout
    names = sorted(p.name for p in course["out"].iterdir())
    # one leaderboard per assignment that names two figures (hw2 and the final project do)
    assert names == [
        "gradebook.html",
        "grades.csv",
        "grades.md",
        "grades.xlsx",
        "leaderboard-final-project.csv",
        "leaderboard-final-service.csv",
        f"leaderboard-{HW2}.csv",
        "runs.csv",
    ]
    rows = {r["github"]: r for r in csv.DictReader((course["out"] / "grades.csv").open())}
    assert rows["ann"][HW2] == rows["bo"][HW2] == "85.5" and rows["cy"][HW2] == "60"


def test_import_rejects_bad_files_and_keeps_good_ones(course: dict[str, Path]) -> None:
    (course["results"] / "evil").mkdir()
    data = json.loads(make_result("team-beta").to_json())
    data["submission"]["team"] = "=cmd|' /c calc'!A1"
    (course["results"] / "evil" / "result.json").write_text(json.dumps(data))
    done = grader("results", "import", str(course["results"]), "--db", str(course["db"]))
    assert done.returncode == 3 and "stored 4 new run(s)" in done.stdout
    assert "evil/result.json: team name" in done.stderr and "Traceback" not in done.stderr


def test_usage_errors_are_one_line(course: dict[str, Path], tmp_path: Path) -> None:
    missing = grader("gradebook", "--db", str(tmp_path / "none.sqlite"))
    assert missing.returncode == 2 and "no results store" in missing.stderr
    assert grader("results", "import", str(tmp_path / "nowhere")).returncode == 2
    grader("results", "import", str(course["results"]), "--db", str(course["db"]))
    broken = tmp_path / "broken.yaml"
    broken.write_text("teams: [1, 2]\n")
    bad_roster = grader("gradebook", "--db", str(course["db"]), "--roster", str(broken))
    assert bad_roster.returncode == 2 and "broken.yaml" in bad_roster.stderr and "Traceback" not in bad_roster.stderr
    bad_format = grader("gradebook", *policy_args(course), "--formats", "csv,pdf")
    assert bad_format.returncode == 2 and "pdf" in bad_format.stderr


def test_override_and_extension_commands(course: dict[str, Path]) -> None:
    grader("results", "import", str(course["results"]), "--db", str(course["db"]))
    done = grader(
        "results",
        "override",
        "--team",
        "team-beta",
        "--assignment",
        HW2,
        "--points",
        "77",
        "--reason",
        "regraded by hand",
        "--by",
        "prof",
        *policy_args(course),
    )
    assert done.returncode == 0 and "set 77 points" in done.stdout
    done = grader(
        "results",
        "extend",
        "--team",
        "team-alpha",
        "--assignment",
        HW2,
        "--days",
        "1",
        "--reason",
        "medical",
        "--by",
        "prof",
        *policy_args(course),
    )
    assert done.returncode == 0 and "2026-12-12T23:59:00+01:00" in done.stdout
    grader("gradebook", *policy_args(course), "--out", str(course["out"]), "--formats", "csv")
    rows = {r["github"]: r for r in csv.DictReader((course["out"] / "grades.csv").open())}
    assert rows["ann"][HW2] == "95" and "extension" in rows["ann"][f"{HW2}_flags"]
    assert rows["cy"][HW2] == "77" and rows["cy"][f"{HW2}_flags"].startswith("override")

    unknown = grader(
        "results",
        "override",
        "--team",
        "team-zeta",
        "--assignment",
        HW2,
        "--points",
        "1",
        "--reason",
        "x",
        *policy_args(course),
    )
    assert unknown.returncode == 2 and "not in the roster" in unknown.stderr
    wrong = grader(
        "results",
        "extend",
        "--team",
        "team-alpha",
        "--assignment",
        "hw9",
        "--days",
        "1",
        "--reason",
        "x",
        *policy_args(course),
    )
    assert wrong.returncode == 2 and "unknown assignment 'hw9'" in wrong.stderr
    naive = grader(
        "results",
        "extend",
        "--team",
        "team-alpha",
        "--assignment",
        HW2,
        "--until",
        "2026-12-20 12:00",
        "--reason",
        "x",
        *policy_args(course),
    )
    assert naive.returncode == 0 and "2026-12-20T12:00:00+01:00" in naive.stdout  # in the assignment's zone


def test_team_view_lists_every_run_with_pr_links(course: dict[str, Path]) -> None:
    grader("results", "import", str(course["results"]), "--db", str(course["db"]))
    done = grader("results", "runs", "--team", "team-alpha", *policy_args(course))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("https://github.com/course/compression-2026/pull/1") == 2
    assert "counted" in done.stdout and "1d -9.5" in done.stdout
    assert grader("results", "runs", "--team", "team-nobody", *policy_args(course)).returncode == 2


def test_gradescope_export_command(course: dict[str, Path], tmp_path: Path) -> None:
    grader("results", "import", str(course["results"]), "--db", str(course["db"]))
    done = grader("results", "export", "--format", "gradescope", "--out", str(tmp_path / "gs"), *policy_args(course))
    assert done.returncode == 0 and "wrote 2 results.json" in done.stdout
    alpha = json.loads((tmp_path / "gs" / HW2 / "team-alpha" / "results.json").read_text())
    assert alpha["score"] == 85.5 and alpha["tests"][-1]["name"] == "Late penalty"


def test_the_gradebook_reads_the_course_repository_it_runs_in(course: dict[str, Path], tmp_path: Path) -> None:
    """Staff run it in their checkout: that repository's roster and assignments, never the installed
    package's; from anywhere else it says what to do; --course names the repository."""
    repo = tmp_path / "course-repo"
    made = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "new_course_repo.py"), str(repo), "--roster", str(course["roster"])],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    imported = grader("results", "import", str(course["results"]), "--db", str(course["db"]))
    assert imported.returncode == 0, imported.stderr
    inside = grader("gradebook", "--db", str(course["db"]), "--out", str(tmp_path / "in"), cwd=repo / "submissions")
    assert inside.returncode == 0, inside.stderr
    assert "Ann Lee" in inside.stdout  # the course repository's roster, found from a subfolder
    assert f"roster {repo / 'roster.yaml'} (2 teams)" in " ".join(inside.stdout.split())
    assert f"roster {repo / 'roster.yaml'}" in (tmp_path / "in" / "grades.md").read_text().replace("\\_", "_")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    lost = grader("gradebook", "--db", str(course["db"]), "--out", str(tmp_path / "x"), cwd=elsewhere)
    assert lost.returncode == 2 and "no course repository here" in lost.stderr and "--course DIR" in lost.stderr
    named = grader(
        "gradebook", "--db", str(course["db"]), "--course", str(repo), "--out", str(tmp_path / "n"), cwd=elsewhere
    )
    assert named.returncode == 0 and "Ann Lee" in named.stdout, named.stderr
    wrong = grader("gradebook", "--db", str(course["db"]), "--course", str(elsewhere), cwd=elsewhere)
    assert wrong.returncode == 2 and "is not a course repository" in wrong.stderr


def test_an_override_above_the_maximum_needs_allow_over(course: dict[str, Path]) -> None:
    grader("results", "import", str(course["results"]), "--db", str(course["db"]))
    base = ["results", "override", "--team", "team-beta", "--assignment", HW2, "--reason", "typo?", "--by", "prof"]
    typo = grader(*base, "--points", "850", *policy_args(course))
    assert typo.returncode == 2 and "above hw2-quantization-pruning's 100 points" in typo.stderr
    assert "--allow-over" in typo.stderr
    meant = grader(*base, "--points", "105", "--allow-over", *policy_args(course))
    assert meant.returncode == 0 and "set 105 points" in meant.stdout
    edge = grader(*base, "--points", "100", *policy_args(course))
    assert edge.returncode == 0  # the maximum itself is fine


def test_a_course_end_without_a_utc_offset_and_a_non_number_override_are_clear_errors(
    course: dict[str, Path], tmp_path: Path
) -> None:
    repo = tmp_path / "course-repo"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "new_course_repo.py"), str(repo), "--roster", str(course["roster"])],
        check=True,
        capture_output=True,
    )
    (repo / "course.yaml").write_text("schema: 1\nends: 2027-02-15T23:59:00\n")  # no offset: which zone?
    grader("results", "import", str(course["results"]), "--db", str(course["db"]))
    naive = grader("gradebook", "--db", str(course["db"]), "--out", str(tmp_path / "o"), cwd=repo)
    assert naive.returncode == 2 and "ends" in naive.stderr and "Traceback" not in naive.stderr
    base = ["results", "override", "--team", "team-beta", "--assignment", HW2, "--reason", "x", "--by", "prof"]
    for bad in ("nan", "inf"):
        done = grader(*base, "--points", bad, "--allow-over", *policy_args(course))
        assert done.returncode == 2 and "a number of points" in done.stderr
