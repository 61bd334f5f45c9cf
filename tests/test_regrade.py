"""``grader regrade``: stored submissions graded again from git at their graded SHA, with today's
assignment config, in a process pool; changes shown before anything is stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from grader.assignment import load_assignment
from grader.gradebook import regrade
from grader.gradebook.store import Store
from tests import builders
from tests.results_builders import HW2, make_result

ROOT = Path(__file__).resolve().parent.parent
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("GRADER_", "GITHUB_", "GH_"))} | {"COLUMNS": "250"}
ROSTER = "schema: 1\nteams:\n  team-alpha:\n    members:\n      - {github: ann}\n  team-beta:\n    members:\n      - {github: bo}\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def course(tmp_path: Path, tiny_models: dict[str, Path]) -> dict:
    """A course repository with one committed submission, a store with three runs of it, the
    assignments (short timing budget) and a roster."""
    repo = tmp_path / "course"
    folder = repo / "submissions" / "team-alpha" / HW2
    builders.submission(folder, {"baseline": tiny_models["baseline"], "candidate": tiny_models["correct"]},
                        tiny_models["inputs"])
    git(repo, "init", "-q")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "team-alpha hw2")
    sha = git(repo, "rev-parse", "HEAD")
    # the working tree moves on after grading: a regrade must not see this
    (folder / "submission.yaml").write_text("not: [valid\n")
    (folder / "candidate.onnx").unlink()

    assignments = builders.fast_assignments(tmp_path / "assignments")
    path = assignments / HW2 / "assignment.yaml"  # a past term: a regrade happens after the gradings it redoes
    config = yaml.safe_load(path.read_text())
    config["policy"]["deadline"] = "2025-12-11 23:59"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    deadline = load_assignment(HW2, assignments).policy.deadline_utc()
    event = deadline - timedelta(hours=2)
    stored = [make_result("team-alpha", score=40, head_sha=sha, event_time=event, pr=3),
              make_result("team-beta", score=55, head_sha=sha, event_time=event, pr=4),  # no folder at that SHA
              make_result("team-alpha", score=30, head_sha="ab" * 20, event_time=event - timedelta(hours=1), pr=3)]
    db = tmp_path / "grades.sqlite"
    with Store(db) as store:
        store.add_runs([(r, "test") for r in stored])
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER)
    return {"repo": repo, "sha": sha, "db": db, "assignments": assignments, "roster": roster, "tmp": tmp_path}


def grader(course: dict, *args: str) -> subprocess.CompletedProcess:
    common = ["--db", str(course["db"]), "--assignments", str(course["assignments"]), "--roster", str(course["roster"])]
    return subprocess.run([sys.executable, "-m", "grader.cli", *args, *common], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL, env=ENV)


def stored_runs(course: dict):
    with Store(course["db"]) as store:
        return store.runs_frame()


def test_regrade_shows_changes_first_then_stores_on_yes(course: dict) -> None:
    dry = grader(course, "regrade", "--repo-dir", str(course["repo"]), "--jobs", "2")
    assert dry.returncode == 0, dry.stderr
    assert "40 (graded) →" in dry.stdout  # old -> new, printed before anything is written
    assert "does not exist at commit" in dry.stdout and "could not be fetched" in dry.stdout
    assert "not a terminal: rerun with --yes" in dry.stderr and "nothing stored" in dry.stdout
    assert len(stored_runs(course)) == 3

    done = grader(course, "regrade", "--repo-dir", str(course["repo"]), "--team", "team-alpha", "--yes")
    assert done.returncode == 0, done.stderr
    assert "stored 1 new grading(s)" in done.stdout
    runs = stored_runs(course)
    new = runs[runs["source"] == "regrade"].iloc[0]
    assert new["head_sha"] == course["sha"] and new["status"] == "graded" and new["score"] > 40
    original = runs[(runs["team"] == "team-alpha") & (runs["score"] == 40)].iloc[0]
    assert new["event_time"] == original["event_time"]  # lateness is the original push's

    book = subprocess.run([sys.executable, "-m", "grader.cli", "results", "runs", "--team", "team-alpha", "--db",
                           str(course["db"]), "--assignments", str(course["assignments"]), "--roster",
                           str(course["roster"])], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=ENV)
    assert f"{HW2}: {new['score']:g}" in book.stdout and "replaced" in book.stdout


def test_regrade_uses_todays_config(course: dict) -> None:
    """Raising a threshold after the fact changes the score of the same committed files."""
    tasks, skipped = regrade.select_tasks(_runs_frame(course), team="team-alpha")
    task = next(t for t in tasks if t.head_sha == course["sha"])
    before = regrade.regrade_one(task, course["repo"], course["assignments"]).result
    path = course["assignments"] / HW2 / "assignment.yaml"
    config = yaml.safe_load(path.read_text())
    for check in config["checks"]:
        if check["id"] == "pruned":
            check["params"].update(min=0.95, zero=0.9)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    after = regrade.regrade_one(task, course["repo"], course["assignments"]).result
    pruned = {r.id: r for r in after.checks}["pruned"]
    assert before.status == after.status == "graded"
    assert after.score < before.score and pruned.points == 0
    assert after.context.head_sha == course["sha"] and after.submission.path == f"submissions/team-alpha/{HW2}"


def _runs_frame(course: dict):
    from grader.gradebook.load import Sources, open_gradebook

    with Store(course["db"]) as store:
        return open_gradebook(Sources(db=course["db"], assignments=course["assignments"], roster=course["roster"]),
                              store, with_metrics=False).runs


def test_a_regrade_that_errors_is_never_stored(course: dict) -> None:
    task = next(t for t in regrade.select_tasks(_runs_frame(course))[0] if t.head_sha == course["sha"])
    broken = course["assignments"] / HW2 / "assignment.yaml"
    config = yaml.safe_load(broken.read_text())
    config["checks"][1]["rule"] = "no-such-rule"  # staff typo: the grader's fault, status error
    broken.write_text(yaml.safe_dump(config, sort_keys=False))
    outcome = regrade.regrade_one(task, course["repo"], course["assignments"])
    assert outcome.result.status == "error"
    assert regrade.storable([outcome]) == []


def test_job_matrix_for_a_runner_pool(course: dict) -> None:
    tasks_path = course["tmp"] / "regrade-tasks.json"
    done = grader(course, "regrade", "--repo-dir", str(course["repo"]), "--tasks", str(tasks_path), "--shards", "2")
    assert done.returncode == 0 and "wrote 3 task(s) in 2 shard(s)" in done.stdout
    data = json.loads(tasks_path.read_text())
    assert data["matrix"] == {"shard": [0, 1]}
    assert sorted(t["shard"] for t in data["tasks"]) == [0, 0, 1]
    assert {t["head_sha"] for t in data["tasks"]} == {course["sha"], "ab" * 20}
    assert len(stored_runs(course)) == 3  # writing the matrix grades and stores nothing

    shard = next(t["shard"] for t in data["tasks"] if t["team"] == "team-alpha" and t["head_sha"] == course["sha"])
    out = course["tmp"] / "shard-out"
    ran = grader(course, "regrade", "--repo-dir", str(course["repo"]), "--run-tasks", str(tasks_path),
                 "--shard", str(shard), "--out", str(out))
    assert ran.returncode == 0, ran.stderr
    written = sorted(out.rglob("result.json"))
    assert len(written) == 1
    imported = subprocess.run([sys.executable, "-m", "grader.cli", "results", "import", str(out), "--db",
                               str(course["db"])], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "stored 1 new run(s)" in imported.stdout
    runs = _runs_frame(course)
    assert runs.loc[runs["current"] & (runs["head_sha"] == course["sha"]) & (runs["team"] == "team-alpha"),
                    "score"].item() > 40  # the runner's grading replaced the stored one


def test_checkout_refuses_paths_outside_the_folder(course: dict, tmp_path: Path) -> None:
    """``git archive`` output is extracted with tarfile's 'data' filter: a committed symlink
    pointing out of the folder is refused rather than followed."""
    repo = course["repo"]
    folder = repo / "submissions" / "team-alpha" / HW2
    git(repo, "checkout", "-q", "--", ".")
    (folder / "escape").symlink_to("/etc/passwd")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "link")
    task = regrade.Task(run_id=1, team="team-alpha", assignment=HW2, head_sha=git(repo, "rev-parse", "HEAD"),
                        repository=None, pr_number=None, event_time=None, old_status="graded", old_score=0)
    outcome = regrade.regrade_one(task, repo, course["assignments"])
    assert outcome.result_json is None and "escape" in outcome.problem
