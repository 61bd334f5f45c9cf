"""A grading image built without any registry, for tests and benchmarks against a real Docker engine.

The image is ``FROM scratch`` with a handful of empty folders, a passwd file and the symlinks a
Debian root has; the host's ``/usr``, its Python, the virtual environment and this checkout are
bind-mounted read-only at their own paths (``DockerSettings.readonly_mounts``), so the container
runs exactly the code under test. Everything else about the container is the production runner's.
The image names no USER, so that the runner's own ``user`` setting is what keeps the worker
unprivileged in these tests.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tarfile
from pathlib import Path
from typing import Any

from grader.config.course import DockerSettings

ROOT = Path(__file__).resolve().parent.parent
IMAGE_REPOSITORY = "compression-grader-hostpython"


def engine_or_reason() -> tuple[Any, str]:
    """A client for ``$DOCKER_HOST`` (or the default socket), or why there is none."""
    try:
        import docker
    except ImportError:
        return None, "the Docker SDK is not installed (pip install 'compression-grader[docker]')"
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "no engine here", said as the skip reason
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return None, (
            f"no Docker engine answers at {where} ({type(exc).__name__}); .ci/run installs docker.io and starts one"
        )
    return client, ""


def host_mounts() -> list[str]:
    """The host paths the container needs to run this checkout's Python, outermost only."""
    wanted = ["/usr", "/etc/ld.so.cache", sys.base_prefix, sys.prefix, str(ROOT)]
    resolved = sorted({str(Path(p).resolve()) for p in wanted if Path(p).exists()})
    return [p for p in resolved if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in resolved)]


def _dockerfile(python: str) -> bytes:
    return (
        "FROM scratch\n"
        "COPY rootfs/ /\n"
        f"ENV PATH={Path(python).parent}:/usr/local/bin:/usr/bin:/bin PYTHONPATH={ROOT}\n"
        f'LABEL org.compression-grader.test-image="host python {sys.version.split()[0]}"\n'
    ).encode()


def _context(python: str) -> io.BytesIO:
    """Dockerfile + a minimal root: no shell, no package manager, nothing but mount points."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(name: str, data: bytes | None = None, link: str | None = None, mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
            elif data is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            info.mode = mode
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        add("Dockerfile", _dockerfile(python), mode=0o644)
        for folder in ("rootfs", "rootfs/etc", "rootfs/usr", "rootfs/grading"):
            add(folder)
        add("rootfs/tmp", mode=0o1777)
        add("rootfs/var", mode=0o755)
        add("rootfs/var/tmp", mode=0o1777)  # writable by anyone, were the root filesystem writable
        for name, target in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            add(f"rootfs/{name}", link=target)
        add(
            "rootfs/etc/passwd",
            b"root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
            mode=0o644,
        )
        add("rootfs/etc/group", b"root:x:0:\nnogroup:x:65534:\n", mode=0o644)
    buffer.seek(0)
    return buffer


def build_image(client: Any) -> str:
    """Build (or reuse) the test image for this checkout and Python; returns its tag."""
    python = sys.executable
    digest = hashlib.sha256(_dockerfile(python)).hexdigest()[:12]
    tag = f"{IMAGE_REPOSITORY}:{digest}"
    client.images.build(fileobj=_context(python), custom_context=True, tag=tag, rm=True, pull=False)
    return tag


def settings(client: Any, **overrides: Any) -> DockerSettings:
    """Production settings with the test image and the host mounts it needs."""
    values = {
        "image": build_image(client),
        "readonly_mounts": host_mounts(),
        "service_mounts": host_mounts(),
        "pull": False,
        "gpus": "auto",
    }
    values.update(overrides)
    return DockerSettings(**values)


ENGINE_LOCK = Path("/tmp/compression-grader-docker-tests.lock")


def engine_to_ourselves():  # noqa: ANN201 - a generator fixture body
    """Hold the test engine alone for one test module: the Docker tests assert that no container
    of theirs is left behind, which only means something while no other pytest-xdist worker is
    running containers with the same label on the same engine."""
    import fcntl

    with open(ENGINE_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
