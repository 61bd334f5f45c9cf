"""Run the worker in a Docker container: trust boundary 2 as CI enforces it on the GPU runner machine.

Same contract as the local sandbox (``grader.sandbox.local.run_worker``): a job, the limits, a scratch
folder and the folders to mount read-only in; observations out (on the container's stdout, read
while it runs and capped), parsed by the same ``grader.sandbox.base.parse_observations``. The
container gets no network, a read-only root with a small tmpfs at /tmp and no writable mount,
no capabilities, no new privileges, an unprivileged user, private IPC, pid /
memory (swap = memory) / CPU limits, no core dumps, explicit thread counts, an environment built
from nothing (no host variable, so no token, reaches it) and, for a job that wants one, exactly one
GPU, leased for the grading (``grader.sandbox.gpus``) so that no other grading on this host times
on it, and only where the engine can pass it through. On the wall-time limit it is killed; it is
removed in every case, a cancelled grading included (``grader.cli`` turns SIGTERM into an
exception, so the ``finally`` runs; the GPU's lease ends there too). Two
backstops hold where the host process is killed outright: the worker's own deadline inside the
container, and the owner label the workflow's clean-up step removes by.

The Docker SDK is imported lazily: the local sandbox and ``grader --help`` never need it.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader.config.course import DockerSettings
from grader.contracts.job import Job, Limits
from grader.contracts.observations import Observations
from grader.contracts.problem import Problem
from grader.errors import ConfigError, WorkerError
from grader.sandbox.base import (
    JOB_FILE,
    MAX_OUTPUT_BYTES,
    Finished,
    check_readable,
    memory_failure,
    parse_observations,
    stopped,
    thread_env,
    time_limit_failure,
    worker_command,
)
from grader.sandbox.gpus import Gpu, lease, list_gpus, wants_gpu

CONTAINER_IN = "/grading/in"  # read-only folders by name: /grading/in/submission, /grading/in/references, ...
CONTAINER_JOB = "/grading/job"  # the job file's folder, read-only
JOB_MOUNT = "job"  # its name among the folders mounted
LABEL = "org.compression-grader.worker"
OWNER_LABEL = "org.compression-grader.owner"  # whose grading: the CI job's clean-up removes only its own
OWNER_ENV = "GRADER_CONTAINER_OWNER"
DEADLINE_ENV = "GRADER_DEADLINE_S"  # the worker's own time limit (grader.worker.session.arm_deadline)
DEADLINE_GRACE_S = 30  # past the host's limit: the host stops it first, this holds if the host is gone
WORKER_FILE_LIMIT_BYTES = 64 * 1024 * 1024
OPEN_FILES = 4096
LOG_TAIL_LINES = 400
OOM_EXIT = 128 + 9  # SIGKILL: the cgroup's OOM killer
LimitFailure = Callable[[Limits], Problem]


@dataclass
class GpuPlan:
    """Which GPU the container gets (one, or none), and the sentence the result's environment carries."""

    requests: list[Any] = field(default_factory=list)
    summary: str = "CPU only"
    gpu: Gpu | None = None


class DockerSandbox:
    """A ``grader.sandbox.base.Sandbox`` that starts each grading in a fresh container of ``settings.image``."""

    def __init__(self, settings: DockerSettings) -> None:
        if not settings.image:
            raise ConfigError(
                "the Docker sandbox needs an image: --image NAME@sha256:... or runner.docker.image in course.yaml"
            )
        self.settings = settings

    def __call__(self, job: Job, limits: Limits, workdir: Path, folders: dict[str, Path]) -> Observations:
        return run_worker(job, limits, workdir, folders, self.settings)


def engine() -> Any:
    """A client for the engine ``$DOCKER_HOST`` (or the default socket) names, checked to answer."""
    try:
        import docker
    except ImportError:
        raise WorkerError(
            "the Docker sandbox needs the Docker SDK for Python: pip install 'compression-grader[docker]'"
        ) from None
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "the default socket")
        raise WorkerError(f"cannot reach a Docker engine at {where}: {exc}") from None
    return client


@contextmanager
def engine_session(client: Any) -> Iterator[Any]:
    """The caller's client, or a fresh one that is closed afterwards."""
    if client is not None:
        yield client
        return
    client = engine()
    try:
        yield client
    finally:
        client.close()


def run_worker(
    job: Job, limits: Limits, workdir: Path, folders: dict[str, Path], settings: DockerSettings, client: Any = None
) -> Observations:
    """Run ``grader.worker`` on ``job`` in a container and parse what it reports.

    The job file (in a folder of its own) and each of the job's folders are mounted read-only,
    the folders at ``/grading/in/<name>`` (the worker is told so); the job file is the host's,
    unchanged. The container has no writable mount at all: its scratch is a size-limited tmpfs,
    and the worker reports on its stdout, which the host reads, capped, while it runs. A limit
    hit yields observations holding only the failure; anything else broken raises ``WorkerError``.
    """
    with engine_session(client) as client:
        ensure_image(client, settings)  # before the lease: a pull must not keep a GPU from other gradings
        done, sandbox, gpu_passed = _graded(job, limits, workdir, folders, settings, client)
    if done.stopped is not None:
        return stopped(done.stopped, sandbox)
    return parse_observations(done.output, done.returncode, done.output_tail, sandbox, gpu_passed)


def _graded(
    job: Job, limits: Limits, workdir: Path, folders: dict[str, Path], settings: DockerSettings, client: Any
) -> tuple[Finished, str, bool]:
    """The worker's run, holding the job's GPU (if it wants one) until the container is gone; and
    whether the container was handed a GPU."""
    with gpu_plan(client, settings, wants_gpu(job)) as gpus:
        sandbox = describe(settings, gpus)
        job_dir = workdir / "job"
        job_dir.mkdir(exist_ok=True)
        job_dir.chmod(0o755)  # the container's unprivileged user reads it
        (job_dir / JOB_FILE).write_text(job.model_dump_json())
        (job_dir / JOB_FILE).chmod(0o644)
        inner = {name: f"{CONTAINER_IN}/{name}" for name in folders}
        command = worker_command("python", f"{CONTAINER_JOB}/{JOB_FILE}", "fd:1", inner)
        done = run_in_container(
            command,
            settings,
            limits,
            {**folders, JOB_MOUNT: job_dir},
            threads=job.measure.timing.threads,
            client=client,
            gpus=gpus,
            capture_output=True,
        )
    return done, sandbox, bool(gpus.requests)


def run_in_container(
    command: list[str],
    settings: DockerSettings,
    limits: Limits,
    folders: dict[str, Path],
    threads: int = 1,
    client: Any = None,
    gpus: GpuPlan | None = None,
    capture_output: bool = False,
    writable: dict[str, Path] | None = None,
) -> Finished:
    """Run ``command`` in a fresh, locked-down container.

    ``folders`` are mounted read-only by name; ``writable`` (container path -> host folder) are
    the only writable mounts (a service's socket folder). With ``capture_output`` the command's
    stdout is the result, read while it runs and capped at ``MAX_OUTPUT_BYTES``. Without ``gpus``
    (a plan its caller holds) it leases one GPU as ``settings`` allow, for this run.
    """
    with engine_session(client) as client:
        ensure_image(client, settings)
        with nullcontext(gpus) if gpus is not None else gpu_plan(client, settings) as plan:
            return _run(command, settings, limits, folders, threads, client, plan, capture_output, writable)


def _run(
    command: list[str],
    settings: DockerSettings,
    limits: Limits,
    folders: dict[str, Path],
    threads: int,
    client: Any,
    gpus: GpuPlan,
    capture_output: bool,
    writable: dict[str, Path] | None,
) -> Finished:
    """One container, created, started, waited for and removed in every case."""
    check_readable(list(folders.values()), settings.user)
    options = container_options(settings, limits, threads, mounts(folders, settings, writable=writable), gpus)
    started = time.monotonic()
    try:  # from before the create: a stop signal between create and start must not leave it behind
        container = create_container(client, settings.image, command, options)
        reader = _StdoutReader(container, limits) if capture_output else None
        start_container(container, gpus)
        stopped, returncode = wait_for_exit(container, limits, started)
        tail = _logs_tail(container, stdout=not capture_output)  # with a report on stdout, the log is stderr
        output = reader.result() if reader is not None else None
    finally:
        remove_named(client, options["name"])
    return Finished(returncode, stopped, tail, time.monotonic() - started, output)


class _StdoutReader(threading.Thread):
    """The container's stdout, attached before it starts, read to the end but kept only up to the cap.

    A client of its own with a timeout as long as the grading: the worker is silent until it
    reports, at the very end.
    """

    def __init__(self, container: Any, limits: Limits) -> None:
        import docker

        super().__init__(daemon=True)
        self.client = docker.from_env(timeout=int(limits.wall_time_s) + 120)
        attached = self.client.containers.get(container.id)
        self.stream = attached.attach(stdout=True, stderr=False, stream=True, logs=True)
        self.chunks: list[bytes] = []
        self.kept = 0
        self.overflow = False
        self.start()

    def run(self) -> None:
        try:
            for chunk in self.stream:
                if self.kept + len(chunk) > MAX_OUTPUT_BYTES:
                    self.overflow = True
                    continue
                self.chunks.append(chunk)
                self.kept += len(chunk)
        except Exception:  # noqa: BLE001 - the container went away: what was read is all there is
            pass

    def result(self) -> bytes:
        self.join(timeout=30)
        self.client.close()
        if self.overflow:
            raise WorkerError(f"worker output is larger than allowed ({MAX_OUTPUT_BYTES} bytes)")
        return b"".join(self.chunks)


def container_options(
    settings: DockerSettings, limits: Limits, threads: int, mount_list: list[Any], gpus: GpuPlan
) -> dict[str, Any]:
    """Everything ``containers.create`` gets besides the command; each line is one isolation setting."""
    from docker.types import LogConfig, Ulimit

    memory = f"{limits.memory_mb}m"
    return {
        "user": settings.user,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,noexec,size={settings.scratch_mb}m,mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "ipc_mode": "private",
        "pids_limit": settings.pids,
        "mem_limit": memory,
        "memswap_limit": memory,
        "nano_cpus": int(settings.cpus * 1e9),
        "cpuset_cpus": settings.cpuset,
        "ulimits": [
            Ulimit(name="core", soft=0, hard=0),
            Ulimit(name="fsize", soft=WORKER_FILE_LIMIT_BYTES, hard=WORKER_FILE_LIMIT_BYTES),
            Ulimit(name="nofile", soft=OPEN_FILES, hard=OPEN_FILES),
        ],
        "init": True,
        "environment": {**worker_env(threads, gpus.gpu), DEADLINE_ENV: deadline(limits)},
        "working_dir": "/tmp",
        "hostname": "grader-worker",
        "mounts": mount_list,
        "device_requests": gpus.requests or None,
        "labels": labels(),
        "log_config": LogConfig(type="json-file", config={"max-size": "1m", "max-file": "1"}),
        "name": f"grader-worker-{uuid.uuid4().hex[:12]}",
    }


def labels(**more: str) -> dict[str, str]:
    """Every grading container's labels: what it is, and whose grading it belongs to.

    The owner is ``$GRADER_CONTAINER_OWNER`` where the workflow sets it (its run, attempt and job),
    else this host process: a job's ``if: always()`` clean-up then removes the containers a
    cancelled run left behind without touching another runner's gradings on the same engine.
    """
    owner = os.environ.get(OWNER_ENV) or f"{socket.gethostname()}-{os.getpid()}"
    return {LABEL: "1", OWNER_LABEL: owner[:128], **more}


def deadline(limits: Limits) -> str:
    """Seconds the worker gives itself: a limit that holds inside the container even when the host
    process that would kill it has been killed (a cancelled CI job) and nothing waits on it."""
    return str(int(limits.wall_time_s) + DEADLINE_GRACE_S)


def worker_env(threads: int, gpu: Gpu | None) -> dict[str, str]:
    """The whole environment the worker sees (plus the image's own ENV): nothing of the host's.

    ``NVIDIA_VISIBLE_DEVICES`` overrides the CUDA images' ``all``: ``void`` without a GPU, so an
    engine whose default runtime is NVIDIA's still hands the container none; the one GPU of the
    request with one, so that nothing reads the image's ``all`` as a request for every GPU.
    """
    env = {
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        **thread_env(threads),
    }
    env["NVIDIA_VISIBLE_DEVICES"] = gpu.docker_id if gpu is not None else "void"
    return env


def mounts(
    folders: dict[str, Path],
    settings: DockerSettings,
    extra: list[str] | None = None,
    writable: dict[str, Path] | None = None,
) -> list[Any]:
    """Each named folder read-only at ``/grading/in/<name>`` (the job at ``/grading/job``), the
    staff's extra paths read-only, and only ``writable`` (a service's socket folder) read-write.

    ``extra`` replaces ``settings.readonly_mounts`` (the service track passes its own, shorter list).
    """
    from docker.types import Mount

    found = [
        Mount(
            CONTAINER_JOB if name == JOB_MOUNT else f"{CONTAINER_IN}/{name}",
            str(Path(path).resolve()),
            type="bind",
            read_only=True,
        )
        for name, path in sorted(folders.items())
    ]
    found += [Mount(p, p, type="bind", read_only=True) for p in (settings.readonly_mounts if extra is None else extra)]
    found += [
        Mount(inside, str(Path(host).resolve()), type="bind", read_only=False)
        for inside, host in sorted((writable or {}).items())
    ]
    return found


def ensure_image(client: Any, settings: DockerSettings) -> None:
    """The image must be on the engine; pull it (by digest, in CI) when allowed."""
    import docker

    try:
        client.images.get(settings.image)
        return
    except docker.errors.ImageNotFound:
        pass
    if not settings.pull:
        raise WorkerError(f"the image {settings.image} is not on this Docker engine and pulling is off")
    try:
        client.images.pull(settings.image)
    except docker.errors.DockerException as exc:
        raise WorkerError(
            f"the image {settings.image} is not on this Docker engine and cannot be pulled: {exc}"
        ) from None


@contextmanager
def gpu_plan(
    client: Any, settings: DockerSettings, wanted: bool = True, machine: list[Gpu] | None = None
) -> Iterator[GpuPlan]:
    """The GPU a container gets, leased until the block ends: exactly one, never all, so that no
    two gradings on this host time on one chip; CPU only where none is wanted or none can be had.

    ``auto`` takes a free one of this host's GPUs (``machine``, default ``list_gpus()``), a list
    the first free one of those listed; while all are busy it waits (``grader.sandbox.gpus.lease``).
    """
    reason = _cpu_only(client, settings, wanted)
    if reason:
        yield GpuPlan(summary=f"CPU only ({reason})")
        return
    from docker.types import DeviceRequest

    found = list_gpus() if machine is None else machine
    with lease(gpu_candidates(settings.gpus, found)) as gpu:
        request = DeviceRequest(device_ids=[gpu.docker_id], capabilities=[["gpu"]])
        yield GpuPlan([request], f"{gpu.label()} passed through (one per grading)", gpu)


def _cpu_only(client: Any, settings: DockerSettings, wanted: bool) -> str:
    """Why the container gets no GPU, or '' when it gets one."""
    if not wanted:
        return "the job measures on the CPU"
    if settings.gpus == "none":
        return "GPUs not requested"
    if settings.gpus == "auto" and not engine_has_gpus(client):
        return "this Docker engine cannot pass a GPU through"
    return ""


def gpu_candidates(wanted: str | list[str], found: list[Gpu]) -> list[Gpu]:
    """The GPUs one grading may take, in the order tried: ``auto``, this host's (GPU 0 where it
    lists none although the engine has GPUs: an engine on another host); a list, those listed in
    its order, by index or UUID as this host knows them (as given where it does not)."""
    if wanted == "auto":
        return found or [Gpu("0")]
    picked = []
    for ident in wanted:
        known = next((gpu for gpu in found if ident in (gpu.index, gpu.uuid)), None)
        picked.append(known or (Gpu(ident) if ident.isdigit() else Gpu("", ident)))
    return picked


def engine_has_gpus(client: Any) -> bool:
    """The NVIDIA Container Toolkit registers its runtime with the engine, or installs the hook that
    ``--gpus`` uses; without either, requesting a GPU only makes the container fail to start."""
    runtimes = client.info().get("Runtimes") or {}
    hook = shutil.which("nvidia-container-runtime-hook") and Path("/dev/nvidiactl").exists()
    return "nvidia" in runtimes or bool(hook)


def describe(settings: DockerSettings, gpus: GpuPlan) -> str:
    return (
        f"docker ({settings.image}): no network, read-only root, all capabilities dropped, "
        f"user {settings.user}, {settings.cpus:g} CPUs; {gpus.summary}"
    )


def create_container(client: Any, image: str, command: list[str], options: dict[str, Any]) -> Any:
    import docker

    try:
        return client.containers.create(image, command[1:], entrypoint=command[:1], **options)
    except docker.errors.DockerException as exc:
        raise WorkerError(f"the Docker engine refused to create the grading container: {exc}") from None


def start_container(container: Any, gpus: GpuPlan) -> None:
    import docker

    try:
        container.start()
    except docker.errors.DockerException as exc:
        hint = (
            " (is the NVIDIA Container Toolkit installed? set gpus: none to grade on the CPU)" if gpus.requests else ""
        )
        raise WorkerError(f"the Docker engine could not start the grading container{hint}: {exc}") from None


def wait_for_exit(
    container: Any,
    limits: Limits,
    started: float,
    time_limit: LimitFailure = time_limit_failure,
    memory: LimitFailure = memory_failure,
) -> tuple[Problem | None, int]:
    """Wait up to the wall-time limit; kill on it. Exit codes 128+N become -N, like a child process.

    ``time_limit`` and ``memory`` say what was stopped (a model worker by default, or a service).
    """
    import requests

    try:
        status = container.wait(timeout=max(1.0, limits.wall_time_s - (time.monotonic() - started)))
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
        if time.monotonic() - started < limits.wall_time_s:
            raise WorkerError("lost the Docker engine while waiting for the worker") from None
        kill_container(container)
        return time_limit(limits), -9
    code = int(status.get("StatusCode", -1))
    container.reload()
    if container.attrs.get("State", {}).get("OOMKilled") or code == OOM_EXIT:
        return memory(limits), code
    return None, -(code - 128) if 128 < code < 128 + 65 else code


def kill_container(container: Any) -> None:
    import docker

    try:
        container.kill()
    except docker.errors.APIError:
        pass  # it exited on its own in the meantime; removal follows either way


def _logs_tail(container: Any, limit: int = 4000, stdout: bool = True) -> str:
    return container.logs(stdout=stdout, stderr=True, tail=LOG_TAIL_LINES).decode("utf-8", "replace")[-limit:]


def remove_named(client: Any, name: str) -> None:
    """Remove the container of that name, whether or not its ``create`` call returned."""
    import docker

    try:
        remove_container(client.containers.get(name))
    except docker.errors.NotFound:
        pass


def remove_container(container: Any) -> None:
    import docker

    try:
        container.remove(force=True, v=True)
    except docker.errors.NotFound:
        pass
