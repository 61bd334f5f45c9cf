"""A memory cgroup for one sandboxed process tree, where this machine lets the grader make one.

Resident memory is not all the memory a process can hold: pages of a ``memfd`` or of a shared
memory segment count in no process's RSS once unmapped, yet stay in RAM. A cgroup's limit counts
them (shmem is charged to the cgroup that touched it), so where one can be made the kernel
enforces the sandbox's memory limit over everything the tree allocates. Made under the grader's
own cgroup, in the cgroup v2 hierarchy where it is delegated (a ``memory`` controller available
below the grader's cgroup) or the v1 ``memory`` hierarchy where it is writable (root on most
machines and containers); where neither works, ``None``, and the local sandbox's watchdog counts
memfd files as well as resident memory instead.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

PROC_CGROUP = Path("/proc/self/cgroup")
MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True)
class MemoryCgroup:
    """A child cgroup with a hard memory limit: join it before exec, read it, remove it after."""

    path: Path
    version: int

    def join(self) -> None:
        """In the child before exec (so everything it starts is inside too)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process here for the limit."""
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value or 0) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def used_mb(self) -> float | None:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        try:
            return int((self.path / name).read_text()) / 2**20
        except (OSError, ValueError):
            return None

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


def memory_cgroup(limit_mb: int) -> MemoryCgroup | None:
    """A new cgroup limited to ``limit_mb`` (memory and swap), or ``None`` where none can be made."""
    for version, base in _own_cgroups():
        child = base / f"grader-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            child.mkdir()
        except OSError:
            continue
        try:
            if version == 2 and "memory" not in (child / "cgroup.controllers").read_text().split():
                raise OSError("no memory controller delegated here")
            _limit(child, version, limit_mb * 2**20)
            return MemoryCgroup(child, version)
        except OSError:
            try:
                child.rmdir()
            except OSError:
                pass
    return None


def _limit(child: Path, version: int, limit: int) -> None:
    if version == 2:
        (child / "memory.max").write_text(str(limit))
        swap = child / "memory.swap.max"
        if swap.exists():
            swap.write_text("0")
        return
    (child / "memory.limit_in_bytes").write_text(str(limit))
    swap = child / "memory.memsw.limit_in_bytes"
    if swap.exists():
        try:
            swap.write_text(str(limit))
        except OSError:
            pass  # swap accounting off: the memory limit alone holds


def _own_cgroups() -> list[tuple[int, Path]]:
    """(version, folder) of the grader's own cgroup in each hierarchy that has a memory controller."""
    try:
        lines = PROC_CGROUP.read_text().splitlines()
        mounts = MOUNTINFO.read_text().splitlines()
    except OSError:
        return []
    found: list[tuple[int, Path]] = []
    for line in lines:
        number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if number == "0" and controllers == "":
            found += [(2, _inside(point, root, path)) for point, root in _mount_points(mounts, "cgroup2", None)]
        elif "memory" in controllers.split(","):
            found += [(1, _inside(point, root, path)) for point, root in _mount_points(mounts, "cgroup", "memory")]
    return [(v, p) for v, p in found if p.is_dir()]


def _inside(point: Path, root: str, path: str) -> Path:
    """Where cgroup ``path`` lies under a mount of the hierarchy whose own root is ``root``."""
    relative = path[len(root) :] if root != "/" and (path + "/").startswith(root.rstrip("/") + "/") else path
    return point / relative.lstrip("/")


def _mount_points(mounts: list[str], fstype: str, option: str | None) -> list[tuple[Path, str]]:
    """(mount point, the hierarchy's folder mounted there) of each mount of ``fstype``."""
    points = []
    for line in mounts:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or not tail or tail[0] != fstype:
            continue
        if option is not None and option not in (tail[2] if len(tail) > 2 else "").split(","):
            continue
        points.append((Path(fields[4]), fields[3]))
    return points
