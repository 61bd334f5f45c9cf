"""The local sandbox, tested with real child processes: each test fails if its setting is missing."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from grader.contracts.job import Limits
from grader.sandbox.local import available_isolation, run_sandboxed
from grader.sandbox.view import View

ISOLATING = [kind for kind in available_isolation() if kind != "none"]


@pytest.fixture(
    params=ISOLATING
    or [
        pytest.param(
            "none",
            marks=pytest.mark.skip(
                reason="neither bubblewrap nor unshare works on this machine: no network isolation to test"
            ),
        )
    ]
)
def isolating(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each isolation this machine offers, forced in turn (bubblewrap and the unshare fallback)."""
    monkeypatch.setenv("GRADER_ISOLATION", request.param)
    return request.param


def run_python(code: str, workdir: Path, readonly: list[Path] | None = None, **limits: float) -> tuple:
    """``code`` as a script in the sandbox (the script's folder is read-only to it, like a submission)."""
    code_dir = workdir / "code"
    code_dir.mkdir(parents=True, exist_ok=True)
    script = code_dir / "child.py"
    script.write_text(textwrap.dedent(code))
    view = View(scratch=workdir / "scratch", readonly=(code_dir, *(readonly or [])))
    done = run_sandboxed([sys.executable, str(script)], Limits(**limits), view, workdir)
    return done, done.output_tail


def test_network_is_unreachable_from_inside(tmp_path: Path, listener, isolating: str) -> None:
    port, accepted = listener
    done, out = run_python(
        f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
            print("CONNECTED")
        except OSError as exc:
            print("BLOCKED", exc)
        """,
        tmp_path,
    )
    assert "BLOCKED" in out and "CONNECTED" not in out
    assert not accepted


def test_host_environment_is_not_inherited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_fake_secret_value")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "also-secret")
    done, out = run_python("import os; print(sorted(os.environ)); print('ghp_fake' in repr(os.environ))", tmp_path)
    assert done.returncode == 0
    assert "GITHUB_TOKEN" not in out and "AWS_SECRET" not in out
    assert out.strip().endswith("False")


def test_submission_is_read_only(tmp_path: Path, isolating: str) -> None:
    submission = tmp_path / "submission"
    submission.mkdir()
    (submission / "model.onnx").write_text("original")
    work = tmp_path / "work"
    work.mkdir()
    done, out = run_python(
        f"""
        from pathlib import Path
        try:
            Path({str(submission / "model.onnx")!r}).write_text("tampered")
            print("WROTE")
        except OSError as exc:
            print("REFUSED", exc)
        """,
        work,
        readonly=[submission],
    )
    assert "REFUSED" in out
    assert (submission / "model.onnx").read_text() == "original"


def test_time_limit_kills_the_whole_process_group(tmp_path: Path, isolating: str) -> None:
    marker = f"{600 + os.getpid() % 97}.{int(time.time()) % 1000}"  # a sleep argument no one else uses
    started = time.monotonic()
    done, _ = run_python(
        f"""
        import subprocess, time
        subprocess.Popen(["sleep", "{marker}"])
        print("grandchild started", flush=True)
        time.sleep(600)
        """,
        tmp_path,
        wall_time_s=3,
    )
    assert done.stopped is not None and done.stopped.kind == "time_limit"
    assert time.monotonic() - started < 30
    assert "grandchild started" in done.output_tail
    time.sleep(0.5)
    assert not _running_with_argument(marker), "the grandchild survived the time limit"


def _running_with_argument(argument: str) -> bool:
    """Whether any live (non-zombie) process on the host has ``argument`` on its command line."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if argument.encode() in cmdline and state != "Z":
            return True
    return False


def test_memory_watchdog_stops_growing_resident_memory(tmp_path: Path) -> None:
    done, _ = run_python(
        """
        import time
        chunks = []
        for _ in range(200):
            chunks.append(bytearray(16 * 1024 * 1024))  # zero-filled pages, really resident
            for i in range(0, len(chunks[-1]), 4096):
                chunks[-1][i] = 1
            time.sleep(0.02)
        print("SURVIVED")
        """,
        tmp_path,
        memory_mb=300,
        wall_time_s=60,
    )
    assert done.stopped is not None and done.stopped.kind == "memory_limit"
    assert "SURVIVED" not in done.output_tail


def test_address_space_limit_refuses_one_huge_allocation(tmp_path: Path) -> None:
    done, out = run_python(
        """
        try:
            block = bytearray(20 * 1024**3)
            print("ALLOCATED")
        except MemoryError:
            print("REFUSED")
        """,
        tmp_path,
        memory_mb=512,
    )
    assert "REFUSED" in out


def test_file_size_limit(tmp_path: Path) -> None:
    done, out = run_python(
        """
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        try:
            with open("big.bin", "wb") as handle:
                handle.write(b"0" * (200 * 1024 * 1024))
            print("WROTE")
        except OSError as exc:
            import os
            print("REFUSED", exc.errno, os.path.getsize("big.bin"))
        """,
        tmp_path,
    )
    assert "REFUSED" in out
    assert int(out.split()[-1]) <= 64 * 1024 * 1024
