"""Start a service in the sandbox and keep it supervised while the load generator works.

The command comes from the manifest as a list (no shell). Placeholders: ``{python}`` (the
grader's interpreter, which has the course's serving libraries), ``{socket}`` (the Unix socket
to listen on, also in ``$GRADER_SOCKET``) and ``{folder}`` (the submission folder, read-only).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from grader.contracts.job import Limits
from grader.contracts.problem import Problem
from grader.contracts.service import SOCKET_ENV
from grader.sandbox.base import check_readable, writable_folder
from grader.sandbox.local import Sandboxed, kill_tree, spawn_sandboxed
from grader.sandbox.view import SANDBOX_UID, View, drop_to_nobody

WATCH_S = 0.2


@dataclass
class RunningService:
    """A ``Service`` in the local sandbox: its own socket folder (the only host folder it may write,
    size-watched), its own scratch, and a watcher thread that enforces its limits."""

    process: Sandboxed
    socket: Path
    limits: Limits
    stopped: Problem | None = None

    def alive(self) -> bool:
        return self.process.alive()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.process.log_tail(8000).splitlines()[-lines:])

    def watch(self) -> None:
        """Kill the service if it outgrows its memory, time or socket folder; runs in a thread."""
        while self.alive():
            problem = self.process.over_limit(watch_scratch=False)
            if problem is not None:
                self.stopped = (
                    service_time_failure(self.limits)
                    if problem.kind == "time_limit"
                    else service_memory_failure(self.limits)
                )
                kill_tree(self.process.proc)
                return
            time.sleep(WATCH_S)


def service_memory_failure(limits: Limits) -> Problem:
    return Problem(
        kind="memory_limit",
        field="service",
        message=f"the service used more than the {limits.memory_mb} MiB memory limit and was stopped",
        hint="Load the model once at start-up and keep per-request buffers small; check the service's "
        "memory while it answers concurrent requests.",
    )


def service_time_failure(limits: Limits) -> Problem:
    return Problem(
        kind="time_limit",
        field="service",
        message=f"the service ran past the {limits.wall_time_s:.0f} s limit and was stopped",
        hint="The whole load test must finish within the limit; a service that stops answering "
        "holds every request until it times out.",
    )


def expand(command: list[str], python: str, socket: str, folder: str) -> list[str]:
    """Replace the three placeholders literally.

    The command is the student's text: str.format would evaluate ``{python.__class__}`` or raise
    on an unknown ``{name}``, so only the exact placeholders are substituted and any other brace
    passes through unchanged.
    """
    values = {"{python}": python, "{socket}": socket, "{folder}": folder}
    expanded = []
    for part in command:
        for placeholder, value in values.items():
            part = part.replace(placeholder, value)
        expanded.append(part)
    return expanded


@contextmanager
def running_service(
    command: list[str], folder: Path, limits: Limits, workdir: Path, threads: int = 1, name: str = "service"
) -> Iterator[RunningService]:
    """The service, started in ``folder`` (read-only) and always stopped afterwards.

    Each service gets a socket folder and a scratch of its own under ``workdir``: a service never
    sees another's socket (the team's cannot replace the reference's), nor anything else of the
    host beyond the system, the grader's Python and its own folder.
    """
    home = workdir / name
    sockets = writable_folder(home / "socket")
    if drop_to_nobody():  # the service runs as nobody: it must be able to read the team's folder
        check_readable([folder], f"{SANDBOX_UID}:{SANDBOX_UID}")
    socket = sockets / f"{name}.sock"
    view = View(
        scratch=home / "scratch",
        scratch_mb=limits.scratch_mb,
        readonly=(folder.resolve(),),
        writable=(sockets.resolve(),),
        cwd=folder.resolve(),
    )
    process = spawn_sandboxed(
        expand(command, sys.executable, str(socket), str(folder)),
        limits,
        view,
        home,
        threads,
        extra_env={SOCKET_ENV: str(socket)},
    )
    service = RunningService(process, socket, limits)
    watcher = threading.Thread(target=service.watch, daemon=True)
    watcher.start()
    try:
        yield service
    finally:
        process.kill()
        watcher.join(timeout=5)


class LocalServiceHost:
    """The local sandbox (bubblewrap or unshare): ``grader check`` on a laptop and this project's tests.

    The service runs from its folder where it lies; ``extra_files`` are not needed, since the
    sandbox sees the course's reference code and models read-only.
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
    ) -> AbstractContextManager[RunningService]:
        return running_service(command, folder, limits, workdir, threads, name)

    def describe(self) -> str:
        from grader.sandbox.local import describe, isolation

        return describe(isolation())
