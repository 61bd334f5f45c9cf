"""Fake GPUs for tests: device nodes with the null device's numbers, and other gradings as real
processes holding a real GPU lease."""

from __future__ import annotations

import os
import select
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from grader.sandbox.gpus import LOCKS_ENV

ROOT = Path(__file__).resolve().parent.parent
HOLDER = """
    import sys, time, pathlib
    from grader.sandbox.gpus import Gpu, lease
    release, wait_s, indices = pathlib.Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split(",")
    with lease([Gpu(i) for i in indices], wait_s=wait_s, poll_s=0.05) as gpu:
        print(gpu.index, flush=True)
        while not release.exists():
            time.sleep(0.05)
"""


def lock_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lock folder of the test's own (``$GRADER_GPU_LOCKS``), for it and the holders it starts."""
    folder = tmp_path / "locks"
    monkeypatch.setenv(LOCKS_ENV, str(folder))
    return folder


def holder(tmp_path: Path, name: str, wait_s: float = 30, indices: str = "0,1") -> tuple[subprocess.Popen, Path]:
    """A real process that leases one of ``indices`` and holds it until its release file appears."""
    release = tmp_path / f"release-{name}"
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), str(release), str(wait_s), indices],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return proc, release


def first_line(proc: subprocess.Popen, timeout: float) -> str | None:
    """The holder's first line (the GPU it got), or None if it printed nothing within ``timeout``."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else None


def finish(*procs: tuple[subprocess.Popen, Path]) -> None:
    """Let the holders end (their gradings are over) and wait for them."""
    for _, release in procs:
        release.touch()
    for proc, _ in procs:
        proc.wait(timeout=20)


def fake_nodes(folder: Path, names: list[str]) -> Path:
    """Character devices with the null device's numbers, named as the NVIDIA driver names its nodes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        os.mknod(folder / name, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(folder / name, 0o666)
    return folder


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making device nodes needs root")
