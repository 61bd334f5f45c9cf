"""The service track's sandbox in CI: a container image built from the team's folder.

The team's folder is the build context, but the Dockerfile is the grader's own: ``FROM`` the
grading image, ``COPY`` the folder, nothing else. So no step of the team's runs at build time,
and the build has no network and pulls nothing. The service then runs in the same locked-down
container as a model worker (``grader.sandbox.docker.container_options``: no network, read-only
root, no capabilities, an unprivileged user, memory / pid / CPU limits, an environment built from
nothing) and listens on a Unix socket in the one writable mount, where the load generator on the
host reaches it. The reference service is built and run the same way, so both are measured under
the same limits on the same machine.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from grader.config.course import DockerSettings
from grader.contracts.job import Limits
from grader.contracts.problem import Problem
from grader.contracts.service import SOCKET_ENV
from grader.errors import ConfigError, SubmissionError, WorkerError
from grader.sandbox.base import scratch_failure, writable_folder
from grader.sandbox.docker import (
    GpuPlan,
    container_options,
    create_container,
    describe,
    engine_session,
    ensure_image,
    gpu_plan,
    kill_container,
    labels,
    mounts,
    remove_named,
    start_container,
    wait_for_exit,
)
from grader.sandbox.local import folder_bytes
from grader.sandbox.service_local import expand, service_memory_failure, service_time_failure

SOCKET_MOUNT = "/grading/socket"  # the service's one writable mount: where it listens
SERVICE_ROOT = "/service"  # where the folder lies in the image; the service's working directory
CONTEXT_FOLDER = "service"
SERVICE_LABEL = "org.compression-grader.service"
IMAGE_REPOSITORY = "grader-service"
MAX_CONTEXT_BYTES = 2 * 1024**3
BUILD_TIMEOUT_S = 600
EXITED_GRACE_S = 5.0
WATCH_S = 0.5
# The service creates its socket as the container's user; umask 0 lets the host's user (another
# uid in CI) connect to it. exec keeps the service itself as the container's main process.
# umask 0 for the socket; an alarm that survives the exec is the service's time limit inside the container
UMASK_EXEC = (
    "import os, signal, sys; os.umask(0); signal.alarm(int(os.environ.get('GRADER_DEADLINE_S', '0'))); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)
LINK_HINT = "Put the file itself in the folder: a service folder is copied into its image as plain files and folders."


def dockerfile(base_image: str) -> str:
    """The whole build: copy the folder onto the grading image. No RUN step, so nothing of the team's runs."""
    if not base_image or any(ch.isspace() for ch in base_image):
        raise ConfigError(f"the grading image name {base_image!r} cannot be used in a Dockerfile")
    return f"FROM {base_image}\nCOPY {CONTEXT_FOLDER}/ {SERVICE_ROOT}/\nWORKDIR {SERVICE_ROOT}\n"


def build_context(
    folder: Path, extra_files: list[Path], base_image: str, max_bytes: int = MAX_CONTEXT_BYTES
) -> IO[bytes]:
    """A tar of the grader's Dockerfile and the folder's plain files, owned by root and readable by all.

    Links, sockets and devices are refused (a link could pull in a file from outside the folder);
    ``extra_files`` (trusted course files, e.g. the reference model) go next to the folder's files.
    """
    context = tempfile.TemporaryFile()
    budget = [max_bytes]
    with tarfile.open(fileobj=context, mode="w") as tar:
        _add_bytes(tar, "Dockerfile", dockerfile(base_image).encode())
        _add_folder(tar, folder, budget)
        for path in extra_files:
            _add_file(tar, Path(path), f"{CONTEXT_FOLDER}/{Path(path).name}", budget)
    context.seek(0)
    return context


def _add_folder(tar: tarfile.TarFile, folder: Path, budget: list[int]) -> None:
    _add_dir(tar, CONTEXT_FOLDER)
    for here, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in [*dirs, *sorted(files)]:
            path = Path(here) / name
            relative = path.relative_to(folder).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                raise SubmissionError(f"{relative} is a symbolic link.", LINK_HINT, kind="invalid")
            if stat.S_ISDIR(info.st_mode):
                _add_dir(tar, f"{CONTEXT_FOLDER}/{relative}")
            elif stat.S_ISREG(info.st_mode):
                _add_file(tar, path, f"{CONTEXT_FOLDER}/{relative}", budget)
            else:
                raise SubmissionError(f"{relative} is not a regular file or folder.", LINK_HINT, kind="invalid")


def _tar_info(name: str, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode, info.uid, info.gid, info.uname, info.gname, info.mtime = mode, 0, 0, "root", "root", 0
    return info


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = _tar_info(name, 0o755)
    info.type = tarfile.DIRTYPE
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _tar_info(name, 0o644)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, path: Path, name: str, budget: list[int]) -> None:
    """Add one file, opened without following links, read-only for the service (root owns it)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        budget[0] -= size
        if budget[0] < 0:
            raise SubmissionError(
                f"the service folder is larger than {MAX_CONTEXT_BYTES // 1024**2} MiB "
                f"(at {name.removeprefix(CONTEXT_FOLDER + '/')}).",
                "Ship only the model and code the service needs.",
                kind="invalid",
            )
        executable = os.fstat(handle.fileno()).st_mode & stat.S_IXUSR
        info = _tar_info(name, 0o755 if executable else 0o644)
        info.size = size
        tar.addfile(info, handle)


def build_image(client: Any, context: IO[bytes], tag: str) -> None:
    """Build without network and without pulling: the base image is already on the engine."""
    import docker

    try:
        client.images.build(
            fileobj=context,
            custom_context=True,
            tag=tag,
            pull=False,
            rm=True,
            forcerm=True,
            network_mode="none",
            labels={SERVICE_LABEL: "1"},
            timeout=BUILD_TIMEOUT_S,
        )
    except docker.errors.BuildError as exc:
        raise WorkerError(f"building the service image failed: {exc.msg}") from None
    except docker.errors.DockerException as exc:
        raise WorkerError(f"the Docker engine could not build the service image: {exc}") from None


def remove_image(client: Any, tag: str) -> None:
    import docker

    try:
        client.images.remove(tag, force=True)
    except docker.errors.ImageNotFound:
        pass


@dataclass
class ContainerService:
    """A ``grader.sandbox.base.Service`` running in a container; a watcher thread enforces the wall time."""

    container: Any
    socket: Path
    limits: Limits
    socket_folder: Path  # the one host folder it may write: size-watched
    started: float = field(default_factory=time.monotonic)
    stopped: Problem | None = None
    exited: threading.Event = field(default_factory=threading.Event)

    def alive(self) -> bool:
        import docker

        if self.exited.is_set():
            return False
        try:
            self.container.reload()
            running = self.container.status in ("created", "running")
        except docker.errors.NotFound:
            running = False
        if not running:  # let the watcher record why (the memory limit) before anyone asks
            self.exited.wait(EXITED_GRACE_S)
        return running

    def log_tail(self, lines: int = 20) -> str:
        import docker

        try:
            return self.container.logs(stdout=True, stderr=True, tail=lines).decode("utf-8", "replace")[-8000:]
        except docker.errors.DockerException:
            return "(the service's log could not be read)"

    def watch(self) -> None:
        """Wait for the container to end: killed on the wall-time limit, OOM named as the memory limit."""
        import docker

        try:
            self.stopped, _ = wait_for_exit(
                self.container, self.limits, self.started, service_time_failure, service_memory_failure
            )
        except (WorkerError, docker.errors.DockerException):
            pass  # removed by the grader while waiting: the grading is over
        finally:
            self.exited.set()

    def watch_socket_folder(self) -> None:
        """The socket folder is the container's one writable mount: kill it if it fills it."""
        while not self.exited.wait(WATCH_S):
            if folder_bytes(self.socket_folder) > self.limits.scratch_mb * 2**20:
                self.stopped = scratch_failure(self.limits.scratch_mb).model_copy(update={"field": "service"})
                kill_container(self.container)
                return


class DockerServiceHost:
    """A ``grader.sandbox.base.ServiceHost``: each service gets its own image and a fresh container."""

    def __init__(self, settings: DockerSettings) -> None:
        if not settings.image:
            raise ConfigError(
                "the Docker service host needs the grading image: --image NAME@sha256:... "
                "or runner.docker.image in course.yaml"
            )
        self.settings = settings
        self.gpus = GpuPlan(summary="GPUs not yet planned")

    def describe(self) -> str:
        return f"service container built from the submission folder on {describe(self.settings, self.gpus)}"

    @contextmanager
    def start(
        self,
        command: list[str],
        folder: Path,
        limits: Limits,
        workdir: Path,
        threads: int,
        name: str,
        extra_files: list[Path],
    ) -> Iterator[ContainerService]:
        tag = f"{IMAGE_REPOSITORY}:{name}-{uuid.uuid4().hex[:12]}"
        with engine_session(None) as client:
            ensure_image(client, self.settings)
            with build_context(folder, extra_files, self.settings.image) as context:
                build_image(client, context, tag)
            # one GPU for the grading's services: the reference and the team's, running side by
            # side in this process, share the lease (grader.sandbox.gpus.lease)
            try:
                with gpu_plan(client, self.settings) as gpus:
                    self.gpus = gpus
                    with _running(client, self.settings, tag, command, limits, workdir, threads, name, gpus) as service:
                        yield service
            finally:
                remove_image(client, tag)


@contextmanager
def _running(
    client: Any,
    settings: DockerSettings,
    tag: str,
    command: list[str],
    limits: Limits,
    workdir: Path,
    threads: int,
    name: str,
    gpus: GpuPlan,
) -> Iterator[ContainerService]:
    # a socket folder of its own: the team's service never sees the reference's socket, nor it the team's
    sockets = writable_folder(workdir / name / "socket")
    inner_socket = f"{SOCKET_MOUNT}/{name}.sock"
    argv = ["python", "-c", UMASK_EXEC, *expand(command, "python", inner_socket, SERVICE_ROOT)]
    # not the workers' readonly_mounts (staff data): the service is the team's own code
    mount_list = mounts({}, settings, settings.service_mounts, writable={SOCKET_MOUNT: sockets})
    options = container_options(settings, limits, threads, mount_list, gpus)
    options["environment"][SOCKET_ENV] = inner_socket
    options.update(
        working_dir=SERVICE_ROOT,
        hostname="grader-service",
        labels=labels(**{SERVICE_LABEL: name}),
        name=f"grader-service-{uuid.uuid4().hex[:12]}",
    )
    try:  # from before the create: a stop signal between create and start must not leave it behind
        container = create_container(client, tag, argv, options)
        start_container(container, gpus)
        service = ContainerService(container, sockets / f"{name}.sock", limits, sockets)
        for watch in (service.watch, service.watch_socket_folder):
            threading.Thread(target=watch, daemon=True).start()
        yield service
    finally:
        remove_named(client, options["name"])
