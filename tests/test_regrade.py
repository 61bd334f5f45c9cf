"""``grader regrade``: stored submissions graded again from git at their graded SHA, with today's
assignment config, in a process pool; changes shown before anything is stored."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from grader.config.assignment import load_assignment
from grader.contracts.result import Result
from grader.gradebook import regrade
from grader.records.store import Store
from tests import builders, githttp
from tests.grading import local_sandboxes
from tests.results_builders import HW2, make_result

ROOT = Path(__file__).resolve().parent.parent
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("GRADER_", "GITHUB_", "GH_"))} | {
    "COLUMNS": "1000"
}  # rows never fold, however long a path
TOKEN = "ghs_" + "R3gr4deT0ken" * 3  # shaped like an Actions token; a test fails if it shows up anywhere
BASIC = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
ROSTER = (
    "schema: 1\nteams:\n  team-alpha:\n    members:\n      - {github: ann}\n"
    "  team-beta:\n    members:\n      - {github: bo}\n"
)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def course(tmp_path: Path, tiny_models: dict[str, Path]) -> dict:
    """A course repository with one committed submission, a store with three runs of it, the
    assignments (short timing budget) and a roster."""
    repo = tmp_path / "course"
    folder = repo / "submissions" / "team-alpha" / HW2
    builders.submission(
        folder, {"baseline": tiny_models["baseline"], "candidate": tiny_models["correct"]}, tiny_models["inputs"]
    )
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
    stored = [
        make_result("team-alpha", score=40, head_sha=sha, event_time=event, pr=3),
        make_result("team-beta", score=55, head_sha=sha, event_time=event, pr=4),  # no folder at that SHA
        make_result("team-alpha", score=30, head_sha="ab" * 20, event_time=event - timedelta(hours=1), pr=3),
    ]
    db = tmp_path / "grades.sqlite"
    with Store(db) as store:
        store.add_runs([(r, "test") for r in stored])
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER)
    return {"repo": repo, "sha": sha, "db": db, "assignments": assignments, "roster": roster, "tmp": tmp_path}


def grader(course: dict, *args: str, env: dict[str, str] = ENV) -> subprocess.CompletedProcess:
    common = ["--db", str(course["db"]), "--assignments", str(course["assignments"]), "--roster", str(course["roster"])]
    return subprocess.run(
        [sys.executable, "-m", "grader.cli", *args, *common],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        env=env,
    )


@pytest.fixture
def github(course: dict) -> dict:
    """The course repository as GitHub holds it, in a bare repository to serve over HTTP: main has
    only the base branch's commit; team-alpha's graded commit is reachable only as refs/pull/3/head
    (a PR from a fork). And a runner's clone of main as actions/checkout leaves it: full history of
    the branches, no pull refs, no stored credentials."""
    tmp = course["tmp"]
    bare = tmp / "github" / "course.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    base = tmp / "base"
    base.mkdir()
    (base / "README.md").write_text("course repository\n")
    git(base, "init", "-q")
    git(base, "-c", "user.name=staff", "-c", "user.email=s@example.com", "add", ".")
    git(base, "-c", "user.name=staff", "-c", "user.email=s@example.com", "commit", "-q", "-m", "base")
    git(base, "push", "-q", str(bare), "HEAD:refs/heads/main")
    git(course["repo"], "push", "-q", str(bare), f"{course['sha']}:refs/pull/3/head")
    clone = tmp / "runner"
    subprocess.run(["git", "clone", "-q", "--no-local", "--branch", "main", str(bare), str(clone)], check=True)
    assert subprocess.run(["git", "-C", str(clone), "cat-file", "-e", course["sha"]]).returncode != 0
    # every git command the grader runs, logged with its arguments, then run
    wrapper = tmp / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {tmp / "git-argv.log"}\nexec {shutil.which("git")} "$@"\n')
    wrapper.chmod(0o755)
    # no global or system git config: no credential helper answers the 401 in place of the token
    env = ENV | {
        "PATH": f"{wrapper.parent}:{os.environ['PATH']}",
        "HOME": str(tmp / "home"),
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return {"root": bare.parent, "clone": clone, "env": env, "argv_log": tmp / "git-argv.log"}


def fetch_step(course: dict, github: dict, tasks_path: Path, shard: int, token: str | None):
    env = github["env"] | ({"GITHUB_TOKEN": token} if token else {})
    # a course.yaml whose Docker runner has no image yet: fetching runs nothing, so it does not care
    settings = course["tmp"] / "course.yaml"
    settings.write_text("schema: 1\nrunner:\n  kind: docker\n")
    return grader(
        course,
        "regrade",
        "--repo-dir",
        str(github["clone"]),
        "--run-tasks",
        str(tasks_path),
        "--shard",
        str(shard),
        "--fetch-only",
        "--course",
        str(settings),
        env=env,
    )


def import_results(course: dict, *args: str, db: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grader.cli", "results", "import", *args, "--db", str(db or course["db"])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )


def have_commit(repo: Path, sha: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{sha}^{{commit}}"]).returncode == 0


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

    book = subprocess.run(
        [
            sys.executable,
            "-m",
            "grader.cli",
            "results",
            "runs",
            "--team",
            "team-alpha",
            "--db",
            str(course["db"]),
            "--assignments",
            str(course["assignments"]),
            "--roster",
            str(course["roster"]),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert f"{HW2}: {new['score']:g}" in book.stdout and "replaced" in book.stdout


def test_regrade_uses_todays_config(course: dict) -> None:
    """Raising a threshold after the fact changes the score of the same committed files."""
    tasks, skipped = regrade.select_tasks(_runs_frame(course), team="team-alpha")
    task = next(t for t in tasks if t.head_sha == course["sha"])
    before = regrade.regrade_one(task, course["repo"], course["assignments"], local_sandboxes).result
    path = course["assignments"] / HW2 / "assignment.yaml"
    config = yaml.safe_load(path.read_text())
    for check in config["checks"]:
        if check["id"] == "pruned":
            check["params"].update(min=0.95, zero=0.9)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    after = regrade.regrade_one(task, course["repo"], course["assignments"], local_sandboxes).result
    pruned = {r.id: r for r in after.checks}["pruned"]
    assert before.status == after.status == "graded"
    assert after.score < before.score and pruned.points == 0
    assert after.context.head_sha == course["sha"] and after.submission.path == f"submissions/team-alpha/{HW2}"


def _runs_frame(course: dict):
    from grader.gradebook.load import Sources, open_gradebook

    with Store(course["db"]) as store:
        return open_gradebook(
            Sources(db=course["db"], assignments=course["assignments"], roster=course["roster"]),
            store,
            with_metrics=False,
        ).runs


def test_a_regrade_that_errors_is_never_stored(course: dict) -> None:
    task = next(t for t in regrade.select_tasks(_runs_frame(course))[0] if t.head_sha == course["sha"])
    broken = course["assignments"] / HW2 / "assignment.yaml"
    config = yaml.safe_load(broken.read_text())
    config["checks"][1]["rule"] = "no-such-rule"  # staff typo: the grader's fault, status error
    broken.write_text(yaml.safe_dump(config, sort_keys=False))
    outcome = regrade.regrade_one(task, course["repo"], course["assignments"], local_sandboxes)
    assert outcome.result.status == "error"
    assert regrade.storable([outcome]) == []


def write_tasks(course: dict, shards: int) -> tuple[Path, dict]:
    tasks_path = course["tmp"] / "regrade" / "tasks.json"  # as README says; the folder is made
    done = grader(
        course, "regrade", "--repo-dir", str(course["repo"]), "--tasks", str(tasks_path), "--shards", str(shards)
    )
    assert done.returncode == 0, done.stderr
    return tasks_path, json.loads(tasks_path.read_text())


def test_fetch_step_authenticates_with_the_token_and_leaves_no_trace(course: dict, github: dict) -> None:
    tasks_path, data = write_tasks(course, 1)
    clone, sha = github["clone"], course["sha"]
    with githttp.serve(github["root"], TOKEN) as server:
        git(clone, "remote", "set-url", "origin", server.url("course.git"))

        refused = fetch_step(course, github, tasks_path, 0, token=None)
        assert refused.returncode == 5, refused.stdout + refused.stderr  # needed commits, fetched none
        assert "0 fetched (without a token), 2 missing" in refused.stdout and not have_commit(clone, sha)
        assert server.requests and not any(r.authorized for r in server.requests)

        server.requests.clear()
        done = fetch_step(course, github, tasks_path, 0, token=TOKEN)
        assert done.returncode == 0, done.stdout + done.stderr + str(server.requests)
        # team-alpha's and team-beta's tasks share the commit (fetched once, by refs/pull/3/head);
        # the third task's commit is on no ref and not on the server
        assert "1 fetched (with a token), 1 missing" in done.stdout
        assert f"not fetched: {'ab' * 20}" in done.stderr and have_commit(clone, sha)
        assert server.requests and all(r.authorized for r in server.requests)
        assert {r.authorization for r in server.requests} == {f"basic {BASIC}"}

    # the token was in git's environment only: in no file of the clone, on no command line
    assert "extraheader" not in (clone / ".git" / "config").read_text()
    for path in (clone / ".git").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert TOKEN.encode() not in content and BASIC.encode() not in content, path
    argv = github["argv_log"].read_text()
    assert "fetch --quiet origin pull/3/head" in argv and TOKEN not in argv and BASIC not in argv
    assert (
        subprocess.run(["git", "-C", str(clone), "config", "--get-regexp", "extraheader"], env=github["env"]).returncode
        == 1
    )  # git itself finds no such setting


def test_fetch_step_without_a_token_fetches_a_public_repository(course: dict, github: dict) -> None:
    tasks_path, data = write_tasks(course, 1)
    with githttp.serve(github["root"], token=None) as server:
        git(github["clone"], "remote", "set-url", "origin", server.url("course.git"))
        done = fetch_step(course, github, tasks_path, 0, token=None)
    assert done.returncode == 0 and "1 fetched (without a token), 1 missing" in done.stdout
    assert have_commit(github["clone"], course["sha"])
    assert not any(r.authorization for r in server.requests)


def test_a_runner_pool_shard_fetches_then_grades_offline_and_its_results_are_imported(
    course: dict, github: dict
) -> None:
    """The regrade workflow's steps for one shard, then the instructor's import of the artifact."""
    tasks_path, data = write_tasks(course, 2)
    assert data["matrix"] == {"shard": [0, 1]}
    assert sorted(t["shard"] for t in data["tasks"]) == [0, 0, 1]
    assert {t["head_sha"] for t in data["tasks"]} == {course["sha"], "ab" * 20}
    assert len(stored_runs(course)) == 3  # writing the matrix grades and stores nothing

    task = next(t for t in data["tasks"] if t["team"] == "team-alpha" and t["head_sha"] == course["sha"])
    with githttp.serve(github["root"], TOKEN) as server:
        git(github["clone"], "remote", "set-url", "origin", server.url("course.git"))
        fetched = fetch_step(course, github, tasks_path, task["shard"], token=TOKEN)
        assert fetched.returncode == 0 and "1 fetched" in fetched.stdout, fetched.stderr
    # the server is gone and the step has no token: grading needs neither
    out = course["tmp"] / "shard-out"
    ran = grader(
        course,
        "regrade",
        "--repo-dir",
        str(github["clone"]),
        "--run-tasks",
        str(tasks_path),
        "--shard",
        str(task["shard"]),
        "--out",
        str(out),
        "--runner",
        "local",
        "--jobs",
        "1",
        env=github["env"],
    )
    assert ran.returncode == 0, ran.stderr
    assert sorted(out.rglob("result.json")) == [out / str(task["run_id"]) / "result.json"]

    # gh run download RUN_ID -n regrade-results -D regraded: the shards' folders merged into one
    regraded = course["tmp"] / "regraded"
    shutil.copytree(out, regraded)
    imported = import_results(course, str(regraded), "--tasks", str(tasks_path))
    assert imported.returncode == 0 and "stored 1 new run(s)" in imported.stdout, imported.stderr
    runs = _runs_frame(course)
    assert (
        runs.loc[runs["current"] & (runs["head_sha"] == course["sha"]) & (runs["team"] == "team-alpha"), "score"].item()
        > 40
    )  # the runner's grading replaced the stored one
    again = import_results(course, str(regraded), "--tasks", str(tasks_path))
    assert again.returncode == 0 and "stored 0 new run(s); 1 already stored" in again.stdout


def test_import_with_the_tasks_file_takes_only_the_gradings_it_asked_for(course: dict, github: dict) -> None:
    """A runner that ran student code could write any well-formed result.json: with --tasks, a
    result must be the grading of one task (a moved event time would change lateness), once."""
    tasks_path, data = write_tasks(course, 1)
    task = next(t for t in data["tasks"] if t["team"] == "team-alpha" and t["head_sha"] == course["sha"])
    genuine = json.loads(
        make_result(
            "team-alpha", score=90, head_sha=course["sha"], pr=3, event_time=datetime.fromisoformat(task["event_time"])
        ).to_json()
    )
    folder = course["tmp"] / "incoming"

    def put(name: str, result: dict) -> None:
        (folder / name).mkdir(parents=True)
        (folder / name / "result.json").write_text(json.dumps(result))

    put("earlier", genuine | {"context": genuine["context"] | {"event_time": "2025-12-01T10:00:00Z"}})
    put("other-team", genuine | {"submission": genuine["submission"] | {"team": "team-beta"}})
    put("other-commit", genuine | {"context": genuine["context"] | {"head_sha": "cd" * 20}})
    # each forgery alone passes the schema and plausibility checks: without --tasks it would be stored
    scratch = course["tmp"] / "scratch.sqlite"
    plain = import_results(course, str(folder / "earlier"), db=scratch)
    assert plain.returncode == 0 and "stored 1 new run(s)" in plain.stdout

    refused = import_results(course, str(folder), "--tasks", str(tasks_path))
    assert refused.returncode == 3 and "stored 0 new run(s)" in refused.stdout
    assert refused.stderr.count("is not the grading of any task in the tasks file") == 3

    shutil.rmtree(folder)
    put("1", genuine)
    put("2", genuine | {"score": 100.0})
    twice = import_results(course, str(folder), "--tasks", str(tasks_path))
    assert twice.returncode == 3 and twice.stderr.count(f"2 results claim task {task['run_id']}") == 2
    assert len(stored_runs(course)) == 3

    broken = import_results(course, str(folder), "--tasks", str(folder / "1" / "result.json"))
    assert broken.returncode == 2 and "not a valid tasks file" in broken.stderr


def head_task(repo: Path) -> regrade.Task:
    """A regrade task for team-alpha's hw2 folder at the repository's HEAD, outside any PR."""
    return regrade.Task(
        run_id=1,
        team="team-alpha",
        assignment=HW2,
        head_sha=git(repo, "rev-parse", "HEAD"),
        repository=None,
        pr_number=None,
        event_time=None,
        old_status="graded",
        old_score=0,
    )


def test_checkout_refuses_paths_outside_the_folder(course: dict, tmp_path: Path) -> None:
    """``git archive`` output is extracted with tarfile's 'data' filter: a committed symlink
    pointing out of the folder is refused rather than followed."""
    repo = course["repo"]
    folder = repo / "submissions" / "team-alpha" / HW2
    git(repo, "checkout", "-q", "--", ".")
    (folder / "escape").symlink_to("/etc/passwd")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "link")
    task = head_task(repo)
    outcome = regrade.regrade_one(task, repo, course["assignments"], local_sandboxes)
    assert outcome.result_json is None and "escape" in outcome.problem


def test_a_regraded_manifest_naming_another_team_is_filed_under_its_folder_not_that_team(
    course: dict, tiny_models: dict[str, Path]
) -> None:
    """A submission.yaml in team-beta's folder that says team-alpha must not put a grade on team-alpha's row."""
    repo = course["repo"]
    folder = repo / "submissions" / "team-beta" / HW2
    builders.submission(
        folder,
        {"baseline": tiny_models["baseline"], "candidate": tiny_models["correct"]},
        tiny_models["inputs"],
        team="team-alpha",
    )
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "add", str(folder))
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "team-beta hw2")
    task = regrade.Task(
        run_id=9,
        team="team-beta",
        assignment=HW2,
        head_sha=git(repo, "rev-parse", "HEAD"),
        repository="course/grading",
        pr_number=4,
        event_time=None,
        old_status="graded",
        old_score=55,
    )
    outcome = regrade.regrade_one(task, repo, course["assignments"], local_sandboxes)
    result = outcome.result
    assert result is not None, outcome.problem
    assert result.submission.team == "team-beta" and result.status == "rejected"
    assert "says team 'team-alpha'" in result.problems[0].message
    assert result.score == 0


def test_parallel_gradings_get_cores_of_their_own() -> None:
    import os

    from grader.gradebook.regrade import core_slices, pinned_pool

    assert core_slices(2, [0, 1, 2, 3]) == [[0, 1], [2, 3]]
    assert core_slices(3, [0, 1, 2, 3, 4, 5, 6]) == [[0, 1], [2, 3], [4, 5, 6]]
    assert core_slices(4, [5, 7]) == [[5], [7], [5], [7]]  # more jobs than cores: one core each
    cores = sorted(os.sched_getaffinity(0))
    workers = min(2, len(cores))
    with pinned_pool(workers) as pool:
        seen = {pid: cpus for pid, cpus in pool.map(_affinity_after, [0.5] * workers)}
    assert len(seen) == workers  # each process ran one of the waits
    assert sorted(sorted(c) for c in seen.values()) == sorted(core_slices(workers, cores))


def _affinity_after(seconds: float) -> tuple[int, set[int]]:
    import os
    import time

    time.sleep(seconds)
    return os.getpid(), os.sched_getaffinity(0)


def test_a_git_lfs_model_is_regraded_as_the_file_not_its_pointer(course: dict) -> None:
    """``git archive`` writes an LFS file's pointer; the regrade grades the object git-lfs keeps in
    ``.git/lfs/objects`` (put there as git-lfs stores it), and without it is an error, never a grade."""
    import hashlib
    import shutil

    from grader.contracts.lfs import pointer_text

    repo = course["repo"]
    folder = repo / "submissions" / "team-alpha" / HW2
    git(repo, "checkout", "-q", "--", ".")
    model = (folder / "candidate.onnx").read_bytes()
    oid = hashlib.sha256(model).hexdigest()
    (folder / "candidate.onnx").write_bytes(pointer_text(oid, len(model)))
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "candidate via LFS")
    task = head_task(repo)
    missing = regrade.regrade_one(task, repo, course["assignments"], local_sandboxes)
    assert (
        missing.result_json is None and "stored with Git LFS" in missing.problem and "candidate.onnx" in missing.problem
    )

    store = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4]
    store.mkdir(parents=True)
    (store / oid).write_bytes(model[:-1] + b"\0")  # corrupt: the hash no longer matches
    assert "stored with Git LFS" in regrade.regrade_one(task, repo, course["assignments"], local_sandboxes).problem
    (store / oid).write_bytes(model)
    out = course["tmp"] / "checked-out"
    checked = regrade.checkout_submission(repo, task, out)
    assert (checked / "candidate.onnx").read_bytes() == model
    graded = regrade.regrade_one(task, repo, course["assignments"], local_sandboxes)
    result = Result.model_validate_json(graded.result_json)
    assert result.status == "graded" and not result.problems  # graded on the model: no pointer reached the grader
    assert next(c for c in result.checks if c.id == "loads").status == "pass"
    shutil.rmtree(out)
