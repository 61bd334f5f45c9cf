"""``grader ci`` as the workflow runs it: real processes, GitHub's environment variables, a fake API.

Every ``grader ci`` process here runs with torch, numpy, onnx and onnxruntime made unimportable,
as in the workflow's GitHub-hosted jobs, which install only .github/grader-ci-requirements.txt.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

from grader.ci.collect import artifact_name
from grader.contracts.result import RunContext
from grader.report import machine
from tests import builders
from tests.fakegithub import FakeGitHub, FakePull, FakeRepo
from tests.results import HW2, graded_result

ROOT = Path(__file__).resolve().parent.parent
BOT = "github-actions[bot]"
REPO = "course/grading"
FOLDER = f"submissions/team-alpha/{HW2}"
RUN_ID = 77
ROSTER = (
    "schema: 1\nteams:\n  team-alpha:\n    members:\n      - {github: octocat}\n"
    "  team-beta:\n    members:\n      - {github: hubot}\n"
)
MODULE_OF = {"scikit-learn": "sklearn", "pyyaml": "yaml", "pygithub": "github"}
LIGHT_RUNNER = """
import importlib.abc, sys
HEAVY = set(sys.argv[1].split(","))
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HEAVY:
            raise ImportError(f"{name} is not installed in the workflow's light jobs")
sys.meta_path.insert(0, NotInstalled())
from grader.cli import main
sys.exit(main(sys.argv[2:]))
"""


def distribution(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def heavy_modules() -> list[str]:
    """The project's core dependencies that the light jobs do not install, as module names."""
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (ROOT / ".github/grader-ci-requirements.txt").read_text().splitlines()
    light = {distribution(line) for line in lines if line.strip() and not line.startswith("#")}
    return sorted(MODULE_OF.get(d, d) for d in map(distribution, core) if d not in light)


def test_the_light_requirements_cover_the_ci_commands_and_are_pinned() -> None:
    heavy = heavy_modules()
    assert {"torch", "numpy", "onnx", "onnxruntime"} <= set(heavy)
    lines = [
        line
        for line in (ROOT / ".github/grader-ci-requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines and all("==" in line for line in lines)
    assert "pygithub" in {distribution(line) for line in lines}


@dataclass
class Course:
    """A course repository on the fake API, and the files a workflow run would have."""

    fake: FakeGitHub
    repo: FakeRepo
    tmp: Path
    roster: Path
    assignments: Path

    def env(self, pull: FakePull, token: str = "bot-token", event: dict | None = None) -> dict[str, str]:
        event_path = self.tmp / f"event-{pull.number}-{pull.head_sha[:8]}.json"
        event_path.write_text(json.dumps(event or self.fake.event(self.repo, pull)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
        env.update(
            GITHUB_EVENT_NAME="pull_request_target",
            GITHUB_EVENT_PATH=str(event_path),
            GITHUB_REPOSITORY=REPO,
            GITHUB_RUN_ID=str(RUN_ID),
            GITHUB_RUN_ATTEMPT="1",
            GITHUB_SERVER_URL="https://github.test",
            GITHUB_API_URL=self.fake.url,
            GITHUB_OUTPUT=str(self.tmp / "output"),
            GITHUB_STEP_SUMMARY=str(self.tmp / "summary.md"),
            GITHUB_TOKEN=token,
        )
        return env

    def ci(
        self, step: str, pull: FakePull, *args: str, token: str = "bot-token", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        options = ["--api-spacing", "0", "--api-backoff", "0.01", "--api-attempts", "3"] if step != "context" else []
        policy = ["--roster", str(self.roster), "--assignments", str(self.assignments)] if step != "context" else []
        command = [sys.executable, "-c", LIGHT_RUNNER, ",".join(heavy_modules()), "ci", step, *policy, *options, *args]
        done = subprocess.run(
            command, cwd=ROOT, env=env or self.env(pull, token), capture_output=True, text=True, timeout=300
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def outputs(self) -> dict[str, str]:
        lines = (self.tmp / "output").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)

    def bot_comments(self, pull: FakePull) -> list[dict]:
        return [c for c in self.fake.comments(self.repo, pull.number) if c["login"] == BOT]

    def artifact(self, pull: FakePull, result_json: str) -> Path:
        path = self.tmp / f"artifact-{pull.head_sha[:8]}" / "result.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(result_json)
        return path

    def context(self, pull: FakePull) -> RunContext:
        done = self.ci("context", pull)
        assert done.returncode == 0, done.stderr
        return RunContext.model_validate_json(done.stdout)


@pytest.fixture
def course(fake_github: FakeGitHub, tmp_path: Path) -> Course:
    fake_github.add_token("bot-token", BOT, write=True)
    fake_github.add_token("read-token", BOT, write=False)
    repo = fake_github.add_repo(
        REPO,
        {
            "roster.yaml": ROSTER.encode(),
            "grader/cli.py": b"print()\n",
            ".github/workflows/grade.yml": b"on: pull_request_target\n",
        },
    )
    roster = tmp_path / "roster.yaml"
    roster.write_text(ROSTER)
    return Course(fake_github, repo, tmp_path, roster, ROOT / "assignments")


def submission_files(folder: Path, prefix: str = FOLDER) -> dict[str, bytes]:
    return {f"{prefix}/{p.relative_to(folder)}": p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_pull_request_from_policy_to_an_edited_comment(course: Course, tiny_models, fast_root: Path) -> None:
    """The whole workflow: policy, context, the real grader, publish; then a second push edits the comment."""
    course.assignments = fast_root
    folder = builders.submission(
        course.tmp / FOLDER,
        {"baseline": tiny_models["baseline"], "candidate": tiny_models["correct"]},
        tiny_models["inputs"],
        claims={"quantization": "int8", "sparsity": 0.6},
    )
    pull = course.fake.open_pull(course.repo, "octocat", submission_files(folder), association="FIRST_TIME_CONTRIBUTOR")

    policy = course.ci(
        "policy", pull, "--gate", "first-time", "--out", str(course.tmp / "decision.json"), token="read-token"
    )
    assert policy.returncode == 0, policy.stderr
    assert json.loads((course.tmp / "decision.json").read_text())["needs_approval"] is True
    assert course.outputs() == {
        "decision": "grade",
        "folder": FOLDER,
        "team": "team-alpha",
        "assignment": HW2,
        "environment": "grading-approval",
        "runs_today": "",
    }  # hw2 has no runs-per-day limit
    assert course.fake.requests("POST") == [] and course.fake.requests("PATCH") == []

    context = course.context(pull)
    assert (context.pr_number, context.head_sha, context.run_id) == (pull.number, pull.head_sha, RUN_ID)
    assert context.event_time == pull.updated_at and context.run_url == f"https://github.test/{REPO}/actions/runs/77"
    (course.tmp / "context.json").write_text(context.model_dump_json())
    out = course.tmp / "out"
    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "grader.cli",
            "check",
            str(folder),
            "--assignments",
            str(fast_root),
            "--context",
            str(course.tmp / "context.json"),
            "--out",
            str(out),
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    done = course.ci("publish", pull, "--artifact", str(out / "result.json"), "--grade-outcome", "success")
    assert done.returncode == 0, done.stderr
    [comment] = course.bot_comments(pull)
    assert comment["body"].startswith(f"<!-- compression-grader:v1 team=team-alpha assignment={HW2} -->")
    block = machine.decode(comment["body"])
    assert block["status"] == "graded" and block["context"]["head_sha"] == pull.head_sha
    [status] = course.repo.statuses[pull.head_sha]
    assert status["state"] == "success" and status["context"] == f"compression-grader/{HW2}"
    assert status["description"] == f"Graded: {block['score']:g} / 100 points"
    assert comment["body"].rstrip() in (course.tmp / "summary.md").read_text()

    first_event = course.fake.event(course.repo, pull)
    course.fake.push(course.repo, pull, {f"{FOLDER}/NOTES.md": b"second push\n"})
    regraded = json.loads((out / "result.json").read_text())
    regraded["context"] = json.loads(course.context(pull).model_dump_json())
    artifact = course.artifact(pull, json.dumps(regraded))
    done = course.ci("publish", pull, "--artifact", str(artifact), "--grade-outcome", "success")
    assert done.returncode == 0, done.stderr
    [edited] = course.bot_comments(pull)
    assert edited["id"] == comment["id"] and machine.decode(edited["body"])["context"]["head_sha"] == pull.head_sha
    assert course.repo.statuses[pull.head_sha][0]["state"] == "success"

    writes = len(course.fake.requests("PATCH")) + len(course.fake.requests("POST"))
    stale = course.ci("publish", pull, "--artifact", str(out / "result.json"), env=course.env(pull, event=first_event))
    assert stale.returncode == 0 and "stale" in stale.stdout
    assert len(course.fake.requests("PATCH")) + len(course.fake.requests("POST")) == writes


def test_a_pr_touching_the_workflows_is_refused_then_graded_once_fixed(course: Course) -> None:
    pull = course.fake.open_pull(
        course.repo,
        "octocat",
        {
            f"{FOLDER}/submission.yaml": b"schema: 1\n",
            ".github/workflows/grade.yml": b"on: pull_request\njobs: {steal: {runs-on: gpu}}\n",
        },
    )
    policy = course.ci("policy", pull, token="read-token")
    assert policy.returncode == 0 and course.outputs()["decision"] == "refuse"
    assert ".github/workflows/grade.yml" in (course.tmp / "summary.md").read_text()

    done = course.ci("publish", pull, "--artifact", str(course.tmp / "none" / "result.json"))
    assert done.returncode == 0, done.stderr
    [comment] = course.bot_comments(pull)
    assert comment["body"].startswith("<!-- compression-grader:v1 policy -->")
    assert "Not graded" in comment["body"] and ".github/workflows/grade.yml" in comment["body"]
    assert [(s["context"], s["state"]) for s in course.repo.statuses[pull.head_sha]] == [
        ("compression-grader/policy", "failure")
    ]

    course.fake.push(course.repo, pull, {".github/workflows/grade.yml": b"on: pull_request_target\n"})
    artifact = course.artifact(pull, graded_result(course.context(pull), lose=10).to_json())
    done = course.ci("publish", pull, "--artifact", str(artifact), "--grade-outcome", "success")
    assert done.returncode == 0, done.stderr
    policy_comment, grade_comment = course.bot_comments(pull)
    assert policy_comment["id"] == comment["id"] and "rules are met" in policy_comment["body"]
    assert "90 / 100" in grade_comment["body"]


def test_another_teams_folder_is_refused_and_hostile_names_are_escaped(course: Course) -> None:
    hostile = f"submissions/team-beta/{HW2}/<img src=x onerror=alert(1)>@mona [x](https://evil.test).onnx"
    pull = course.fake.open_pull(course.repo, "octocat", {hostile: b"x"})
    done = course.ci("publish", pull, "--artifact", str(course.tmp / "none.json"))
    assert done.returncode == 0, done.stderr
    [comment] = course.bot_comments(pull)
    body = comment["body"]
    assert "team-beta" in body and "team-alpha" in body
    assert "<img" not in body and "@mona" not in body and "](https://" not in body
    assert course.repo.statuses[pull.head_sha][0]["state"] == "failure"


def test_a_symlink_in_the_submission_is_refused(course: Course) -> None:
    from tests.fakegithub import symlink

    pull = course.fake.open_pull(
        course.repo,
        "octocat",
        {f"{FOLDER}/submission.yaml": b"schema: 1\n", f"{FOLDER}/model.onnx": symlink("/etc/shadow")},
    )
    assert course.ci("policy", pull, token="read-token").returncode == 0
    assert course.outputs()["decision"] == "refuse"
    assert course.ci("publish", pull, "--artifact", str(course.tmp / "none.json")).returncode == 0
    assert "Symbolic links" in course.bot_comments(pull)[0]["body"]


@pytest.mark.parametrize("case", ["too-big", "malformed", "other-pr", "missing"])
def test_an_untrustworthy_artifact_becomes_an_error_report_not_charged(course: Course, case: str) -> None:
    pull = course.fake.open_pull(course.repo, "octocat", {f"{FOLDER}/submission.yaml": b"schema: 1\n"})
    context = RunContext(repository=REPO, pr_number=pull.number, head_sha=pull.head_sha, run_id=RUN_ID)
    good = graded_result(context)
    text = {
        "too-big": good.to_json() + " " * (5 * 2**20),
        "malformed": '{"status": "graded", "score": 100',
        "other-pr": graded_result(context.model_copy(update={"pr_number": 2})).to_json(),
    }.get(case)
    artifact = course.artifact(pull, text) if text is not None else course.tmp / "absent" / "result.json"
    outcome = "failure" if case == "missing" else "success"
    done = course.ci("publish", pull, "--artifact", str(artifact), "--grade-outcome", outcome)
    assert done.returncode == 0, done.stderr
    [comment] = course.bot_comments(pull)
    assert "not charged to you" in comment["body"] and "100 / 100" not in comment["body"]
    reason = {"too-big": "cap", "malformed": "schema", "other-pr": "belongs to", "missing": "failed before"}[case]
    assert reason in comment["body"]
    [status] = course.repo.statuses[pull.head_sha]
    assert status["state"] == "error" and "not charged" in status["description"]


def test_a_re_run_posts_the_result_of_the_attempt_that_last_graded(course: Course) -> None:
    """Attempt 2 re-ran the grading job, which failed before writing a result: the artifact still
    holds attempt 1's result, which must not be posted as attempt 2's grade."""
    pull = course.fake.open_pull(course.repo, "octocat", {f"{FOLDER}/submission.yaml": b"schema: 1\n"})
    env = {**course.env(pull), "GITHUB_RUN_ATTEMPT": "2"}
    second = RunContext.model_validate_json(course.ci("context", pull, env=env).stdout)
    assert second.run_attempt == 2 and second.run_id == RUN_ID
    first = second.model_copy(update={"run_attempt": 1})
    stale = course.artifact(pull, graded_result(first).to_json())
    done = course.ci("publish", pull, "--artifact", str(stale), "--grade-outcome", "failure", "--grade-attempt", "2")
    assert done.returncode == 0, done.stderr
    [comment] = course.bot_comments(pull)
    assert "from attempt 1 of run" in comment["body"] and "not charged to you" in comment["body"]

    fresh = course.artifact(pull, graded_result(second).to_json())
    done = course.ci("publish", pull, "--artifact", str(fresh), "--grade-outcome", "success", "--grade-attempt", "2")
    assert done.returncode == 0, done.stderr
    [comment] = course.bot_comments(pull)  # the same comment, now the grade
    assert machine.decode(comment["body"])["status"] == "graded"
    assert machine.decode(comment["body"])["context"]["run_attempt"] == 2


def test_usage_errors_and_outages_end_with_documented_exit_codes(course: Course) -> None:
    pull = course.fake.open_pull(course.repo, "octocat", {f"{FOLDER}/submission.yaml": b"schema: 1\n"})
    no_token = course.env(pull)
    no_token.pop("GITHUB_TOKEN")
    done = course.ci("policy", pull, env=no_token)
    assert done.returncode == 2 and "GITHUB_TOKEN" in done.stderr
    push_event = {**course.env(pull), "GITHUB_EVENT_NAME": "push"}
    done = course.ci("publish", pull, "--artifact", "x", env=push_event)
    assert done.returncode == 2 and "pull_request_target" in done.stderr

    course.fake.fail(method="*", path=".*", status=503, times=1000)
    done = course.ci("publish", pull, "--artifact", "x")
    assert done.returncode == 4 and "503" in done.stderr
    assert course.fake.comments(course.repo, pull.number) == []


def test_a_rejected_submission_is_reported_with_what_to_fix(course: Course) -> None:
    from tests.results import rejected_result

    pull = course.fake.open_pull(course.repo, "octocat", {f"{FOLDER}/submission.yaml": b"schema: 1\n"})
    artifact = course.artifact(pull, rejected_result(course.context(pull)).to_json())
    done = course.ci("publish", pull, "--artifact", str(artifact), "--grade-outcome", "success")
    assert done.returncode == 0, done.stderr
    [comment] = course.bot_comments(pull)
    assert comment["body"].startswith(f"<!-- compression-grader:v1 team=team-alpha assignment={HW2} -->")
    assert "### What to fix" in comment["body"] and "List your models." in comment["body"]
    [status] = course.repo.statuses[pull.head_sha]
    assert status["state"] == "failure" and "what to fix" in status["description"]


def test_publish_restamps_the_event_time_from_its_own_event(course: Course) -> None:
    """A result claiming an earlier event time (to dodge a deadline) is published with the event's time."""
    pull = course.fake.open_pull(course.repo, "octocat", {f"{FOLDER}/submission.yaml": b"schema: 1\n"})
    context = RunContext(
        repository=REPO, pr_number=pull.number, head_sha=pull.head_sha, run_id=RUN_ID, event_time="2020-01-01T00:00:00Z"
    )
    artifact = course.artifact(pull, graded_result(context).to_json())
    done = course.ci("publish", pull, "--artifact", str(artifact), "--grade-outcome", "success")
    assert done.returncode == 0, done.stderr
    block = machine.decode(course.bot_comments(pull)[0]["body"])
    assert block["status"] == "graded"
    assert RunContext.model_validate(block["context"]).event_time == pull.updated_at


FINAL = "final-project"


def published_run(
    course: Course, author: str, team: str = "team-alpha", status: str = "graded", event_time=None
) -> None:
    """An earlier PR of ``author`` graded for ``team``: its result artifact, as grade.yml uploads it."""
    pull = course.fake.open_pull(course.repo, author, {f"submissions/{team}/{FINAL}/notes.md": b"an earlier run\n"})
    context = RunContext(
        repository=REPO,
        pr_number=pull.number,
        head_sha=pull.head_sha,
        event_time=event_time or pull.updated_at,
        run_id=RUN_ID + 100 + pull.number,  # each grading is its own workflow run
    )
    result = graded_result(context, team=team, assignment=FINAL).model_copy(update={"status": status})
    course.fake.add_artifact(
        course.repo, artifact_name(team, FINAL), {"result.json": result.to_json().encode()}, run_id=context.run_id
    )


def test_the_runs_per_day_limit_keeps_a_pr_off_the_runner_and_says_when_to_try_again(course: Course) -> None:
    """final-project allows 3 graded runs a day; the policy job counts them from the result artifacts."""
    from datetime import timedelta

    for _ in range(2):
        published_run(course, "octocat")
    published_run(course, "octocat", status="error")  # an infrastructure fault is charged to nobody
    published_run(course, "hubot", team="team-alpha")  # forged: hubot's PR cannot spend team-alpha's runs
    published_run(course, "octocat", event_time=course.fake.clock - timedelta(days=1))  # yesterday's
    for _ in range(3):  # another team's runs: never even downloaded (one listing by exact name)
        published_run(course, "hubot", team="team-beta")
    forged = graded_result(
        RunContext(repository=REPO, pr_number=1, head_sha="e" * 40, event_time=course.fake.clock, run_id=3),
        team="team-alpha",
        assignment=FINAL,
    )  # a PR's own pull_request workflow uploading under grade.yml's name, to use up team-alpha's runs
    course.fake.add_artifact(
        course.repo,
        artifact_name("team-alpha", FINAL),
        {"result.json": forged.to_json().encode()},
        run_id=3,
        workflow=".github/workflows/spend.yml",
        event="pull_request",
    )
    broken = {"result.json": b"{not json\n::error::forged"}
    course.fake.add_artifact(course.repo, artifact_name("team-alpha", FINAL), broken, run_id=1)  # counts for nobody
    files = {f"submissions/team-alpha/{FINAL}/submission.yaml": b"schema: 1\n"}
    pull = course.fake.open_pull(course.repo, "octocat", files)

    policy = course.ci("policy", pull, token="read-token")
    assert policy.returncode == 0, policy.stderr
    assert course.outputs()["decision"] == "grade" and course.outputs()["runs_today"] == "2"
    assert len(course.fake.requests("GET", r".*/actions/artifacts/\d+/zip")) == 6  # team-alpha's graded six
    warnings = [line for line in policy.stderr.splitlines() if "::warning::" in line]
    assert any("spend.yml" in w and "not by .github/workflows/grade.yml" in w for w in warnings)
    [warning] = [w for w in warnings if "spend.yml" not in w]
    assert warning.startswith("::warning::runs-per-day count: artifact result-team-alpha-final-project #")
    assert "::error::" not in policy.stderr.replace(warning, "")  # the file's text stays on the warning's line

    published_run(course, "octocat")  # a third graded run today
    (course.tmp / "output").unlink()
    course.fake.push(course.repo, pull, {f"submissions/team-alpha/{FINAL}/notes.md": b"tuned again\n"})
    assert course.ci("policy", pull, token="read-token").returncode == 0
    outputs = course.outputs()
    assert (outputs["decision"], outputs["runs_today"], outputs["team"]) == ("limited", "3", "team-alpha")
    assert "used up" in (course.tmp / "summary.md").read_text()

    done = course.ci(
        "publish",
        pull,
        "--artifact",
        str(course.tmp / "none" / "result.json"),
        "--grade-outcome",
        "skipped",
        "--policy-decision",
        "limited",
        "--runs-today",
        "3",
    )
    assert done.returncode == 0 and "limited" in done.stdout, done.stdout + done.stderr
    [comment] = course.bot_comments(pull)
    assert comment["body"].startswith("<!-- compression-grader:v1 policy -->")
    assert f"today's runs of {FINAL} are used up" in comment["body"]
    assert "3 graded run(s)" in comment["body"] and "2026-12-01 00:00 UTC" in comment["body"]
    [status] = course.repo.statuses[pull.head_sha]
    assert status["state"] == "failure" and "used up" in status["description"]
