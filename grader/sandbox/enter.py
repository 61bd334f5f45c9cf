"""The unshare fallback's init: runs as root inside fresh mount, PID, network, IPC and UTS
namespaces (``unshare --mount --pid --fork --kill-child ...``), builds the same minimal root that
bubblewrap would, then becomes the command as nobody, with no capability.

``python -m grader.sandbox.enter SPEC_JSON -- COMMAND...``. The spec names the new root's mount
point (an empty host folder), the read-only binds, the symlinks, the writable binds, the devices
(each a host node and its path under /dev) and the scratch tmpfs. Standard library only (ctypes
for mount(2)): nothing of the grader is imported before the root is sealed. Mounts made here live
in the private namespace only and go away with it; the host never sees them.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
LIBC = ctypes.CDLL(None, use_errno=True)
DEVICES = ("null", "zero", "full", "random", "urandom")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    result = LIBC.mount(
        source.encode() if source else None,
        target.encode(),
        fstype.encode() if fstype else None,
        ctypes.c_ulong(flags),
        data.encode() if data else None,
    )
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"mount {source} on {target}: {os.strerror(error)}")


def place(root: str, path: str, directory: bool) -> str:
    target = root + path
    if directory:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    return target


def bind(root: str, path: str, readonly: bool, flags: int = MS_NOSUID | MS_NODEV, source: str | None = None) -> None:
    """``source`` (default: ``path`` itself) at ``path`` inside the new root."""
    source = source or path
    target = place(root, path, os.path.isdir(source))
    mount(source, target, None, MS_BIND)
    mount(None, target, None, MS_REMOUNT | MS_BIND | flags | (MS_RDONLY if readonly else 0))


def build_root(spec: dict) -> str:
    root = spec["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=755")
    for kind, path in spec["system"]:
        if kind == "symlink":
            os.makedirs(os.path.dirname(root + path), exist_ok=True)
            os.symlink(os.readlink(path), root + path)
        else:
            bind(root, path, readonly=True)
    for path in spec["readonly"]:
        bind(root, path, readonly=True)
    for path in spec["writable"]:
        bind(root, path, readonly=False)
    os.makedirs(root + "/proc", exist_ok=True)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # the kernel's settings are global, whatever the namespaces: read-only in here
    mount(root + "/proc/sys", root + "/proc/sys", None, MS_BIND)
    mount(None, root + "/proc/sys", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    dev = place(root, "/dev", True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            bind(root, f"/dev/{name}", readonly=False, flags=MS_NOSUID)
    for source, path in spec["devices"]:  # a GPU's nodes, each at /dev/<its name> (source: the host's node)
        bind(root, path, readonly=False, flags=MS_NOSUID, source=source)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ):
        os.symlink(target, f"{dev}/{name}")
    shm = place(root, "/dev/shm", True)
    mount("tmpfs", shm, "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec['scratch_mb']}m,mode=1777")
    scratch = place(root, spec["scratch"], True)
    mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"size={spec['scratch_mb']}m,mode=1777")
    mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    return root


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    command = argv[argv.index("--") + 1 :]
    root = build_root(spec)
    os.chroot(root)
    os.chdir(spec["cwd"])
    # the command runs as nobody with no capability (setpriv is util-linux's): it can mount,
    # chroot, override file permissions or write the kernel's settings no more than any user
    ids = [f"--reuid={spec['uid']}", f"--regid={spec['uid']}", "--clear-groups"]
    drop = ["setpriv", *ids, "--bounding-set=-all", "--inh-caps=-all", "--ambient-caps=-all", "--no-new-privs", "--"]
    os.execvp(drop[0], drop + command)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
