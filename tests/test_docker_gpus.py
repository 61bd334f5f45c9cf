"""The Docker runner's GPU plan: one GPU per grading, leased, never all.

Built with the real ``docker.types.DeviceRequest`` and the real lease (a temporary lock folder,
other gradings as real processes holding GPUs); only the engine's ``info()`` is a stand-in (the
engine here has no NVIDIA runtime), and the host's GPU list is given.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from grader.config.course import DockerSettings
from grader.contracts.job import Limits
from grader.sandbox.gpus import Gpu
from tests.gpu_fakes import finish, first_line, holder, lock_folder


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return lock_folder(tmp_path, monkeypatch)


class Engine:
    """Stands in for a Docker client where only ``info()`` is asked: whether it has NVIDIA's runtime."""

    def __init__(self, runtimes: dict) -> None:
        self.runtimes = runtimes

    def info(self) -> dict:
        return {"Runtimes": self.runtimes}


NVIDIA_ENGINE = Engine({"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}})
MACHINE = [Gpu("0", "GPU-aaaa"), Gpu("1", "GPU-bbbb")]


def request_for(device_id: str):  # noqa: ANN201 - a docker.types.DeviceRequest
    from docker.types import DeviceRequest

    return DeviceRequest(device_ids=[device_id], capabilities=[["gpu"]])


def test_auto_passes_exactly_one_free_gpu(tmp_path: Path, locks: Path) -> None:
    from grader.sandbox.docker import container_options, describe, gpu_plan

    settings = DockerSettings(image="img", gpus="auto")
    with gpu_plan(NVIDIA_ENGINE, settings, machine=MACHINE) as plan:
        assert plan.requests == [request_for("GPU-aaaa")]  # one GPU by UUID, never count=-1
        assert "GPU 0 passed through" in describe(settings, plan)
        options = container_options(settings, Limits(), 1, [], plan)
        assert options["device_requests"] == [request_for("GPU-aaaa")]
        assert options["environment"]["NVIDIA_VISIBLE_DEVICES"] == "GPU-aaaa"  # not the CUDA image's "all"
    other = holder(tmp_path, "other-grading", indices="0")
    try:
        assert first_line(other[0], 20) == "0"
        with gpu_plan(NVIDIA_ENGINE, settings, machine=MACHINE) as plan:
            assert plan.requests == [request_for("GPU-bbbb")] and "GPU 1 passed through" in plan.summary
    finally:
        finish(other)


def test_a_list_pins_to_its_gpus_but_a_grading_gets_one(tmp_path: Path, locks: Path) -> None:
    from grader.sandbox.docker import gpu_plan

    settings = DockerSettings(image="img", gpus=[1, "GPU-aaaa"])
    with gpu_plan(NVIDIA_ENGINE, settings, machine=MACHINE) as plan:
        assert plan.requests == [request_for("GPU-bbbb")]  # the list's first, index 1
    other = holder(tmp_path, "other-grading", indices="1")
    try:
        assert first_line(other[0], 20) == "1"
        with gpu_plan(NVIDIA_ENGINE, settings, machine=MACHINE) as plan:
            assert plan.requests == [request_for("GPU-aaaa")] and "GPU 0" in plan.summary
    finally:
        finish(other)


def test_no_gpu_where_none_is_wanted_or_none_can_be_had(locks: Path) -> None:
    from grader.sandbox.docker import container_options, engine_has_gpus, gpu_plan

    cases = [
        (NVIDIA_ENGINE, "none", True, "GPUs not requested"),
        (NVIDIA_ENGINE, "auto", False, "the job measures on the CPU"),
    ]
    if not engine_has_gpus(Engine({"runc": {}})):  # (a machine with the toolkit's hook passes GPUs anyway)
        cases.append((Engine({"runc": {}}), "auto", True, "cannot pass a GPU through"))
    for engine, gpus, wanted, reason in cases:
        settings = DockerSettings(image="img", gpus=gpus)
        with gpu_plan(engine, settings, wanted, machine=MACHINE) as plan:
            assert plan.requests == [] and reason in plan.summary, plan
            assert container_options(settings, Limits(), 1, [], plan)["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert not locks.exists() or not any(locks.iterdir())  # nothing was leased


def test_an_engine_with_gpus_this_host_cannot_list_gets_gpu_0(locks: Path) -> None:
    from grader.sandbox.docker import gpu_plan

    with gpu_plan(NVIDIA_ENGINE, DockerSettings(image="img"), machine=[]) as plan:
        assert plan.requests == [request_for("0")]


@pytest.mark.parametrize("gpus", ["all", ["all"], ["0", "all"]])
def test_all_gpus_is_refused_with_the_reason(gpus) -> None:
    with pytest.raises(ValidationError, match="exactly one GPU"):
        DockerSettings(image="img", gpus=gpus)


def test_the_command_line_refuses_all_gpus_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from grader.commands.common import UsageError, runner_config

    monkeypatch.delenv("GRADER_COURSE", raising=False)
    args = argparse.Namespace(course=None, runner="docker", image="img@sha256:0", gpus="all")
    with pytest.raises(UsageError, match="exactly one GPU"):
        runner_config(args)
    assert runner_config(argparse.Namespace(**{**vars(args), "gpus": "1,0"})).docker.gpus == ["1", "0"]


def test_a_listed_uuid_this_host_does_not_know_is_requested_as_given(locks: Path) -> None:
    from grader.sandbox.docker import gpu_plan

    settings = DockerSettings(image="img", gpus=["GPU-0123-abcd"])
    with gpu_plan(NVIDIA_ENGINE, settings, machine=MACHINE) as plan:
        assert plan.requests == [request_for("GPU-0123-abcd")]
        assert plan.summary == "GPU-0123-abcd passed through (one per grading)"
    assert (locks / "gpu-GPU-0123-abcd.lock").exists()  # leased under its UUID, like any other
