"""A worker started before its job (grader.sandbox.local.EarlyWorker): it warms up while the host
vets the files, grades exactly as a worker started afterwards would, and never outlives its grading."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from grader import exitcodes
from grader.contracts.job import Job, Limits, MeasureSpec
from grader.grading import pipeline
from grader.sandbox.local import EarlyWorker, run_worker, start_early
from grader.worker.session import wait_for_job
from tests.grading import grade, local_sandboxes

SOLUTION = Path(__file__).resolve().parent.parent / "reference" / "solutions" / "hw2-quantization-pruning"


def waiting_workers(under: Path) -> list[int]:
    """The early workers still waiting for (or running) a job whose sandbox lies under ``under``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--wait-for-job" in argv and any(str(under).encode() in arg for arg in argv):
            found.append(int(entry.name))
    return found


def _gone(pids: list[int], within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.05)
    return False


def test_the_worker_waits_for_its_job_file_and_gives_up_without_one(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    assert not wait_for_job(path, limit_s=0.2)
    threading.Timer(0.3, lambda: path.write_text("{}")).start()
    started = time.monotonic()
    assert wait_for_job(path, limit_s=10.0)
    assert 0.25 <= time.monotonic() - started < 5.0


@pytest.fixture
def temp_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Gradings make their folders under ``tmp_path``, so this test's workers can be told apart."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def watched(under: Path, seen: list[list[int]]):  # noqa: ANN201
    """The local sandboxes, whose early start also notes the workers it left waiting under ``under``."""

    def watching(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - the real start, and what it started
        worker = start_early(*args, **kwargs)
        seen.append(waiting_workers(under))
        return worker

    return dataclasses.replace(local_sandboxes(), early=watching)


def test_an_early_worker_gives_the_verdicts_a_late_one_gives(reference_paths, temp_here: Path) -> None:
    seen: list[list[int]] = []
    early = pipeline.grade(SOLUTION, watched(temp_here, seen))
    late = grade(SOLUTION, runner=run_worker)
    assert early.exit_code == late.exit_code == exitcodes.GRADED, early.result.problems
    assert [(c.id, c.status, c.points) for c in early.result.checks] == [
        (c.id, c.status, c.points) for c in late.result.checks
    ]
    assert early.result.score == late.result.score == 100.0
    assert len(seen) == 1 and len(seen[0]) >= 1  # it was started, and it was waiting
    assert _gone(seen[0]) and not waiting_workers(temp_here)


def test_a_rejected_submission_stops_the_early_worker(temp_here: Path) -> None:
    folder = temp_here / "broken"
    shutil.copytree(SOLUTION, folder)
    (folder / "compressed.onnx").write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64)
    seen: list[list[int]] = []
    grading = pipeline.grade(folder, watched(temp_here, seen))
    assert grading.exit_code == exitcodes.REJECTED
    assert len(seen) == 1 and len(seen[0]) >= 1  # a worker was started before the files were vetted
    assert _gone(seen[0]) and not waiting_workers(temp_here)


def test_closing_an_early_worker_that_never_got_a_job_ends_it(tmp_path: Path) -> None:
    work = tmp_path / "sandbox"
    work.mkdir(mode=0o700)
    vetted = tmp_path / "vetted"
    vetted.mkdir()
    worker = start_early(Limits(), work, {"vetted": vetted}, threads=1)
    assert worker.running is not None and worker.running.alive()
    pid = worker.running.proc.pid
    worker.close()
    assert _gone([pid]) and worker.running is None
    worker.close()  # twice is harmless


def test_the_wall_time_limit_counts_from_the_job_not_from_the_start(tmp_path: Path) -> None:
    """Vetting a large submission may take a while; that time is not the worker's to answer for."""
    work = tmp_path / "sandbox"
    work.mkdir(mode=0o700)
    vetted = tmp_path / "vetted"
    vetted.mkdir()
    worker = EarlyWorker(Limits(wall_time_s=2), work, {"vetted": vetted}, threads=1)
    try:
        time.sleep(2.5)  # longer than the limit, before the job is there
        observations = worker.run(Job(models=[], inputs=None, measure=MeasureSpec()), {"vetted": vetted})
    finally:
        worker.close()
    # the job ran to its own end (an empty job: no inputs), not to the limit
    assert observations.failure is not None and observations.failure.kind == "input", observations.failure


def test_a_job_the_early_worker_was_not_started_for_runs_in_a_worker_of_its_own(tmp_path: Path) -> None:
    """Other threads than it was started with (its thread variables are set at start): the early one
    is stopped and the job runs as without it."""
    work = tmp_path / "sandbox"
    work.mkdir(mode=0o700)
    vetted = tmp_path / "vetted"
    vetted.mkdir()
    worker = EarlyWorker(Limits(), work, {"vetted": vetted}, threads=1)
    assert worker.running is not None
    pid = worker.running.proc.pid
    job = Job(models=[], inputs=None, measure=MeasureSpec(timing={"threads": 2}))
    try:
        observations = worker.run(job, {"vetted": vetted})
    finally:
        worker.close()
    assert observations.failure is not None and observations.failure.kind == "input"  # it ran, in its own worker
    assert _gone([pid])
