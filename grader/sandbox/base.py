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

import signal
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


@dataclass(frozen=True)
class Sandboxes:
    """Where one grading runs untrusted code: the model worker's sandbox and the service host."""

    worker: Sandbox
    services: ServiceHost


@dataclass
class Finished:
    """How a sandboxed command ended: its exit code, or the limit that stopped it; the tail of its
    log; and, where it was asked to report, what it wrote on its output channel (capped)."""

    returncode: int
    stopped: Problem | None
    output_tail: str
    wall_s: float
    output: bytes | None = None


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


def parse_observations(data: bytes | None, returncode: int, output_tail: str, description: str) -> Observations:
    """Parse what the worker reported as untrusted input: capped (by whoever read it), schema-checked.

    ``returncode`` < 0 means the worker died of that signal (a crashing runtime is the model's
    doing); any other non-zero code, or no output, is the grader's own fault. ``description`` is
    where it ran, the host's own fact, recorded in the observations' environment.
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
    environment = observations.environment.model_copy(update={"sandbox": description})
    return observations.model_copy(update={"environment": environment})


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
