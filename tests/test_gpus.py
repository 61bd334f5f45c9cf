"""The GPU lease and the GPU list, over fake GPUs.

The lease is tested with real processes and real ``flock`` locks in a temporary lock folder: two
holders at once get different GPUs, a third waits until one is released.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from grader.contracts.job import DerivedSpec, Job, MeasureSpec
from grader.errors import WorkerError
from grader.sandbox.gpus import Gpu, lease, list_gpus, wants_gpu
from tests.gpu_fakes import fake_nodes, finish, first_line, holder, lock_folder


@pytest.fixture
def locks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return lock_folder(tmp_path, monkeypatch)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes needs root")


def test_two_processes_hold_different_gpus_and_a_third_waits_for_a_release(tmp_path: Path, locks: Path) -> None:
    a, b = holder(tmp_path, "a"), holder(tmp_path, "b")
    try:
        got_a, got_b = first_line(a[0], 20), first_line(b[0], 20)
        assert {got_a, got_b} == {"0", "1"}, (got_a, got_b, a[0].stderr, b[0].stderr)
        c = holder(tmp_path, "c")
        try:
            assert first_line(c[0], 2.0) is None, "a third grading got a GPU both others hold"
            with pytest.raises(WorkerError, match="all 2 GPUs are busy with other gradings"):
                with lease([Gpu("0"), Gpu("1")], wait_s=0.3, poll_s=0.05):
                    pass
            a[1].touch()  # the first holder's grading ends
            assert first_line(c[0], 20) == got_a  # the waiting one gets exactly the GPU released
        finally:
            finish(c)
    finally:
        finish(a, b)
    assert a[0].returncode == b[0].returncode == c[0].returncode == 0


def test_an_exception_in_the_grading_releases_the_gpu(tmp_path: Path, locks: Path) -> None:
    """The ``finally`` releases it while this process lives on (as a stopped grader's does: SIGTERM
    becomes an exception), not only the kernel when the process exits."""
    with pytest.raises(RuntimeError):
        with lease([Gpu("0")]) as gpu:
            assert gpu == Gpu("0")
            busy = holder(tmp_path, "while-held", wait_s=0, indices="0")
            busy[0].wait(timeout=20)
            assert busy[0].returncode != 0 and "busy with other gradings" in busy[0].stderr.read()
            raise RuntimeError("stopped")
    free = holder(tmp_path, "after", wait_s=0, indices="0")
    try:
        assert first_line(free[0], 20) == "0"
    finally:
        finish(free)


def test_a_process_shares_its_own_lease(tmp_path: Path, locks: Path) -> None:
    """A grading's reference and team services run side by side in one process: the second gets
    the first's GPU at once instead of waiting on itself, and the GPU stays held until both end."""
    with lease([Gpu("0")], wait_s=0) as outer:
        with lease([Gpu("0")], wait_s=0) as inner:
            assert inner == outer
        other = holder(tmp_path, "outer-still-holds", wait_s=0, indices="0")
        other[0].wait(timeout=20)
        assert other[0].returncode != 0
    free = holder(tmp_path, "after", wait_s=0, indices="0")
    try:
        assert first_line(free[0], 20) == "0"
    finally:
        finish(free)


@needs_root
def test_gpus_are_listed_from_their_nodes_with_the_drivers_uuids(tmp_path: Path) -> None:
    dev = fake_nodes(tmp_path / "dev", ["nvidiactl", "nvidia-uvm", "nvidia-modeset", "nvidia1", "nvidia0"])
    (dev / "nvidia2").write_text("a file, not a device")
    driver = tmp_path / "gpus"
    (driver / "0000:41:00.0").mkdir(parents=True)
    (driver / "0000:41:00.0" / "information").write_text(
        "Model: \t\t NVIDIA H200\nGPU UUID: \t GPU-1b2c3d4e-0000-1111-2222-333344445555\nDevice Minor: \t 1\n"
    )
    assert list_gpus(dev, driver) == [Gpu("0"), Gpu("1", "GPU-1b2c3d4e-0000-1111-2222-333344445555")]
    (dev / "nvidiactl").unlink()
    assert list_gpus(dev, driver) == []  # no driver control node: no GPU can be used here


@pytest.mark.parametrize(
    "device, derived, wanted",
    [(None, False, False), ("cpu", False, False), ("cuda", False, True), ("auto", False, True), ("cpu", True, True)],
)
def test_a_job_wants_a_gpu_to_measure_on_cuda_or_to_build_tensorrt(device, derived: bool, wanted: bool) -> None:
    engines = [DerivedSpec(role="trt", source="onnx", runtime="tensorrt")] if derived else []
    assert wants_gpu(Job(models=[], inputs=None, measure=MeasureSpec(device=device, derived=engines))) is wanted


def test_a_lease_waits_only_as_long_as_it_is_told(tmp_path: Path, locks: Path) -> None:
    other = holder(tmp_path, "other", indices="0")
    try:
        assert first_line(other[0], 20) == "0"
        started = time.monotonic()
        with pytest.raises(WorkerError, match="all 1 GPUs are busy"):
            with lease([Gpu("0")], wait_s=1.0, poll_s=0.1):
                pass
        assert 1.0 <= time.monotonic() - started < 10
    finally:
        finish(other)
