"""Whole gradings through the Docker runner against a real engine: same verdicts, same limits, no leftovers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from grader import exitcodes
from grader.contracts.result import CheckStatus, Result
from grader.sandbox.docker import LABEL, DockerSandbox
from tests import builders
from tests.grading import grade


@pytest.fixture(scope="module", autouse=True)
def _engine_to_ourselves():  # noqa: ANN202
    """No other Docker test module runs while this one does (see tests.docker_host.engine_to_ourselves)."""
    from tests.docker_host import engine_to_ourselves

    yield from engine_to_ourselves()


ROOT = Path(__file__).resolve().parent.parent
SOLUTION = ROOT / "reference" / "solutions" / "hw2-quantization-pruning"


def verdict(result: Result) -> tuple:
    """What a student is told: status, score and each check's outcome (figures differ run to run)."""
    return result.status, result.score, [(c.id, c.status, c.points) for c in result.checks]


def leftover_workers(client) -> list:
    return client.containers.list(all=True, filters={"label": LABEL})


def test_verdict_equals_the_local_runners_for_the_hw2_reference(reference_paths, fast_root, docker_settings) -> None:
    local = grade(SOLUTION, fast_root)
    docker = grade(SOLUTION, fast_root, runner=DockerSandbox(docker_settings))
    assert local.exit_code == docker.exit_code == exitcodes.GRADED, docker.internal_error
    assert verdict(docker.result) == verdict(local.result)
    assert docker.result.score == docker.result.max_score
    environment = docker.result.environment
    assert environment.sandbox.startswith(f"docker ({docker_settings.image})")
    assert "CPU only" in environment.sandbox and environment.gpu == "none"
    assert environment.threads == 1
    assert docker.result.submission.files == local.result.submission.files  # same files, same hashes


def test_memory_bomb_is_rejected_with_a_clear_message(
    docker_client, docker_settings, tiny_models, tmp_path: Path
) -> None:
    root = builders.fast_assignments(tmp_path / "assignments", memory_mb=1024)
    # 16 MiB per sample, 3.2 GiB for the 200 inputs, filled: the host could give it, only the limit stops it
    hog = builders.memory_hog_model(tmp_path / "hog.onnx", elements=2**22)
    folder = builders.submission(
        tmp_path / "s", {"baseline": tiny_models["baseline"], "candidate": hog}, tiny_models["inputs"]
    )
    grading = grade(folder, root, runner=DockerSandbox(docker_settings))
    result = grading.result
    assert grading.exit_code == exitcodes.REJECTED and result.status == "rejected", grading.internal_error
    assert result.problems[0].kind == "memory_limit"
    assert "1024 MiB memory limit" in result.problems[0].message
    loads = next(c for c in result.checks if c.id == "loads")
    assert loads.status is CheckStatus.FAIL and "memory" in loads.message
    assert leftover_workers(docker_client) == []


def test_hang_hits_the_time_limit_and_the_container_is_gone(
    docker_client, docker_settings, tiny_models, tmp_path: Path
) -> None:
    root = builders.fast_assignments(tmp_path / "assignments", wall_time_s=8)
    folder = builders.submission(
        tmp_path / "s",
        {"baseline": tiny_models["baseline"], "candidate": builders.hanging_model(tmp_path / "hang.onnx")},
        tiny_models["inputs"],
    )
    grading = grade(folder, root, runner=DockerSandbox(docker_settings))
    assert grading.exit_code == exitcodes.REJECTED, grading.internal_error
    assert grading.result.problems[0].kind == "time_limit"
    assert "8 s limit" in grading.result.problems[0].message
    assert leftover_workers(docker_client) == []


def test_cli_runs_docker_as_course_yaml_says(docker_settings, tiny_models, fast_root, tmp_path: Path) -> None:
    """``grader check --runner docker`` with the image and mounts from a course file, as CI runs it."""
    course = tmp_path / "course.yaml"
    docker = docker_settings.model_dump()
    docker["image"] = ""  # comes from --image below
    course.write_text(yaml.safe_dump({"schema": 1, "runner": {"kind": "local", "docker": docker}}))
    folder = builders.submission(
        tmp_path / "s",
        {"baseline": tiny_models["baseline"], "candidate": tiny_models["correct"]},
        tiny_models["inputs"],
        claims={"quantization": "int8", "sparsity": 0.6},
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grader.cli",
            "check",
            str(folder),
            "--out",
            str(out),
            "--assignments",
            str(fast_root),
            "--course",
            str(course),
            "--runner",
            "docker",
            "--image",
            docker_settings.image,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == exitcodes.GRADED, done.stdout + done.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["status"] == "graded"
    assert result["environment"]["sandbox"].startswith("docker (")
    assert "docker (" in (out / "report.md").read_text()


@pytest.fixture
def unreachable_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("docker", reason="the Docker SDK is not installed")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'no-engine.sock'}")


def test_no_engine_is_the_graders_error_not_the_students(
    unreachable_engine, tiny_models, fast_root, tmp_path: Path
) -> None:
    from grader.config.course import DockerSettings

    folder = builders.submission(
        tmp_path / "s",
        {"baseline": tiny_models["baseline"], "candidate": tiny_models["correct"]},
        tiny_models["inputs"],
    )
    grading = grade(folder, fast_root, runner=DockerSandbox(DockerSettings(image="any:tag")))
    assert grading.exit_code == exitcodes.INTERNAL and grading.result.status == "error"
    assert "cannot reach a Docker engine" in grading.internal_error
    assert "not your fault" in grading.result.problems[0].message


def test_held_out_data_outside_the_repository_reaches_the_container(
    reference_paths, docker_settings, docker_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the runner the held-out split is a secret folder of its own (not under reference/), readable
    by the runner's user only: the final project must still be evaluated on it inside the container."""
    import numpy as np

    final = ROOT / "reference" / "solutions" / "final-project"
    with np.load(reference_paths["eval_npz"]) as public:
        x, y = public["input"], public["labels"]
    secret = tmp_path / "runner-secrets"
    secret.mkdir(mode=0o700)
    np.savez(secret / "final-project.npz", input=x[:100], labels=(y[:100] + 1) % 10)  # labels no model can match
    monkeypatch.setenv("GRADER_HELDOUT_DIR", str(secret))
    grading = grade(final, runner=DockerSandbox(docker_settings))
    assert grading.exit_code == exitcodes.GRADED, (grading.internal_error, grading.result.problems)
    assert grading.result.environment.data == "held-out"
    assert grading.result.metrics["reference.heldout_accuracy"].value < 0.2
    assert leftover_workers(docker_client) == []
