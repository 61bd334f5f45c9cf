"""A cancelled grading against a real engine: GitHub's runner cancels a job with SIGINT, then
SIGTERM, then kills the process tree. Whichever of them ends the grader, no grading container
outlives the job: the grader removes it on a signal, and on a kill the workflow's ``if: always()``
step (run here from grade.yml itself) removes what this job's owner label marks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from grader.sandbox.docker import OWNER_ENV, OWNER_LABEL
from tests import builders

ROOT = Path(__file__).resolve().parent.parent
GRADE_WORKFLOW = ROOT / ".github" / "workflows" / "grade.yml"


@pytest.fixture(scope="module", autouse=True)
def _engine_to_ourselves():  # noqa: ANN202
    """No other Docker test module runs while this one does (see tests.docker_host.engine_to_ourselves)."""
    from tests.docker_host import engine_to_ourselves

    yield from engine_to_ourselves()


@pytest.fixture
def hanging_submission(tiny_models, tmp_path: Path) -> tuple[Path, Path]:
    """A submission whose candidate never finishes, under a two-minute limit: it is still running
    whenever the test stops the grader."""
    root = builders.fast_assignments(tmp_path / "assignments", wall_time_s=120)
    folder = builders.submission(
        tmp_path / "s",
        {"baseline": tiny_models["baseline"], "candidate": builders.hanging_model(tmp_path / "hang.onnx")},
        tiny_models["inputs"],
    )
    return folder, root


def start_grading(folder: Path, root: Path, settings, tmp_path: Path, owner: str) -> subprocess.Popen:
    course = tmp_path / "course.yaml"
    course.write_text(yaml.safe_dump({"schema": 1, "runner": {"kind": "docker", "docker": settings.model_dump()}}))
    command = [sys.executable, "-m", "grader.cli", "check", str(folder), "--out", str(tmp_path / "out")]
    command += ["--assignments", str(root), "--course", str(course), "--runner", "docker", "--quiet"]
    env = {**os.environ, OWNER_ENV: owner}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def owned(client, owner: str) -> list[dict]:
    """The owner's containers as the engine lists them (no per-container inspect, which races with
    a removal in progress)."""
    return client.api.containers(all=True, filters={"label": f"{OWNER_LABEL}={owner}"})


def wait_for_running_container(client, owner: str, grading: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(c["State"] == "running" for c in owned(client, owner)):
            return
        if grading.poll() is not None:
            raise AssertionError(f"the grading ended before its container ran: {grading.communicate()}")
        time.sleep(0.2)
    raise AssertionError("no grading container started")


@pytest.mark.parametrize(
    ("signals", "code"),
    [((signal.SIGTERM,), 128 + signal.SIGTERM), ((signal.SIGINT, signal.SIGTERM), 128 + signal.SIGINT)],
    ids=["sigterm", "sigint-then-sigterm"],
)
def test_a_stopped_grading_removes_its_container(
    docker_client, docker_settings, hanging_submission, tmp_path: Path, signals: tuple, code: int
) -> None:
    owner = f"test-{uuid.uuid4().hex[:8]}"
    grading = start_grading(*hanging_submission, docker_settings, tmp_path, owner)
    try:
        wait_for_running_container(docker_client, owner, grading)
        for number in signals:  # the runner's order; the second must not cut the clean-up short
            grading.send_signal(number)
            time.sleep(0.2)
        _, stderr = grading.communicate(timeout=60)
    finally:
        grading.kill()
        left = owned(docker_client, owner)
        for container in left:  # a failed run of this test must not leave its container to the next
            docker_client.api.remove_container(container["Id"], force=True)
    assert grading.returncode == code, stderr
    assert "Traceback" not in stderr and "stopped by SIG" in stderr
    assert owned(docker_client, owner) == []
    assert not (tmp_path / "out" / "result.json").exists()  # a cancelled run is no result


def test_the_workflow_clean_up_removes_what_a_killed_grading_left(
    docker_client, docker_settings, hanging_submission, tmp_path: Path
) -> None:
    """SIGKILL leaves the container running (the grader had no chance); grade.yml's clean-up step,
    run as the job would run it, removes that container and leaves another owner's alone."""
    owner, other = (f"test-{uuid.uuid4().hex[:8]}" for _ in range(2))
    grading = start_grading(*hanging_submission, docker_settings, tmp_path, owner)
    bystander = docker_client.containers.create(
        docker_settings.image, ["python", "-c", "pass"], labels={OWNER_LABEL: other}
    )
    try:
        wait_for_running_container(docker_client, owner, grading)
        grading.kill()
        grading.wait(timeout=30)
        assert owned(docker_client, owner), "a killed grader leaves its container behind"
        job = yaml.safe_load(GRADE_WORKFLOW.read_text())["jobs"]["grade"]
        [step] = [s for s in job["steps"] if "docker rm" in s.get("run", "")]
        env = {**os.environ, OWNER_ENV: owner}
        done = subprocess.run(["bash", "-e", "-c", step["run"]], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert owned(docker_client, owner) == []
        assert owned(docker_client, other) != []
    finally:
        grading.kill()
        bystander.remove(force=True)
        for container in owned(docker_client, owner):
            docker_client.api.remove_container(container["Id"], force=True)


def test_the_worker_keeps_its_own_deadline_inside_a_native_call() -> None:
    """The backstop when nothing outside is left to stop it: the default SIGALRM ends the worker even
    while it is blocked in C (a sleep here, an ONNX Runtime call in a grading)."""
    code = "from grader.worker.session import arm_deadline; assert arm_deadline() == 1; import time; time.sleep(30)"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "GRADER_DEADLINE_S": "1"}, timeout=25
    )
    assert done.returncode == -signal.SIGALRM and time.monotonic() - started < 15


def test_every_grading_container_carries_its_deadline_and_its_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    from grader.config.course import DockerSettings
    from grader.contracts.job import Limits
    from grader.sandbox.docker import DEADLINE_ENV, LABEL, GpuPlan, container_options

    monkeypatch.setenv(OWNER_ENV, "grade-77-2")
    options = container_options(DockerSettings(image="x"), Limits(wall_time_s=300), 1, [], GpuPlan())
    assert options["environment"][DEADLINE_ENV] == "330"  # the host's limit plus its grace
    assert options["labels"] == {LABEL: "1", OWNER_LABEL: "grade-77-2"}
    monkeypatch.delenv(OWNER_ENV)
    fallback = container_options(DockerSettings(image="x"), Limits(), 1, [], GpuPlan())["labels"][OWNER_LABEL]
    assert fallback.endswith(f"-{os.getpid()}")  # outside CI: this host process


def test_a_stop_right_after_the_engine_created_the_container_still_removes_it(
    docker_client, docker_settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The signal can land after the engine made the container and before the call returned its
    handle: the clean-up goes by the container's name, so nothing is left even then."""
    from grader.contracts.job import Limits
    from grader.sandbox import docker as runner

    owner = f"test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv(OWNER_ENV, owner)
    real_create = runner.create_container

    def create_then_stop(*args, **kwargs):  # noqa: ANN002, ANN003
        real_create(*args, **kwargs)
        raise KeyboardInterrupt  # what grader.cli's handler raises (a BaseException) at this moment

    monkeypatch.setattr(runner, "create_container", create_then_stop)
    with pytest.raises(KeyboardInterrupt):
        runner.run_in_container(
            ["python", "-c", "pass"], docker_settings, Limits(wall_time_s=30), {}, client=docker_client
        )
    assert owned(docker_client, owner) == []
