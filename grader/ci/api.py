"""The GitHub API through PyGithub: one configured client and the reads the policy needs.

Transport-level retries (``GithubRetry``: 5xx, 429, secondary rate limits with ``Retry-After``,
timeouts) cover reads and idempotent writes. POST is deliberately left out: a comment POST whose
response was lost may have been created, and retrying it blindly would post twice. The publisher
retries POSTs itself, re-reading the comments first (see ``publisher.py``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace

from github import Auth, Github, GithubRetry
from github.PullRequest import PullRequest
from github.Repository import Repository

from grader.ci.admission import ChangedFile, FolderTree, TreeEntry
from grader.contracts.lfs import MAX_POINTER_BYTES, looks_like_pointer, parse_pointer

MAX_POINTER_READS = 64  # blobs read to find LFS pointers; the default max_files of a folder
UNREADABLE_POINTER = -1  # the size of an LFS pointer that cannot be read: refused (check_tree)
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class ClientSettings:
    """How to talk to GitHub; the defaults are PyGithub's spacing and patient retries for CI."""

    api_url: str
    token: str
    timeout_s: int = 20  # PyGithub takes whole seconds
    attempts: int = 5
    backoff_s: float = 2.0
    secondary_rate_wait_s: float = 60.0
    request_spacing_s: float = 0.25
    write_spacing_s: float = 1.0
    per_page: int = 100


def transport_retry(settings: ClientSettings) -> GithubRetry:
    return GithubRetry(
        total=settings.attempts - 1,
        backoff_factor=settings.backoff_s,
        secondary_rate_wait=settings.secondary_rate_wait_s,
        status_forcelist=[429, *range(500, 600)],
        allowed_methods=IDEMPOTENT_METHODS,
        raise_on_status=False,
    )


def make_client(settings: ClientSettings) -> Github:
    return Github(
        auth=Auth.Token(settings.token),
        base_url=settings.api_url.rstrip("/"),
        timeout=settings.timeout_s,
        retry=transport_retry(settings),
        per_page=settings.per_page,
        seconds_between_requests=settings.request_spacing_s,
        seconds_between_writes=settings.write_spacing_s,
        user_agent="compression-grader",
        lazy=True,  # objects fetch on first use: a comment upsert costs no extra GET of the repository
    )


def changed_files(pull: PullRequest) -> list[ChangedFile]:
    """Every file the PR changes (PyGithub follows the ``Link`` headers page by page)."""
    return [ChangedFile(path=f.filename, status=f.status, previous_path=f.previous_filename) for f in pull.get_files()]


def folder_tree(
    repo: Repository, commit_sha: str, folder: str, max_pointer_reads: int = MAX_POINTER_READS
) -> FolderTree | None:
    """The entries under ``folder`` at ``commit_sha`` with their kinds and sizes; None if it is absent.

    Walks down one tree per path component, then lists the folder recursively, so the answer never
    depends on the whole repository's tree fitting in one (truncatable) response.
    """
    sha = commit_sha
    for name in folder.split("/"):
        entry = next((e for e in repo.get_git_tree(sha).tree if e.path == name), None)
        if entry is None or entry.type != "tree":
            return None
        sha = entry.sha
    tree = repo.get_git_tree(sha, recursive=True)
    entries = [TreeEntry(path=e.path, kind=_kind(e.type, e.mode), size=e.size or 0) for e in tree.tree]
    sized = _lfs_sizes(repo, tree.tree, entries, max_pointer_reads)
    return FolderTree(entries=sized, truncated=bool(tree.raw_data.get("truncated")))


def _lfs_sizes(repo: Repository, listed: list, entries: list[TreeEntry], max_reads: int) -> list[TreeEntry]:
    """Each Git LFS pointer's entry with the size of the file it stands for.

    A tree lists an LFS file at its pointer's ~130 bytes, which would let any file past the size
    caps. Every blob small enough to be a pointer is read (one "Get a blob" call each), at most
    ``max_reads`` (the policy passes its file limit): a folder with more small files than that is
    refused for its file count, so no pointer goes unread in a folder that is let through.
    """
    small = [i for i, e in enumerate(entries) if e.kind == "file" and e.size < MAX_POINTER_BYTES]
    if len(small) > max_reads:
        return entries
    out = list(entries)
    for i in small:
        data = base64.b64decode(repo.get_git_blob(listed[i].sha).content or "")
        if looks_like_pointer(data):
            pointer = parse_pointer(data)
            out[i] = replace(entries[i], size=pointer.size if pointer else UNREADABLE_POINTER, lfs=True)
    return out


def _kind(type_: str, mode: str) -> str:
    if type_ == "tree":
        return "folder"
    if type_ == "commit" or mode == "160000":
        return "submodule"
    if mode == "120000":
        return "symlink"
    return "file"
