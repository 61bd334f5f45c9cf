"""Run the worker (or a service) in a child process the student's files cannot escape from.

Trust boundary 2, local flavour. The child sees a minimal root (``grader.sandbox.view``): the
system's libraries, the grader's Python and code, the folders it was given read-only, and a
private size-limited tmpfs as scratch, nothing else of the host. It has its own network (none),
PID, IPC and UTS namespaces, no capability (even when the grader runs as root), a cleared
environment (no tokens), rlimits on address space, file size and core dumps, and a wall-time
limit. Memory is limited by a memory cgroup where the machine allows one
(``grader.sandbox.cgroup``: it counts shared memory and memfd pages too) and watched in any case
over every process it starts (all of them stay its descendants inside its PID namespace,
``setsid`` or not; resident pages plus open memfd files), and when it ends the namespace ends
with it, so nothing survives the grading. Its output comes back through a pipe, capped; its log
through another, of which only the tail is kept.

A job that wants a GPU (``grader.sandbox.gpus.wants_gpu``) on a machine with an NVIDIA driver
gets exactly one, leased for the grading so that no other grading on this host times on it: its
node and the driver's control nodes, and no address-space limit (a CUDA context reserves far more
than it uses), so its memory is held by the cgroup where there is one, else by the watch alone.
The result's ``environment.sandbox`` says which GPU, and how memory was limited.

Three mechanisms, strongest first: bubblewrap; the ``unshare`` fallback for root
(``grader.sandbox.enter`` builds the same root); and a plain child process where neither works,
which the result says plainly (no network isolation there, and the scratch is only size-watched).
"""

from __future__ import annotations

import collections
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from grader.contracts.job import NO_JOB_EXIT, Job, Limits
from grader.contracts.observations import Observations
from grader.contracts.problem import Problem
from grader.errors import WorkerError
from grader.sandbox.base import (
    JOB_FILE,
    MAX_OUTPUT_BYTES,
    Finished,
    check_readable,
    memory_failure,
    parse_observations,
    scratch_failure,
    stopped,
    thread_env,
    time_limit_failure,
    worker_command,
)
from grader.sandbox.cgroup import MemoryCgroup, memory_cgroup
from grader.sandbox.gpus import DEVICE_ROOT, DRIVER_GPUS, Gpu, gpu_for, wants_gpu
from grader.sandbox.view import SANDBOX_UID, View, drop_to_nobody, gpu_view, system_view

WORKER_FILE_LIMIT_BYTES = 64 * 1024 * 1024
ADDRESS_SPACE_SLACK_MB = 3072  # runtimes reserve virtual memory they never touch
LOG_TAIL_BYTES = 64 * 1024
POLL_S = 0.1
OUTPUT_FD = 3  # the worker writes its observations here; stdout and stderr are its log
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
    probe = Path(os.environ.get("TMPDIR", "/tmp"))
    view = View(scratch=probe / "grader-probe-scratch", scratch_mb=1)
    if shutil.which("bwrap") and _works(_bwrap(view, ["true"])):
        kinds.append("bwrap")
    if shutil.which("unshare") and shutil.which("setpriv") and os.geteuid() == 0:
        root = Path(_probe_root())
        if _works(_unshare(view, root, ["true"])):
            kinds.append("unshare")
    return kinds + ["none"]


def _probe_root() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="grader-probe-root-")


def _works(cmd: list[str]) -> bool:
    try:
        return subprocess.run(cmd, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


ISOLATIONS = {
    "bwrap": "bubblewrap: no network, minimal read-only root, private tmpfs scratch, no capabilities",
    "unshare": "unshare: no network, minimal read-only root, private tmpfs scratch, no capabilities",
    "none": "plain child process: NO network isolation and the host filesystem visible on this machine "
    "(install bubblewrap)",
}


def describe(kind: str, gpu: Gpu | None = None, memory: str = "") -> str:
    """Where it ran, as a result's ``environment.sandbox`` says (at most 300 characters): the
    isolation, the GPU passed through if any, and how memory was limited where that is known."""
    parts = [ISOLATIONS[kind]]
    if gpu is not None and kind == "none":
        parts.append(f"{gpu.label()} leased, but every GPU is reachable without a sandbox")
    elif gpu is not None:
        parts.append(f"{gpu.label()} passed through (/dev/{gpu.node}), no other")
    if memory:
        parts.append(f"memory: {memory}")
    return "; ".join(parts)[:300]


def _bwrap(view: View, command: list[str]) -> list[str]:
    drop = drop_to_nobody()
    args = ["bwrap", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if drop:  # root: keep only what setpriv needs to become nobody, which then drops it too
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    args += ["--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-pid"]
    args += _parents(
        [p for k, p in system_view() if k == "bind"], [p for k, p in system_view() if k == "symlink"], view
    )
    for kind, path in system_view():
        args += ["--symlink", os.readlink(path), path] if kind == "symlink" else ["--ro-bind", path, path]
    for path in view.readonly:
        args += ["--ro-bind", str(path), str(path)]
    for path in view.writable:
        args += ["--bind", str(path), str(path)]
    args += ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev"]
    for path in view.devices:
        args += ["--dev-bind", str(path), f"/dev/{path.name}"]
    size = str(view.scratch_mb * 2**20)
    args += ["--perms", "01777", "--size", size, "--tmpfs", "/dev/shm"]
    args += ["--perms", "01777", "--size", size, "--tmpfs", str(view.scratch)]
    args += ["--remount-ro", "/", "--chdir", str(view.workdir)]
    return args + ["--", *drop, *command]


def _parents(binds: list[str], links: list[str], view: View) -> list[str]:
    """The folders above every bound path, made first and open to all (mode 0755): bwrap would
    make them 0700 as root, and the unprivileged sandbox user could not reach what is inside."""
    targets = [*binds, *map(str, (*view.readonly, *view.writable, view.scratch))]  # devices: under --dev
    folders = {str(parent) for t in targets for parent in Path(t).parents if str(parent) != "/"}
    args: list[str] = []
    for folder in sorted(folders, key=lambda f: (f.count("/"), f)):
        if not any(folder == link or folder.startswith(link + "/") for link in links):
            args += ["--perms", "0755", "--dir", folder]
    return args


def _unshare(view: View, root: Path, command: list[str]) -> list[str]:
    spec = {
        "root": str(root),
        "system": [list(entry) for entry in system_view()],
        "readonly": [str(p) for p in view.readonly],
        "writable": [str(p) for p in view.writable],
        "devices": [[str(p), f"/dev/{p.name}"] for p in view.devices],
        "scratch": str(view.scratch),
        "scratch_mb": view.scratch_mb,
        "cwd": str(view.workdir),
        "uid": SANDBOX_UID,
    }
    namespaces = ["--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child"]
    enter = [sys.executable, "-I", str(Path(__file__).with_name("enter.py")), json.dumps(spec), "--"]
    return ["unshare", *namespaces, "--", *enter, *command]


def wrap(kind: str, view: View, workdir: Path, command: list[str]) -> list[str]:
    if kind == "bwrap":
        return _bwrap(view, command)
    if kind == "unshare":
        root = workdir / "root"
        root.mkdir(mode=0o700, exist_ok=True)
        return _unshare(view, root, command)
    view.scratch.mkdir(parents=True, exist_ok=True)  # "none": a host folder, only size-watched
    return command


def clean_env(view: View, threads: int) -> dict[str, str]:
    """Only what the worker needs: no tokens, no proxies, no credentials reach the model."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(view.scratch),
        "TMPDIR": str(view.scratch),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),  # where the grader package is
    }
    env.update(thread_env(threads))
    env.update({k: os.environ[k] for k in PASSTHROUGH_ENV if k in os.environ})
    return env


def _limits(memory_mb: int, address_space: bool) -> None:
    """Runs in the child before exec: rlimits apply to the worker and everything it starts."""
    if address_space:  # a CUDA context reserves far more address space than it uses: not with a GPU
        space = (memory_mb + ADDRESS_SPACE_SLACK_MB) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (space, space))
    resource.setrlimit(resource.RLIMIT_FSIZE, (WORKER_FILE_LIMIT_BYTES, WORKER_FILE_LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (512, 512))  # note: root ignores this one


class _Drain(threading.Thread):
    """Reads a pipe to its end: keeps the last ``tail`` bytes (a log) or at most ``limit`` bytes (output)."""

    def __init__(self, fd: int, tail: int = 0, limit: int = 0) -> None:
        super().__init__(daemon=True)
        self.fd, self.tail, self.limit = fd, tail, limit
        self.chunks: collections.deque[bytes] = collections.deque()
        self.kept = 0
        self.overflow = False
        self.start()

    def run(self) -> None:
        with os.fdopen(self.fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                if self.limit and self.kept + len(chunk) > self.limit:
                    self.overflow = True
                    continue  # keep draining, so the writer never blocks, but store nothing more
                self.chunks.append(chunk)
                self.kept += len(chunk)
                while self.tail and self.kept - len(self.chunks[0]) >= self.tail:
                    self.kept -= len(self.chunks.popleft())

    def data(self) -> bytes:
        return b"".join(self.chunks)

    def text(self, limit: int = 4000) -> str:
        return self.data()[-limit:].decode("utf-8", "replace")


@dataclass
class Sandboxed:
    """A started sandboxed process: supervise it, read its log tail, and always ``kill`` it."""

    proc: subprocess.Popen
    view: View
    limits: Limits
    log: _Drain
    output: _Drain | None = None
    started: float = field(default_factory=time.monotonic)
    cgroup: MemoryCgroup | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, limit: int = 4000) -> str:
        return self.log.text(limit)

    def over_limit(self, watch_scratch: bool) -> Problem | None:
        """The limit this process (with all it started) is past right now, if any."""
        if time.monotonic() - self.started > self.limits.wall_time_s:
            return time_limit_failure(self.limits)
        if namespace_rss_mb(self.proc.pid) > self.limits.memory_mb:
            return memory_failure(self.limits)
        if self.cgroup is not None and self.cgroup.oom_killed():
            return memory_failure(self.limits)
        watched = list(self.view.writable) + ([self.view.scratch] if watch_scratch else [])
        if sum(folder_bytes(p) for p in watched) > self.view.scratch_mb * 2**20:
            return scratch_failure(self.view.scratch_mb)
        return None

    def memory_limits(self) -> str:
        """How this process tree's memory is held, as the result says: with a device passed
        through there is no address-space limit (``_limits``), so the cgroup is what holds it."""
        if self.view.devices:
            return "cgroup limit" if self.cgroup is not None else "RSS watch of the process tree (no cgroup here)"
        return "address-space rlimit + cgroup limit + RSS watch" if self.cgroup else "address-space rlimit + RSS watch"

    def kill(self) -> None:
        kill_tree(self.proc)
        self.log.join(timeout=5)
        if self.output is not None:
            self.output.join(timeout=5)
        if self.cgroup is not None:
            self.cgroup.remove()


def spawn_sandboxed(
    command: list[str],
    limits: Limits,
    view: View,
    workdir: Path,
    threads: int = 1,
    extra_env: dict[str, str] | None = None,
    capture_output: bool = False,
) -> Sandboxed:
    """Start ``command`` isolated and limited, without waiting.

    With ``capture_output`` the command's observations come back on fd 3 (``OUTPUT_FD``), capped
    at ``MAX_OUTPUT_BYTES``. The caller supervises it (``run_sandboxed`` waits; a served model
    stays up for a load test) and must ``kill`` it when done.
    """
    env = {**clean_env(view, threads), **(extra_env or {})}
    log_read, log_write = os.pipe()
    out_read, out_write = os.pipe() if capture_output else (None, None)
    kind = isolation()
    argv = wrap(kind, view, workdir, command)
    address_space = not view.devices
    cgroup = memory_cgroup(limits.memory_mb) if kind != "none" else None
    # the child's fd 3 becomes the output pipe in _child_setup (before Popen closes the others)
    pass_fds = (OUTPUT_FD,) if out_write is not None else ()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_write,
            stderr=log_write,
            pass_fds=pass_fds,
            cwd=str(view.workdir) if kind == "none" else str(workdir),
            env=env,
            start_new_session=True,
            preexec_fn=lambda: _child_setup(limits.memory_mb, address_space, out_write, cgroup),
        )
    except BaseException:
        if cgroup is not None:
            cgroup.remove()
        raise
    finally:
        os.close(log_write)
        if out_write is not None:
            os.close(out_write)
    output = _Drain(out_read, limit=MAX_OUTPUT_BYTES) if out_read is not None else None
    return Sandboxed(proc, view, limits, _Drain(log_read, tail=LOG_TAIL_BYTES), output, cgroup=cgroup)


def _child_setup(memory_mb: int, address_space: bool, out_fd: int | None, cgroup: MemoryCgroup | None) -> None:
    """In the child, before exec: its memory cgroup, the limits, and the output pipe on fd 3
    whatever its number was."""
    if cgroup is not None:
        cgroup.join()
    _limits(memory_mb, address_space)
    if out_fd is not None and out_fd != OUTPUT_FD:
        os.dup2(out_fd, OUTPUT_FD)
        os.set_inheritable(OUTPUT_FD, True)


def run_sandboxed(
    command: list[str],
    limits: Limits,
    view: View,
    workdir: Path,
    threads: int = 1,
    capture_output: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Finished:
    """Run ``command`` isolated, limited and supervised until it ends or hits a limit."""
    return supervised(spawn_sandboxed(command, limits, view, workdir, threads, extra_env, capture_output))


def supervised(running: Sandboxed) -> Finished:
    """Supervise a started process until it ends or hits a limit, then always kill what is left."""
    try:
        stopped_by = _supervise(running)
    finally:
        running.kill()  # also when the grader itself is stopped (grader.cli.Stopped)
    output = running.output
    if output is not None and output.overflow:
        raise WorkerError(f"worker output is larger than allowed ({MAX_OUTPUT_BYTES} bytes)")
    return Finished(
        running.proc.returncode,
        stopped_by,
        running.log_tail(),
        time.monotonic() - running.started,
        output.data() if output is not None else None,
        running.memory_limits(),
    )


def run_worker(
    job: Job, limits: Limits, workdir: Path, folders: dict[str, Path], device_root: Path = DEVICE_ROOT
) -> Observations:
    """A ``Sandbox``: run ``grader.worker`` on ``job`` in a child process and parse what it reports.

    The job file lies in a folder of its own, read-only to the worker like the job's folders
    (mounted at their own paths, so the worker is told those). A limit hit yields observations
    holding only the failure; a worker that breaks without a student-caused reason raises
    ``WorkerError`` (the grader's fault). ``device_root`` is where the GPUs' nodes are found.
    """
    _check_readable(folders)
    job_dir, view, command = _worker_setup(limits, workdir, folders)
    (job_dir / JOB_FILE).write_text(job.model_dump_json())
    done, sandbox, gpu = run_for_job(job, command, limits, view, workdir, device_root)
    if done.stopped is not None:
        return stopped(done.stopped, sandbox)
    return parse_observations(done.output, done.returncode, done.output_tail, sandbox, gpu_passed=gpu is not None)


def _check_readable(folders: dict[str, Path]) -> None:
    if isolation() != "none" and drop_to_nobody():  # the worker runs as nobody: it must be able to read its files
        check_readable(list(folders.values()), f"{SANDBOX_UID}:{SANDBOX_UID}")


def _worker_setup(limits: Limits, workdir: Path, folders: dict[str, Path]) -> tuple[Path, View, list[str]]:
    """The worker's job folder (read-only to it, like the job's folders, which are mounted at their
    own paths so the worker is told those), its view of the machine and its command line."""
    job_dir = workdir / "job"
    job_dir.mkdir(mode=0o755, exist_ok=True)
    mounted = {name: Path(path).resolve() for name, path in folders.items()}
    view = View(
        scratch=workdir / "scratch", scratch_mb=limits.scratch_mb, readonly=(job_dir.resolve(), *mounted.values())
    )
    command = worker_command(
        sys.executable,
        str(job_dir.resolve() / JOB_FILE),
        f"fd:{OUTPUT_FD}",
        {name: str(path) for name, path in mounted.items()},
    )
    return job_dir, view, command


class EarlyWorker:
    """A CPU worker started before its job exists, so that its imports and the runtime's warm-up
    (about 0.7 s) run while the host still vets the files on the other core. It waits for its job
    file (``--wait-for-job``); nothing of the submission is in its folders until the host has
    vetted and staged it there, and its limits hold from the start (the wall-time limit from the
    moment it has its job). ``run`` hands it the job; ``close`` stops it whatever happened."""

    def __init__(self, limits: Limits, workdir: Path, folders: dict[str, Path], threads: int) -> None:
        self.limits, self.workdir, self.threads = limits, workdir, threads
        self.folders = {name: Path(path).resolve() for name, path in folders.items()}
        self.job_dir, view, command = _worker_setup(limits, workdir, self.folders)
        self.running: Sandboxed | None = spawn_sandboxed(
            [*command, "--wait-for-job"], limits, view, workdir, threads, capture_output=True
        )

    def run(self, job: Job, folders: dict[str, Path]) -> Observations:
        """What the worker observes on ``job``; a job this worker was not started for (one that
        wants a GPU, other threads, or a folder it has not mounted) runs in a worker of its own."""
        running, self.running = self.running, None
        fits = (
            not wants_gpu(job)
            and job.measure.timing.threads == self.threads
            and all(self.folders.get(name) == Path(path).resolve() for name, path in folders.items())
        )
        if running is None or not fits or not running.alive():
            if running is not None:
                running.kill()
            return run_worker(job, self.limits, self.workdir, folders)
        try:
            _check_readable(folders)
            part = self.job_dir / f"{JOB_FILE}.part"
            part.write_text(job.model_dump_json())
            part.rename(self.job_dir / JOB_FILE)  # whole, or not there: the worker reads it once it appears
        except BaseException:
            running.kill()
            raise
        running.started = time.monotonic()
        done = supervised(running)
        if done.returncode == NO_JOB_EXIT and not done.output:  # it stopped waiting just as the job came
            return run_worker(job, self.limits, self.workdir, folders)
        sandbox = describe(isolation(), None, done.memory)
        if done.stopped is not None:
            return stopped(done.stopped, sandbox)
        return parse_observations(done.output, done.returncode, done.output_tail, sandbox)

    def close(self) -> None:
        if self.running is not None:
            self.running.kill()
            self.running = None


def start_early(limits: Limits, workdir: Path, folders: dict[str, Path], threads: int) -> EarlyWorker:
    """An ``EarlyStart`` for the local sandbox."""
    return EarlyWorker(limits, workdir, folders, threads)


def run_for_job(
    job: Job,
    command: list[str],
    limits: Limits,
    view: View,
    workdir: Path,
    device_root: Path = DEVICE_ROOT,
    driver: Path = DRIVER_GPUS,
) -> tuple[Finished, str, Gpu | None]:
    """Run ``command`` for ``job`` as ``run_worker`` does (its report on fd 3): with one leased GPU
    passed through where the job wants one and the machine has one, held until it has ended.
    Returns how it ended, the sandbox's description (which GPU; how memory was limited) and the GPU."""
    kind = isolation()
    with gpu_for(job, device_root, driver) as gpu:
        if gpu is not None:
            view = gpu_view(view, gpu, device_root)
        env = gpu_env(gpu, kind)
        done = run_sandboxed(command, limits, view, workdir, job.measure.timing.threads, True, env)
    return done, describe(kind, gpu, done.memory), gpu


def gpu_env(gpu: Gpu | None, kind: str) -> dict[str, str]:
    """CUDA told which GPU is the grading's: by UUID where the driver said it (exact in any case);
    else, in a plain child process (which sees every GPU), by index in PCI order. In a sandbox
    without the UUID nothing is needed: the other GPUs' nodes are absent."""
    if gpu is None:
        return {}
    if gpu.uuid:
        return {"CUDA_VISIBLE_DEVICES": gpu.uuid}
    return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": gpu.index} if kind == "none" else {}


def _supervise(running: Sandboxed) -> Problem | None:
    """Wait for the process; kill everything it started on the time, memory or scratch limit."""
    watch_scratch = isolation() == "none"
    while running.alive():
        problem = running.over_limit(watch_scratch)
        if problem is not None:
            kill_tree(running.proc)
            return problem
        try:
            running.proc.wait(timeout=POLL_S)  # back at once when it ends
        except subprocess.TimeoutExpired:
            pass
    if running.proc.returncode == -signal.SIGKILL:
        return memory_failure(running.limits)  # the kernel's OOM killer is the only other sender of SIGKILL
    if running.cgroup is not None and running.cgroup.oom_killed():
        return memory_failure(running.limits)  # one of its processes met the cgroup's limit
    return None


def descendants(pid: int) -> list[int]:
    """Every process started under ``pid``, however it detached: in a PID namespace they all stay
    under its init, which is ``pid``'s child."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                parent = int(handle.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[parent].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for child in children.get(current, ()):
            found.append(child)
            todo.append(child)
    return found


def namespace_rss_mb(pid: int) -> float:
    """Memory held by ``pid`` and every process it started: resident pages, and the pages of
    every memfd they hold open (those stay in RAM without being in anyone's RSS once unmapped)."""
    pages = 0
    members = [pid, *descendants(pid)]
    for member in members:
        try:
            with open(f"/proc/{member}/statm", "rb") as handle:
                pages += int(handle.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20 + memfd_bytes(members) / 2**20


def memfd_bytes(pids: list[int]) -> int:
    """Bytes stored in the memfd files these processes hold open, each file counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            path = f"/proc/{pid}/fd/{fd}"
            try:
                if not os.readlink(path).startswith("/memfd:"):
                    continue
                info = os.stat(path)
            except OSError:
                continue
            if (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total


def folder_bytes(folder: Path, limit_entries: int = 100_000) -> int:
    """Bytes of the files under ``folder`` (a watched scratch or socket folder), without following links."""
    total, seen = 0, 0
    stack = [str(folder)]
    while stack and seen < limit_entries:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    seen += 1
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
        except OSError:
            continue
    return total


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process, everything it started and its process group; then reap it."""
    for member in [*descendants(proc.pid), proc.pid]:
        try:
            os.kill(member, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
