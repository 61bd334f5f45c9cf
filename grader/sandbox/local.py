"""Run the worker in a child process the student's model cannot escape from easily.

Trust boundary 2, local flavour: a cleared environment (no tokens), its own network namespace
(bubblewrap, else ``unshare``; where neither works the result says so), the submission mounted
read-only, rlimits on address space / file size / core dumps, its own process group killed as a
whole on timeout, and a resident-memory watchdog. The worker's JSON is parsed as untrusted input.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

from grader.contracts.job import Job, Limits
from grader.contracts.observations import Observations
from grader.contracts.problem import Problem
from grader.errors import WorkerError
from grader.sandbox.base import (
    JOB_FILE,
    OBSERVATIONS_FILE,
    Finished,
    memory_failure,
    read_observations,
    stopped,
    thread_env,
    time_limit_failure,
    worker_command,
)

WORKER_FILE_LIMIT_BYTES = 64 * 1024 * 1024
ADDRESS_SPACE_SLACK_MB = 3072  # runtimes reserve virtual memory they never touch
POLL_S = 0.1
PASSTHROUGH_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "LD_LIBRARY_PATH")


def isolation() -> str:
    """The isolation to use: ``$GRADER_ISOLATION`` if set (and available), else the strongest here."""
    wanted = os.environ.get("GRADER_ISOLATION", "")
    if wanted:
        if wanted not in available_isolation():
            raise WorkerError(f"GRADER_ISOLATION={wanted} is not available here (have: {available_isolation()})")
        return wanted
    return available_isolation()[0]


@lru_cache(maxsize=1)
def available_isolation() -> list[str]:
    """Every isolation this machine offers, strongest first; 'none' is always last."""
    kinds = []
    if shutil.which("bwrap") and _works(
        ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--unshare-net", "--", "true"]
    ):
        kinds.append("bwrap")
    if shutil.which("unshare") and os.geteuid() == 0 and _works(["unshare", "--net", "--mount", "--", "true"]):
        kinds.append("unshare")
    return kinds + ["none"]


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def describe(kind: str) -> str:
    return {
        "bwrap": "bubblewrap: no network, read-only filesystem except the output folder",
        "unshare": "unshare: no network, submission read-only",
        "none": "plain child process: NO network isolation on this machine (install bubblewrap)",
    }[kind]


def wrap(kind: str, command: list[str], workdir: Path, readonly: list[Path]) -> list[str]:
    if kind == "bwrap":
        args = [
            "bwrap",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--bind",
            str(workdir),
            str(workdir),
        ]
        for path in readonly:
            args += ["--ro-bind", str(path), str(path)]
        args += ["--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-pid", "--die-with-parent"]
        return args + ["--"] + command
    if kind == "unshare":
        remount = " && ".join(
            f'mount --bind "{p}" "{p}" && mount -o remount,bind,ro "{p}" "{p}"' for p in map(str, readonly)
        )
        script = f'{remount} && exec "$@"' if remount else 'exec "$@"'
        return ["unshare", "--net", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh"] + command
    return command


def clean_env(workdir: Path, threads: int) -> dict[str, str]:
    """Only what the worker needs: no tokens, no proxies, no credentials reach the model."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),  # where the grader package is
    }
    env.update(thread_env(threads))
    env.update({k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ})
    return env


def _limits(memory_mb: int) -> None:
    """Runs in the child before exec: rlimits apply to the worker and everything it starts."""
    address_space = (memory_mb + ADDRESS_SPACE_SLACK_MB) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    resource.setrlimit(resource.RLIMIT_FSIZE, (WORKER_FILE_LIMIT_BYTES, WORKER_FILE_LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (512, 512))  # note: root ignores this one


def tree_rss_mb(pgid: int) -> float:
    """Resident memory of every process in the worker's process group (bwrap forks)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) == pgid:
                total += int(stat[21])
        except (OSError, IndexError, ValueError):
            continue
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def spawn_sandboxed(
    command: list[str],
    limits: Limits,
    workdir: Path,
    readonly: list[Path],
    threads: int = 1,
    extra_env: dict[str, str] | None = None,
    log_name: str = "sandbox.log",
    cwd: Path | None = None,
) -> tuple[subprocess.Popen, Path]:
    """Start ``command`` isolated and limited, without waiting; its output goes to a log in ``workdir``.

    The caller supervises it (``run_sandboxed`` waits; a served model stays up for a load test)
    and must kill its process group when done.
    """
    log_path = workdir / log_name
    env = {**clean_env(workdir, threads), **(extra_env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            wrap(isolation(), command, workdir, readonly),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=cwd or workdir,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: _limits(limits.memory_mb),
        )
    return proc, log_path


def run_sandboxed(
    command: list[str], limits: Limits, workdir: Path, readonly: list[Path], threads: int = 1
) -> Finished:
    """Run ``command`` isolated, limited and supervised until it ends or hits a limit."""
    started = time.monotonic()
    proc, log_path = spawn_sandboxed(command, limits, workdir, readonly, threads)
    stopped = _supervise(proc, limits)
    return Finished(proc.returncode, stopped, tail(log_path), time.monotonic() - started)


def run_worker(job: Job, limits: Limits, workdir: Path, folders: dict[str, Path]) -> Observations:
    """A ``Sandbox``: run ``grader.worker`` on ``job`` in a child process and parse what it reports.

    The folders are mounted read-only at their own paths, so the worker is told those. A limit
    hit yields observations holding only the failure; a worker that breaks without a
    student-caused reason raises ``WorkerError`` (the grader's fault).
    """
    sandbox = describe(isolation())
    job_path = workdir / JOB_FILE
    job_path.write_text(job.model_dump_json())
    readonly = [Path(p).resolve() for p in folders.values()]
    command = worker_command(
        sys.executable,
        str(job_path),
        str(workdir / OBSERVATIONS_FILE),
        {name: str(Path(path).resolve()) for name, path in folders.items()},
    )
    done = run_sandboxed(command, limits, workdir, readonly, job.measure.timing.threads)
    if done.stopped is not None:
        return stopped(done.stopped, sandbox)
    return read_observations(workdir / OBSERVATIONS_FILE, done.returncode, done.output_tail, sandbox)


def _supervise(proc: subprocess.Popen, limits: Limits) -> Problem | None:
    """Wait for the worker; kill its whole process group on the time or memory limit."""
    deadline = time.monotonic() + limits.wall_time_s
    while proc.poll() is None:
        if time.monotonic() > deadline:
            kill_group(proc)
            return time_limit_failure(limits)
        if tree_rss_mb(proc.pid) > limits.memory_mb:
            kill_group(proc)
            return memory_failure(limits)
        time.sleep(POLL_S)
    if proc.returncode == -signal.SIGKILL:
        return memory_failure(limits)  # the kernel's OOM killer is the only other sender of SIGKILL
    return None


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def tail(path: Path, limit: int = 4000) -> str:
    data = path.read_bytes()[-limit:] if path.exists() else b""
    return data.decode("utf-8", "replace")
