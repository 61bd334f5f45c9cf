"""The Git LFS pointer file (git-lfs's spec v1): what a repository holds in place of a large file.

With Git LFS, git's tree and ``git archive`` carry a pointer of about 130 bytes, and the file
itself (the *object*) lives in LFS storage under its SHA-256. Whoever reads sizes from git (the
policy job's size caps) or files from git (a regrade) must read the pointer, not take it for the
file. The spec: https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = b"version https://git-lfs.github.com/spec/v1"
# git-lfs still reads pointers of its predecessors' versions, and smudges them like its own
PREFIXES = (PREFIX, b"version https://hawser.github.com/spec/v1", b"version http://git-media.io/v/2")
MAX_POINTER_BYTES = 1024  # the spec: "Pointer files must be stored in Git with a size of less than 1024 bytes"
_OID = re.compile(rb"^oid sha256:([0-9a-f]{64})$", re.M)
_SIZE = re.compile(rb"^size ([0-9]+)$", re.M)


@dataclass(frozen=True)
class Pointer:
    oid: str  # the object's SHA-256, hex
    size: int  # the object's size in bytes: the size that counts against a cap

    @property
    def object_path(self) -> str:
        """Where git-lfs keeps the object inside ``.git/lfs/objects``."""
        return f"{self.oid[0:2]}/{self.oid[2:4]}/{self.oid}"


def looks_like_pointer(data: bytes) -> bool:
    """Small and opening with a pointer's version line (any git-lfs can smudge): treat as a pointer,
    whether or not the rest parses, so an odd one fails closed instead of passing as a tiny file."""
    return len(data) < MAX_POINTER_BYTES and data.startswith(PREFIXES)


def parse_pointer(data: bytes) -> Pointer | None:
    """The pointer ``data`` is, or None when it is not one that can be read (see ``looks_like_pointer``)."""
    if not looks_like_pointer(data):
        return None
    oid, size = _OID.search(data), _SIZE.search(data)
    if oid is None or size is None:
        return None
    return Pointer(oid.group(1).decode(), int(size.group(1)))


def pointer_text(oid: str, size: int) -> bytes:
    """A canonical pointer (what ``git lfs`` commits)."""
    return PREFIX + f"\noid sha256:{oid}\nsize {size}\n".encode()
