"""What both runners share: the worker's output read as hostile input, and choosing a runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from grader.commands.common import sandboxes
from grader.config.course import Course, DockerSettings, RunnerConfig, load_course
from grader.contracts.observations import Observations
from grader.errors import ConfigError, WorkerError
from grader.sandbox.base import MAX_OUTPUT_BYTES, parse_observations
from grader.sandbox.local import run_worker as local_runner

ROOT = Path(__file__).resolve().parent.parent
SOLUTION = "reference/solutions/hw2-quantization-pruning"


def test_valid_output_is_parsed() -> None:
    observed = parse_observations(Observations().model_dump_json().encode(), 0, "", "test")
    assert observed == Observations(environment={"sandbox": "test"})  # where it ran is the host's own fact


def test_oversized_output_is_refused() -> None:
    with pytest.raises(WorkerError, match="larger than allowed"):
        parse_observations(b" " * (MAX_OUTPUT_BYTES + 1), 0, "", "test")


def test_a_sandbox_stops_reading_past_the_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local sandbox's pipe reader keeps nothing past the cap, and the writer is never blocked."""
    from grader.contracts.job import Limits
    from grader.sandbox import local
    from grader.sandbox.view import View

    monkeypatch.setattr(local, "MAX_OUTPUT_BYTES", 10_000)
    code = tmp_path / "code"
    code.mkdir()
    (code / "w.py").write_text("import os\nos.write(3, b'x' * 200_000)\nprint('done')\n")
    view = View(scratch=tmp_path / "scratch", readonly=(code,))
    with pytest.raises(WorkerError, match="larger than allowed"):
        local.run_sandboxed([sys.executable, str(code / "w.py")], Limits(), view, tmp_path, capture_output=True)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(WorkerError, match="does not match the schema"):
        parse_observations(b'{"models": {}, "score_override": 100}', 0, "", "test")


def test_missing_output_and_crashes() -> None:
    with pytest.raises(WorkerError, match="without writing its output") as info:
        parse_observations(None, 0, "boom", "test")
    assert info.value.log_tail == "boom" and "boom" not in str(info.value)  # the log is kept apart from the message
    with pytest.raises(WorkerError, match="exited with 70"):
        parse_observations(None, 70, "Traceback ...", "test")
    crashed = parse_observations(None, -11, "", "test")
    assert crashed.failure is not None and crashed.failure.kind == "run" and "SIGSEGV" in crashed.failure.message


def test_course_defaults_to_the_local_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADER_COURSE", raising=False)
    assert load_course().runner.kind == "local"  # the shipped course.yaml
    assert sandboxes(RunnerConfig()).worker is local_runner


def test_course_file_selects_docker(tmp_path: Path) -> None:
    path = tmp_path / "course.yaml"
    path.write_text(
        "schema: 1\nrunner:\n  kind: docker\n  docker:\n    image: ghcr.io/course/grader@sha256:"
        + "a" * 64
        + "\n    gpus: [0, GPU-1234]\n    cpus: 4\n"
    )
    course = load_course(path)
    assert course.runner.kind == "docker" and course.runner.docker.gpus == ["0", "GPU-1234"]
    runner = sandboxes(course.runner).worker
    assert type(runner).__name__ == "DockerSandbox" and runner.settings.cpus == 4


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("schema: 1\nrunner: {kind: podman}\n", "kind"),
        ("schema: 1\nrunner: {docker: {user: '0:0'}}\n", "must not run as root"),
        ("schema: 1\nrunner: {docker: {readonly_mounts: [data]}}\n", "absolute"),
        ("schema: 1\nrunner: {docker: {privileged: true}}\n", "privileged"),
        ("schema: 2\n", "schema"),
    ],
)
def test_course_file_mistakes_fail_loudly(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "course.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=complaint):
        load_course(path)


def test_named_course_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADER_COURSE", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="no such course file"):
        load_course()


def test_docker_runner_needs_an_image() -> None:
    with pytest.raises(ConfigError, match="needs an image"):
        sandboxes(RunnerConfig(kind="docker", docker=DockerSettings()))
    assert Course().runner.docker.user == "65534:65534"


def grader_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grader.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["--runner", "docker"], "needs --image"),
        (["--runner", "local", "--image", "x:y"], "are for --runner docker"),
        (["--image", "x:y", "--gpus", "0,bad id"], "gpus"),
        (["--course", "no-such-course.yaml"], "is not a file"),
    ],
)
def test_runner_usage_errors(args: list[str], complaint: str) -> None:
    done = grader_cli("check", SOLUTION, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert complaint in done.stderr and "Traceback" not in done.stderr


def test_worker_names_the_gpus_the_driver_lists(tmp_path: Path) -> None:
    """The environment's ``gpu`` without torch: the driver's per-GPU listing (format of nvidia.ko)."""
    from grader.worker.session import gpu_name

    assert gpu_name(tmp_path / "no-driver") == "none"
    for bus, model in (("0000:17:00.0", "NVIDIA H200"), ("0000:3d:00.0", "NVIDIA H200")):
        (tmp_path / bus).mkdir()
        (tmp_path / bus / "information").write_text(
            f"Model: \t\t {model}\nIRQ:   \t\t 0\nGPU UUID: \t GPU-1\nBus Location: \t {bus}\n"
        )
    assert gpu_name(tmp_path) == "NVIDIA H200, NVIDIA H200"
