"""``grader doctor``: what a course admin runs on a new runner before the first pull request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grader.commands.doctor import driver_supports, findings

ROOT = Path(__file__).resolve().parent.parent


def doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "grader.cli", "doctor", *args], capture_output=True, text=True, cwd=ROOT, timeout=600
    )


@pytest.mark.parametrize(
    ("cuda", "driver", "runs"),
    [("13.0", "580.65.06", True), ("13.0", "575.57.08", False), ("12.6", "525.60.13", True), ("12.6", "520.1", False)],
)
def test_a_driver_too_old_for_the_cuda_build_is_named(cuda: str, driver: str, runs: bool) -> None:
    assert driver_supports(cuda, driver) is runs
    stack = {"torch": "2.13.0", "torch_cuda": cuda, "nvidia_driver": driver, "onnxruntime": "1.31.1"}
    failed = [line for ok, line in findings(stack, expect_gpu=False) if not ok]
    expected = [] if runs else [f"driver {driver} is too old for CUDA {cuda}"]
    assert [line.split(": install")[0] for line in failed] == expected


def test_unknown_facts_are_not_judged() -> None:
    assert driver_supports(None, "580.65.06") is None and driver_supports("13.0", None) is None


def test_this_machine_is_ready_for_cpu_gradings_and_says_what_a_gpu_runner_would_lack() -> None:
    done = doctor("--runner", "local", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["stack"]["torch"].startswith("2.13.0") and report["stack"]["onnxruntime"]
    assert all(check["ok"] for check in report["checks"])
    gpu = doctor("--runner", "local", "--expect-gpu")
    if report["stack"].get("gpu_works"):
        pytest.skip("this machine has a CUDA GPU: the failing side is not shown here")
    assert gpu.returncode == 1 and "FAIL  CUDA GPU usable by torch: no" in gpu.stdout
    assert "not ready" in gpu.stderr and "Traceback" not in gpu.stderr


def test_in_the_grading_image_it_reports_the_engine_and_the_stack_inside(
    docker_client, docker_settings, tmp_path: Path
) -> None:
    from tests.docker_host import engine_to_ourselves

    course = tmp_path / "course.yaml"
    course.write_text(
        yaml.safe_dump({"schema": 1, "runner": {"kind": "docker", "docker": docker_settings.model_dump()}})
    )
    for _ in engine_to_ourselves():
        done = doctor("--course", str(course), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["runner"] == "docker" and report["engine"].startswith("Docker ")
    assert report["image"] == docker_settings.image and "CPU only" in report["gpu_plan"]
    assert report["stack"]["python"] == ".".join(map(str, sys.version_info[:3]))  # the image runs this Python
    assert not docker_client.containers.list(all=True, filters={"label": "org.compression-grader.worker"})
