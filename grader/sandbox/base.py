"""The sandbox contract: what every place that runs untrusted code offers, and nothing that chooses
between them (``grader.commands`` does).

A ``Sandbox`` takes the host's ``Job``, the assignment's ``Limits``, a scratch folder and the
folders the worker may only read (by name: ``submission``, ``references``, ...), runs
``grader.worker`` isolated, and returns ``Observations``. A ``ServiceHost`` does the same for the
service track's long-running services. The local child-process sandbox (``grader.sandbox.local``)
and the Docker one (``grader.sandbox.docker``) both end in ``parse_observations`` here, so a
subverted worker meets exactly the same validation whichever ran it, and a limit hit reads the
same to the student.
"""

from __future__ import annotations

import os
import signal
import stat
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from grader.contracts.job import Job, Limits
from grader.contracts.observations import Observations
from grader.contracts.problem import Problem
from grader.errors import WorkerError

MAX_OUTPUT_BYTES = 32 * 1024 * 1024
JOB_FILE = "job.json"


class Sandbox(Protocol):
    """Run ``grader.worker`` on ``job`` isolated and limited; what it observed comes back.

    ``folders`` maps each folder the job names to the host path the worker may read it from.
    """

    def __call__(self, job: Job, limits: Limits, workdir: Path, folders: dict[str, Path]) -> Observations: ...


class Service(Protocol):
    """A started service, as the load generator and the grading see it, whichever host runs it."""

    socket: Path  # the Unix socket it listens on, as the host reaches it
    stopped: Problem | None  # the limit that stopped it, if one did

    def alive(self) -> bool: ...

    def log_tail(self, lines: int = 20) -> str: ...


class ServiceHost(Protocol):
    """Start a service (the team's or the reference) isolated and limited, and always stop it.

    ``extra_files`` are trusted files (the reference model) that must sit next to the service's
    own files where the host cannot reach the course repository.
    """

    def start(
        self,
        command: list[str],
        folder: Path,
        limits: Limits,
        workdir: Path,
        threads: int,
        name: str,
        extra_files: list[Path],
    ) -> AbstractContextManager[Service]: ...

    def describe(self) -> str: ...


class EarlyWorker(Protocol):
    """A worker started before its job is ready (see ``EarlyStart``)."""

    def run(self, job: Job, folders: dict[str, Path]) -> Observations: ...

    def close(self) -> None: ...


class EarlyStart(Protocol):
    """Start a CPU worker that waits for its job, with the folders it will read (some still empty)
    mounted: it imports its runtimes while the host vets the files. ``run`` then does what the
    ``Sandbox`` would have done with the job (a job it does not fit runs in a worker of its own);
    ``close`` always stops it."""

    def __call__(self, limits: Limits, workdir: Path, folders: dict[str, Path], threads: int) -> EarlyWorker: ...


@dataclass(frozen=True)
class Sandboxes:
    """Where one grading runs untrusted code: the model worker's sandbox and the service host;
    ``early``, where the sandbox can start its worker before the job is ready."""

    worker: Sandbox
    services: ServiceHost
    early: EarlyStart | None = None


@dataclass
class Finished:
    """How a sandboxed command ended: its exit code, or the limit that stopped it; the tail of its
    log; where it was asked to report, what it wrote on its output channel (capped); and, where
    the sandbox knows, how its memory was limited (the local one says; a container's is its cgroup)."""

    returncode: int
    stopped: Problem | None
    output_tail: str
    wall_s: float
    output: bytes | None = None
    memory: str = ""


def worker_command(python: str, job_path: str, out: str, folders: dict[str, str]) -> list[str]:
    """The worker's command line: the job file, where to report (``fd:N`` or a path) and where
    each folder is mounted."""
    mounts = [arg for name, path in sorted(folders.items()) for arg in ("--folder", f"{name}={path}")]
    return [python, "-m", "grader.worker", job_path, out, *mounts]


def thread_env(threads: int) -> dict[str, str]:
    """Thread counts set explicitly: a CPU quota does not change the core count a library sees."""
    return {var: str(threads) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}


def time_limit_failure(limits: Limits) -> Problem:
    return Problem(
        kind="time_limit",
        message=f"grading took longer than the {limits.wall_time_s:.0f} s limit and was stopped",
        hint="A model that hangs or is far too slow for the inputs cannot be graded; "
        "check that it finishes quickly on the submitted inputs.",
    )


def memory_failure(limits: Limits) -> Problem:
    return Problem(
        kind="memory_limit",
        message=f"the models used more than the {limits.memory_mb} MiB memory limit and were stopped",
        hint="Check for huge intermediate tensors (e.g. an Expand or a large MatMul) and reduce them.",
    )


def scratch_failure(scratch_mb: int) -> Problem:
    return Problem(
        kind="memory_limit",
        message=f"the models wrote more than the {scratch_mb} MiB scratch space allows and were stopped",
        hint="Nothing needs to write large files while it is graded; load the model and run it in memory.",
    )


def stopped(failure: Problem, description: str) -> Observations:
    """Observations of a worker a limit stopped: only the failure, and where it ran."""
    return Observations(failure=failure, environment={"sandbox": description})


def parse_observations(
    data: bytes | None, returncode: int, output_tail: str, description: str, gpu_passed: bool = False
) -> Observations:
    """Parse what the worker reported as untrusted input: capped (by whoever read it), schema-checked.

    ``returncode`` < 0 means the worker died of that signal (a crashing runtime is the model's
    doing); any other non-zero code, or no output, is the grader's own fault. ``description`` is
    where it ran, the host's own fact, recorded in the observations' environment. With
    ``gpu_passed`` (the host handed the worker a GPU), a worker that says it had no GPU to time on
    is not believed: its figures would otherwise wait as "pending" instead of being judged.
    """
    if returncode < 0:
        return stopped(
            Problem(
                kind="run",
                message=f"the model crashed the runtime ({_signal_name(-returncode)}) while loading or running",
                hint="The file is probably malformed for its runtime; re-export it and run it locally first.",
            ),
            description,
        )
    if returncode != 0:
        raise WorkerError(f"worker exited with {returncode}", output_tail)
    if not data:
        raise WorkerError("worker exited without writing its output", output_tail)
    if len(data) > MAX_OUTPUT_BYTES:
        raise WorkerError("worker output is larger than allowed")
    try:
        observations = Observations.model_validate_json(data)
    except ValidationError as exc:
        raise WorkerError(f"worker output does not match the schema: {exc}") from None
    if gpu_passed and observations.environment.device_pending:
        reason = observations.environment.device_reason or "no reason given"
        raise WorkerError(
            f"the worker reports no usable GPU although the sandbox passed it one: {reason} "
            "(check the grading image with grader doctor)",
            output_tail,
        )
    environment = observations.environment.model_copy(update={"sandbox": description})
    return observations.model_copy(update={"environment": environment})


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def writable_folder(path: Path) -> Path:
    """A host folder the sandbox's unprivileged user can write (a service's socket folder)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)  # not sticky: the host must be able to delete what the sandbox wrote
    return path


def check_readable(readonly: list[Path], user: str) -> None:
    """Refuse early, as the grader's problem, a file the sandbox's unprivileged user could not read.

    Otherwise a submission checked out with umask 077 would fail to load inside the sandbox
    and the student would be blamed for it.
    """
    uid, gid = (int(part) for part in user.split(":"))
    for root in readonly:
        for folder, _, files in os.walk(root):
            for path in [Path(folder), *(Path(folder) / name for name in files)]:
                info = path.lstat()
                if not stat.S_ISLNK(info.st_mode) and not _may_read(info, uid, gid):
                    raise WorkerError(
                        f"the sandbox's user {user} cannot read {path} "
                        f"({stat.filemode(info.st_mode)}); make the submission world-readable, "
                        "e.g. chmod -R a+rX"
                    )


def _may_read(info: os.stat_result, uid: int, gid: int) -> bool:
    """Read (and, for a folder, enter) permission for ``uid:gid`` by the owner / group / other bits."""
    shift = 6 if info.st_uid == uid else 3 if info.st_gid == gid else 0
    needed = 0o4 | (0o1 if stat.S_ISDIR(info.st_mode) else 0)
    return (info.st_mode >> shift) & needed == needed
