"""The course-repository smoke test: a throwaway course repository made with the set-up script,
then grade.yml's three jobs run as GitHub runs them, step by step, against the fake GitHub API and
a real Docker engine, for a fork's pull request through a push, a cancelled run, a re-run and
staff collecting the results. Every PR ends with exactly one report comment and the right status.

The jobs' steps are run the way the workflow runs them: ``grader ci`` in the light environment
(no torch, numpy, onnx or onnxruntime) from the course repository's own copy of the grader,
``grader check --runner docker`` for the grading, grade.yml's own clean-up script, and the
upload as upload-artifact v4 does it (a second upload of a name in one run is refused unless
``overwrite``). What only GitHub does is said where it happens (the event, the artifact store).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grader.ci.collect import artifact_name
from grader.report import machine
from grader.sandbox.docker import LABEL, OWNER_ENV
from tests import builders
from tests.fakegithub import FakeGitHub, FakePull, FakeRepo
from tests.test_ci_cli import LIGHT_RUNNER, heavy_modules
from tests.test_docker_cancel import owned, wait_for_running_container

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "new_course_repo.py"
REPO = "course/compression"
BOT = "github-actions[bot]"
HW2 = "hw2-quantization-pruning"
FOLDER = f"submissions/team-alpha/{HW2}"
# what an admin passes: the image pushed to a registry, by digest. The registry-free test image built
# here has no registry digest, so the gradings below run it by its local name (course.yaml).
PINNED_IMAGE = "ghcr.io/course/compression-grader@sha256:" + "ab" * 32
ROSTER = "schema: 1\nteams:\n  team-alpha:\n    members:\n      - {github: octocat}\n"


@pytest.fixture(scope="module", autouse=True)
def _engine_to_ourselves():  # noqa: ANN202
    from tests.docker_host import engine_to_ourselves

    yield from engine_to_ourselves()


def test_the_set_up_script_copies_what_the_admin_guide_lists() -> None:
    """docs/admins.md's step 1 and the script name the same files, so either can be followed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("new_course_repo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    guide = (ROOT / "docs" / "admins.md").read_text()
    step = guide[guide.index("1. **Copy**") : guide.index("2. **Roster**")]
    named = set(re.findall(r"`([^`\s]+)`", step.split("does this step")[0].rsplit("`python scripts", 1)[0]))
    assert named == set(module.COURSE_FILES)


class Run:
    """One workflow run of grade.yml (run id, attempt), its jobs' steps as functions."""

    def __init__(self, course: Course, pull: FakePull, run_id: int, attempt: int = 1) -> None:
        self.course, self.pull, self.run_id, self.attempt = course, pull, run_id, attempt
        self.event = course.fake.event(course.repo, pull)  # what GitHub froze for this run
        self.tmp = course.tmp / f"run-{run_id}-{attempt}"
        self.tmp.mkdir()
        self.outputs: dict[str, str] = {}

    def env(self, token: str | None = None, **extra: str) -> dict[str, str]:
        event_path = self.tmp / "event.json"
        event_path.write_text(json.dumps(self.event))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", OWNER_ENV))}
        env.update(
            GITHUB_EVENT_NAME="pull_request_target",
            GITHUB_EVENT_PATH=str(event_path),
            GITHUB_REPOSITORY=REPO,
            GITHUB_RUN_ID=str(self.run_id),
            GITHUB_RUN_ATTEMPT=str(self.attempt),
            GITHUB_SERVER_URL="https://github.test",
            GITHUB_API_URL=self.course.fake.url,
            GITHUB_OUTPUT=str(self.tmp / "output"),
            GITHUB_STEP_SUMMARY=str(self.tmp / "summary.md"),
            **extra,
        )
        if token:
            env["GITHUB_TOKEN"] = token
        return env

    def ci(self, step: str, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
        """``grader ci STEP`` from the course repository's checkout, in the light environment."""
        options = ["--roster", "roster.yaml", "--assignments", str(self.course.assignments)]
        options += ["--api-spacing", "0", "--api-backoff", "0.01"]
        command = [sys.executable, "-c", LIGHT_RUNNER, ",".join(heavy_modules()), "ci", step]
        command += [*(options if step != "context" else []), *args]
        done = subprocess.run(
            command, cwd=self.course.checkout, env=self.env(token), capture_output=True, text=True, timeout=300
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done

    # --- job: policy ------------------------------------------------------------------------
    def policy(self) -> str:
        done = self.ci("policy", token="read-token")
        assert done.returncode == 0, done.stderr
        self.outputs = dict(line.split("=", 1) for line in (self.tmp / "output").read_text().splitlines())
        return self.outputs["decision"]

    # --- job: grade -------------------------------------------------------------------------
    def grade(self, cancel: bool = False) -> int:
        """Check out the approved folder at the approved commit (as files), record the context,
        grade in the container, upload, and run grade.yml's clean-up step; ``cancel`` stops the
        grading as the runner's cancel does, while its container runs."""
        pr = self.tmp / "pr"
        for path, entry in self.pull.head_files.items():
            if path.startswith(self.outputs["folder"] + "/"):
                (pr / path).parent.mkdir(parents=True, exist_ok=True)
                (pr / path).write_bytes(entry.content)
        context = self.ci("context", "--out", str(self.tmp / "context.json"))
        assert context.returncode == 0, context.stderr
        owner = f"grade-{self.run_id}-{self.attempt}"
        command = [sys.executable, "-m", "grader.cli", "check", str(pr / self.outputs["folder"])]
        command += ["--assignments", str(self.course.assignments), "--course", str(self.course.course_yaml)]
        command += ["--runner", "docker", "--context", str(self.tmp / "context.json"), "--out", str(self.tmp / "out")]
        command += ["--quiet"]
        env = {**self.env(), OWNER_ENV: owner}
        grading = subprocess.Popen(
            command, cwd=self.course.checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        if cancel:
            wait_for_running_container(self.course.docker, owner, grading)
            grading.send_signal(signal.SIGINT)
        _, stderr = grading.communicate(timeout=600)
        result = self.tmp / "out" / "result.json"
        if result.exists():  # upload-artifact, overwrite: true
            name = artifact_name(self.outputs["team"], self.outputs["assignment"])
            self.course.fake.add_artifact(
                self.course.repo, name, {"result.json": result.read_bytes()}, self.run_id, overwrite=True
            )
        cleanup = subprocess.run(["bash", "-e", "-c", self.course.cleanup_script], env=env, capture_output=True)
        assert cleanup.returncode == 0, cleanup.stderr
        assert owned(self.course.docker, owner) == []
        assert "Traceback" not in stderr, stderr
        return grading.returncode

    # --- job: publish -----------------------------------------------------------------------
    def publish(self, grade_outcome: str = "success") -> subprocess.CompletedProcess:
        """Download this run's artifact (GitHub serves the run's own, latest upload) and post."""
        name = artifact_name(self.outputs["team"], self.outputs["assignment"])
        mine = [a for a in self.course.repo.artifacts if a["name"] == name and a["workflow_run"]["id"] == self.run_id]
        incoming = self.tmp / "incoming" / "result.json"
        if mine:
            incoming.parent.mkdir()
            incoming.write_bytes(next(iter(self.course.fake.blob_files(mine[-1]["id"]).values())))
        done = self.ci(
            "publish",
            "--artifact",
            str(incoming),
            "--grade-outcome",
            grade_outcome,
            "--policy-decision",
            self.outputs["decision"],
            "--grade-attempt",
            str(self.attempt),
            token="bot-token",
        )
        assert done.returncode == 0, done.stderr
        return done


class Course:
    def __init__(self, fake: FakeGitHub, tmp: Path, docker_client, docker_settings, assignments: Path) -> None:
        self.fake, self.tmp, self.docker, self.assignments = fake, tmp, docker_client, assignments
        self.checkout = tmp / "course"
        self._pr_started = False
        roster = tmp / "roster.yaml"
        roster.write_text(ROSTER)
        made = subprocess.run(
            [
                sys.executable,
                str(SCRIPT),
                str(self.checkout),
                "--image",
                PINNED_IMAGE,
                "--roster",
                str(roster),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert made.returncode == 0, made.stderr
        files = subprocess.run(
            ["git", "-C", str(self.checkout), "ls-files"], capture_output=True, text=True, check=True
        ).stdout.split()
        self.repo: FakeRepo = fake.add_repo(REPO, {p: (self.checkout / p).read_bytes() for p in files})
        fake.add_token("bot-token", BOT, write=True)
        fake.add_token("read-token", BOT, write=False)
        fake.add_token("staff-token", "prof", write=False)
        grade = yaml.safe_load((self.checkout / ".github/workflows/grade.yml").read_text())["jobs"]["grade"]
        self.image = grade["env"]["GRADER_IMAGE"]
        [step] = [s for s in grade["steps"] if "docker rm" in s.get("run", "")]
        self.cleanup_script = step["run"]
        self.course_yaml = tmp / "course.yaml"
        docker = docker_settings.model_dump()
        self.course_yaml.write_text(yaml.safe_dump({"schema": 1, "runner": {"kind": "docker", "docker": docker}}))

    def commit_pr(self, files: dict[str, bytes]) -> str:
        """The PR's head as a real commit in the course checkout (on branch pr-1, as ``git fetch
        origin pull/1/head`` leaves it), so a staff regrade can take it from git at its SHA."""
        git = ["git", "-C", str(self.checkout), "-c", "user.name=s", "-c", "user.email=s@invalid"]
        subprocess.run(
            [*git, "checkout", "-q", "-B", "pr-1", *(["pr-1"] if self._pr_started else ["main"])], check=True
        )
        self._pr_started = True
        for path, data in files.items():
            (self.checkout / path).parent.mkdir(parents=True, exist_ok=True)
            (self.checkout / path).write_bytes(data)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "submission"], check=True)
        sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run([*git, "checkout", "-q", "main"], check=True)
        return sha

    def comments(self, pull: FakePull) -> list[dict]:
        return [c for c in self.fake.comments(self.repo, pull.number) if c["login"] == BOT]


def test_a_fork_pr_from_first_push_to_collected_results(
    fake_github: FakeGitHub, docker_client, docker_settings, tiny_models, fast_root: Path, tmp_path: Path
) -> None:
    course = Course(fake_github, tmp_path, docker_client, docker_settings, fast_root)
    assert course.image == PINNED_IMAGE  # the script wrote the digest-pinned image into grade.yml
    folder = builders.submission(
        tmp_path / "work" / FOLDER,
        {"baseline": tiny_models["baseline"], "candidate": tiny_models["correct"]},
        tiny_models["inputs"],
        claims={"quantization": "int8", "sparsity": 0.6},
    )
    files = {f"{FOLDER}/{p.relative_to(folder)}": p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    pull = fake_github.open_pull(course.repo, "octocat", files, commit_sha=course.commit_pr(files))
    assert pull.head_repo == "octocat/compression"  # a fork

    # run 101: the PR is opened
    first = Run(course, pull, 101)
    assert first.policy() == "grade"
    assert first.grade() == 0
    first.publish()
    [comment] = course.comments(pull)
    assert machine.decode(comment["body"])["status"] == "graded"
    assert course.repo.statuses[pull.head_sha][-1]["state"] == "success"

    # run 102: a push; a third push cancels it mid-grading (cancel-in-progress): no upload, no publish
    tuned = {f"{FOLDER}/notes.md": b"tuned\n"}
    fake_github.push(course.repo, pull, tuned, commit_sha=course.commit_pr(tuned))
    cancelled = Run(course, pull, 102)
    assert cancelled.policy() == "grade"
    assert cancelled.grade(cancel=True) == 128 + signal.SIGINT
    assert not [a for a in course.repo.artifacts if a["workflow_run"]["id"] == 102]

    # run 103: the newest push grades and edits the one comment
    again = {f"{FOLDER}/notes.md": b"tuned again\n"}
    fake_github.push(course.repo, pull, again, commit_sha=course.commit_pr(again))
    third = Run(course, pull, 103)
    assert third.policy() == "grade" and third.grade() == 0
    third.publish()
    [edited] = course.comments(pull)
    assert edited["id"] == comment["id"]
    assert machine.decode(edited["body"])["context"]["head_sha"] == pull.head_sha
    assert course.repo.statuses[pull.head_sha][-1]["state"] == "success"

    # attempt 2 of run 103 ("Re-run all jobs"): the upload replaces attempt 1's, the comment follows
    rerun = Run(course, pull, 103, attempt=2)
    assert rerun.policy() == "grade" and rerun.grade() == 0
    assert len([a for a in course.repo.artifacts if a["workflow_run"]["id"] == 103]) == 1
    rerun.publish()
    [again] = course.comments(pull)
    assert again["id"] == comment["id"] and machine.decode(again["body"])["context"]["run_attempt"] == 2

    # staff collect every grading from the artifacts into the results store
    store = tmp_path / "grades.sqlite"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env["GITHUB_TOKEN"] = "staff-token"
    collected = subprocess.run(
        [sys.executable, "-m", "grader.cli", "results", "collect", "--repo", REPO, "--from", "artifacts"]
        + ["--api-url", fake_github.url, "--db", str(store)],
        cwd=course.checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    from grader.records.store import Store

    with Store(store) as db:
        runs = db.runs_frame()
    # runs 101 and 103 (its latest attempt): the cancelled run left nothing to count
    assert sorted(runs["head_sha"]) == sorted([first.event["pull_request"]["head"]["sha"], pull.head_sha])
    assert len(course.comments(pull)) == 1

    # a staff regrade of the stored gradings, from git at their SHAs, in the grading container
    regraded = subprocess.run(
        [sys.executable, "-m", "grader.cli", "regrade", "--db", str(store), "--yes", "--jobs", "1"]
        + ["--assignments", str(course.assignments), "--course", str(course.course_yaml), "--runner", "docker"],
        cwd=course.checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert regraded.returncode == 0, regraded.stdout + regraded.stderr
    assert "stored 2 new grading(s)" in regraded.stdout
    with Store(store) as db:
        after = db.runs_frame()
    redone = after[after["source"] == "regrade"]
    assert sorted(redone["head_sha"]) == sorted(runs["head_sha"]) and set(redone["status"]) == {"graded"}
    assert docker_client.api.containers(all=True, filters={"label": LABEL}) == []  # nothing left running
