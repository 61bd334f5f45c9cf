"""What a sandboxed process sees of the host: the system's libraries, the grader's own Python, the
folders it was given, and nothing else.

Nothing worth stealing is inside the sandbox: not the home folders, not the rest of the checkout
(other teams' submissions, the results store), not a runner's secret folder, not ``/tmp``. The
process gets a private, size-limited scratch (a tmpfs: ``HOME``, ``TMPDIR`` and its working
folder) that disappears with it; the only host folders it may write are the ``writable`` ones a
service listens in, and those are size-watched.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from grader.sandbox.gpus import DEVICE_ROOT, Gpu

SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/sys/devices/system/cpu")
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives")
GRADER_ROOT = Path(__file__).resolve().parents[2]  # holds the grader package and the course's reference code
# the driver's nodes every CUDA process opens besides its GPU's own /dev/nvidiaN: control, unified
# memory (the CUDA runtime needs it), its tools (profiling counters), and mode setting (opened by
# some driver versions at init); each passed where it exists
GPU_CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
SYS_ROOT = Path("/sys")
# who the sandboxed process is when the grader runs as root: nobody, so that the files root may
# write without a capability (sysctls under /proc/sys, other users' files) stay out of reach
SANDBOX_UID = 65534


def drop_to_nobody() -> list[str]:
    """The command prefix (util-linux's setpriv) that leaves root for ``SANDBOX_UID`` with no
    capability, bounding set included, and no way back (``no_new_privs``); empty when the grader
    does not run as root (then the process is already an ordinary user)."""
    common = ["--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs"]
    if os.geteuid() != 0:
        return []
    ids = [f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups"]
    return ["setpriv", *ids, *common, "--"]


@dataclass(frozen=True)
class View:
    """The host paths a sandboxed process may use; everything else of the host is absent.

    ``readonly`` paths appear read-only at their own paths; ``writable`` host folders appear
    read-write (a service's socket folder); ``scratch`` is where its private tmpfs of
    ``scratch_mb`` is mounted; ``devices`` are host device nodes it may open, each at
    ``/dev/<its name>`` (so a test's fake nodes stand where the real ones would).
    """

    scratch: Path
    scratch_mb: int = 256
    readonly: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    devices: tuple[Path, ...] = field(default=())  # device nodes (a GPU's), each at /dev/<its name>
    cwd: Path | None = None  # where it starts (default: the scratch)

    @property
    def workdir(self) -> Path:
        return self.cwd or self.scratch


@lru_cache(maxsize=1)
def system_view() -> tuple[tuple[str, str], ...]:
    """(kind, path) of what every sandboxed process needs: ``symlink`` entries are recreated as links
    (merged-/usr systems), ``bind`` entries bound read-only."""
    entries: list[tuple[str, str]] = []
    for path in (*SYSTEM_PATHS, *SYSTEM_FILES):
        if os.path.islink(path):
            entries.append(("symlink", path))
        elif os.path.exists(path):
            entries.append(("bind", path))
    python = {sys.base_prefix, sys.prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    libraries = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p and os.path.isdir(p)]
    code = [str(GRADER_ROOT / "grader"), str(GRADER_ROOT / "reference")]
    for path in sorted({*python, *libraries, *code}):
        if os.path.exists(path) and not _covered(path, entries):
            entries.append(("bind", os.path.realpath(path)))
    return tuple(entries)


def _covered(path: str, entries: list[tuple[str, str]]) -> bool:
    real = os.path.realpath(path)
    return any(kind == "bind" and (real == p or real.startswith(p.rstrip("/") + "/")) for kind, p in entries)


def gpu_view(view: View, gpu: Gpu, device_root: Path = DEVICE_ROOT, sys_root: Path = SYS_ROOT) -> View:
    """``view`` with one GPU passed through: the driver's control nodes and that GPU's node, found
    under ``device_root``; every other GPU's node stays absent, so it cannot be opened. Plus the
    driver's sysfs, read-only (``gpu_sysfs``). ``/proc/driver/nvidia`` comes with the sandbox's own
    ``/proc``."""
    nodes = [device_root / name for name in GPU_CONTROL_NODES if (device_root / name).exists()]
    nodes.append(device_root / gpu.node)
    return replace(view, devices=(*view.devices, *nodes), readonly=(*view.readonly, *gpu_sysfs(sys_root)))


def gpu_sysfs(sys_root: Path = SYS_ROOT) -> list[Path]:
    """The read-only sysfs that CUDA's and NVML's user-space driver reads, where the NVIDIA kernel
    module is loaded (none otherwise): without it ``cuInit`` fails with CUDA_ERROR_OPERATING_SYSTEM.
    Only the PCI hierarchy and NUMA nodes of ``/sys/devices``, not its virtual devices (network
    interfaces, DMI identifiers) nor ``/sys/fs``, ``/sys/kernel`` or ``/sys/class``."""
    if not (sys_root / "module" / "nvidia").is_dir():
        return []
    wanted = [
        sys_root / "module" / "nvidia",  # the driver checks that its kernel module is loaded (initstate)
        sys_root / "module" / "nvidia_uvm",  # and the unified-memory module, for the CUDA runtime
        sys_root / "bus" / "pci" / "devices",  # how it finds the GPU: links to its PCI device folder
        *sorted((sys_root / "devices").glob("pci*")),  # where those links lead: the GPU's PCI attributes
        sys_root / "devices" / "system" / "node",  # NUMA nodes: which CPUs and memory are near the GPU
    ]
    return [path for path in wanted if path.exists()]
