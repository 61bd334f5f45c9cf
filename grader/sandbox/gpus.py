"""The machine's GPUs, and a lease on one of them for the length of one grading.

Two gradings on one chip disturb each other's timings and share its memory, so a grading that
wants a GPU gets exactly one, alone, whichever runner starts it (the local sandbox or a Docker
container) and however many gradings one host runs at once (a regrade's process pool, two CI
runners on one machine). They take turns through one lock file per GPU in a host folder
(``$GRADER_GPU_LOCKS``, default ``/tmp/compression-grader-gpus``), held with ``flock``: the
kernel drops such a lock when its holder exits, however it exits, so a killed grader never leaves
a GPU locked; a grader stopped by a signal releases it in a ``finally`` (``grader.cli`` turns
SIGTERM into an exception).

GPUs are numbered as the driver numbers their nodes, ``/dev/nvidiaN`` (its minor number, which
is nvidia-smi's index on the machines we know), and known by UUID where the driver's
``/proc/driver/nvidia/gpus/*/information`` says it: the Docker runner passes the UUID, which names
the same chip whatever order the NVIDIA toolkit counts in. The folder and the device root are
parameters, so tests lease over fake GPUs.
"""

from __future__ import annotations

import fcntl
import os
import re
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from grader.contracts.job import Job
from grader.errors import WorkerError

DEVICE_ROOT = Path("/dev")
DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU, by PCI address
LOCKS_ENV = "GRADER_GPU_LOCKS"
DEFAULT_LOCKS = Path("/tmp/compression-grader-gpus")
WAIT_S = 1800.0  # a regrade pool larger than the GPU count waits its turn; this long means something hangs
POLL_S = 0.5
_NODE = re.compile(r"nvidia([0-9]+)")


@dataclass(frozen=True)
class Gpu:
    """One GPU: its index (the N of ``/dev/nvidiaN``) and, where known, its UUID."""

    index: str
    uuid: str | None = None

    @property
    def node(self) -> str:
        """Its device node's name under ``/dev``."""
        return f"nvidia{self.index}"

    @property
    def key(self) -> str:
        """What its lock file is named by: the same for both runners on one host."""
        return self.index or str(self.uuid)

    @property
    def docker_id(self) -> str:
        """What a Docker ``DeviceRequest`` names it by: the UUID where known (unambiguous)."""
        return self.uuid or self.index

    def label(self) -> str:
        return f"GPU {self.index}" if self.index else str(self.uuid)


def wants_gpu(job: Job) -> bool:
    """Whether ``job`` needs a GPU: it measures on CUDA (``cuda``, or ``auto`` where there is one),
    or it builds a model on the GPU (a TensorRT engine, ONNX Runtime on CUDA), whatever device it times on."""
    return job.measure.device in ("cuda", "auto") or bool(job.measure.derived)


def list_gpus(device_root: Path = DEVICE_ROOT, driver: Path = DRIVER_GPUS) -> list[Gpu]:
    """Every GPU whose character device ``nvidiaN`` is under ``device_root``, by index; none at
    all without the driver's control node ``nvidiactl`` (then no GPU can be used here)."""
    if not (device_root / "nvidiactl").exists():
        return []
    uuids = driver_uuids(driver)
    indices = []
    for entry in device_root.iterdir():
        match = _NODE.fullmatch(entry.name)
        if match and stat.S_ISCHR(entry.stat().st_mode):
            indices.append(int(match.group(1)))
    return [Gpu(str(i), uuids.get(i)) for i in sorted(indices)]


def driver_uuids(driver: Path = DRIVER_GPUS) -> dict[int, str]:
    """Minor number -> UUID, from each GPU's ``information`` file (``Device Minor:``, ``GPU UUID:``)."""
    found: dict[int, str] = {}
    try:
        folders = list(driver.iterdir())
    except OSError:
        return found
    for folder in folders:
        try:
            lines = (folder / "information").read_text().splitlines()
        except OSError:
            continue
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        if fields.get("Device Minor", "").isdigit() and fields.get("GPU UUID", "").startswith("GPU-"):
            found[int(fields["Device Minor"])] = fields["GPU UUID"]
    return found


def locks_folder() -> Path:
    """The host folder of the GPU lock files: ``$GRADER_GPU_LOCKS``, else ``/tmp/compression-grader-gpus``."""
    return Path(os.environ.get(LOCKS_ENV) or DEFAULT_LOCKS)


@dataclass
class _Held:
    fd: int
    gpu: Gpu
    count: int = 1


_HELD: dict[tuple[str, str], _Held] = {}  # (lock folder, GPU key) -> a lease this process holds
_HELD_LOCK = threading.Lock()


def _forget_in_child() -> None:
    """A forked child holds none of its parent's leases: it must not hand out its parent's GPU
    again. (Its copies of the lock descriptors stay open, untouched: a ``subprocess`` child may
    be about to use those descriptor numbers, and ``O_CLOEXEC`` closes them at its ``exec``.)"""
    _HELD.clear()


os.register_at_fork(after_in_child=_forget_in_child)


@contextmanager
def lease(
    gpus: Sequence[Gpu], lock_dir: Path | None = None, wait_s: float = WAIT_S, poll_s: float = POLL_S
) -> Iterator[Gpu]:
    """One of ``gpus``, no other process's on this host until the block ends.

    Tries each in turn with a non-blocking ``flock`` and, while all are held, polls until one is
    free or ``wait_s`` has passed (a ``WorkerError``: the host is overloaded, not the student's
    doing). A process already holding one of them gets that one again: a grading's reference and
    team services, side by side, share their grading's GPU instead of waiting on themselves.
    """
    if not gpus:
        raise ValueError("no GPU to lease")
    folder = lock_dir or locks_folder()
    held = _reuse(folder, gpus) or _acquire(folder, gpus, wait_s, poll_s)
    try:
        yield held.gpu
    finally:
        _release(folder, held.gpu)


def _reuse(folder: Path, gpus: Sequence[Gpu]) -> _Held | None:
    with _HELD_LOCK:
        for gpu in gpus:
            held = _HELD.get((str(folder), gpu.key))
            if held is not None:
                held.count += 1
                return held
    return None


def _acquire(folder: Path, gpus: Sequence[Gpu], wait_s: float, poll_s: float) -> _Held:
    _prepare(folder)
    deadline = time.monotonic() + wait_s
    while True:
        for gpu in gpus:
            fd = _try_lock(folder / f"gpu-{gpu.key}.lock")
            if fd is not None:
                held = _Held(fd, gpu)
                with _HELD_LOCK:
                    _HELD[(str(folder), gpu.key)] = held
                return held
        if time.monotonic() >= deadline:
            raise WorkerError(
                f"all {len(gpus)} GPUs are busy with other gradings (waited {wait_s:.0f} s; locks in {folder})"
            )
        time.sleep(poll_s)


def _release(folder: Path, gpu: Gpu) -> None:
    with _HELD_LOCK:
        held = _HELD.get((str(folder), gpu.key))
        if held is None:  # a forked child leaving its parent's block: the lease is the parent's to end
            return
        held.count -= 1
        if held.count:
            return
        del _HELD[(str(folder), gpu.key)]
    os.close(held.fd)  # closing the only descriptor drops the flock


def _prepare(folder: Path) -> None:
    """The lock folder; open to every user's gradings (sticky, like /tmp) when this process makes it,
    never changed when it exists (it may be a folder the admin chose)."""
    try:
        folder.mkdir(parents=True)
        folder.chmod(0o1777)
    except FileExistsError:
        pass
    except OSError as exc:
        raise WorkerError(f"cannot use the GPU lock folder {folder} (set ${LOCKS_ENV}): {exc}") from None


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding ``path``'s exclusive lock, or None while another holds it.

    Read-only, so another user's lock file serves as well; never through a link; not inherited by
    the sandboxed child (``O_CLOEXEC``), which must not be able to keep the GPU after the grading.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise WorkerError(f"cannot open the GPU lock file {path} (set ${LOCKS_ENV}): {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def gpu_for(
    job: Job, device_root: Path = DEVICE_ROOT, driver: Path = DRIVER_GPUS, lock_dir: Path | None = None
) -> Iterator[Gpu | None]:
    """The GPU the local sandbox passes to ``job``: one leased where the job wants one and the
    machine has one, else None (a CPU job, or a machine without an NVIDIA driver)."""
    gpus = list_gpus(device_root, driver) if wants_gpu(job) else []
    if not gpus:
        yield None
        return
    with lease(gpus, lock_dir) as gpu:
        yield gpu
