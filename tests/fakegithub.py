"""A fake GitHub REST API on 127.0.0.1: a real threaded HTTP server, for PyGithub to talk to.

It implements what the grader uses — repository, pull request, the PR's changed files (paginated
with real ``Link`` headers), issue comments (a PR's and the whole repository's, listed paginated;
create, edit, delete), commits, commit statuses, git trees, and workflow-run artifacts (listed
paginated and filtered by name; the zip download answers GitHub's 302 to a pre-signed storage
address that needs no token) — keeps its state in memory, checks tokens (a read-only token gets
GitHub's 403 on writes), logs every request (with its query and ``Authorization`` header), and
injects faults: an error status (502, a 403 secondary rate limit with or without ``Retry-After``,
429), a slow response, or a response lost *after* the write took effect (the case that tempts a
client into posting twice). ``per_page_limit`` (GitHub's is 100) can be lowered so that a client
asking for big pages must still follow the ``Link`` headers.

Use it through the ``fake_github`` fixture::

    def test_x(fake_github):
        repo = fake_github.add_repo("course/grading", {"roster.yaml": b"..."})
        fake_github.add_token("bot-token", "github-actions[bot]", write=True)
        pr = fake_github.open_pull(repo, "octocat", {"submissions/a/hw2/x.onnx": b"..."})
        gh = fake_github.pygithub("bot-token")   # PyGithub with base_url and zero request spacing
        fake_github.add_artifact(repo, "result", {"result.json": b"{...}"}, run_id=1234)
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

SECONDARY_RATE_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID."
)


@dataclass
class Fault:
    """One injected fault for requests matching ``method`` and the ``path`` regex (full match).

    ``after=False``: answer ``status`` (after ``delay_s``) instead of doing anything.
    ``after=True``: do the request, then lose its response: wait ``delay_s`` and answer ``status``
    (or, with ``status=None``, the real response late — a client with a shorter timeout gives up).
    """

    method: str = "*"
    path: str = ".*"
    status: int | None = 502
    delay_s: float = 0.0
    after: bool = False
    retry_after: float | None = None
    message: str = ""
    times: int = 1

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.method in ("*", method) and re.fullmatch(self.path, path) is not None


class Request(NamedTuple):
    """One logged request: what was asked, how it was answered, and the credentials it carried."""

    method: str
    path: str
    status: int
    query: str = ""
    auth: str = ""  # the Authorization header as sent ("" without one)


@dataclass(frozen=True)
class Entry:
    """A file in a commit: a blob (regular or executable), a symlink (content is the target) or a submodule."""

    content: bytes = b""
    mode: str = "100644"

    @property
    def type(self) -> str:
        return "commit" if self.mode == "160000" else "blob"


def symlink(target: str) -> Entry:
    return Entry(target.encode(), "120000")


def submodule(commit_sha: str = "1" * 40) -> Entry:
    return Entry(commit_sha.encode(), "160000")


def sized(size: int) -> Entry:
    """A regular file of ``size`` bytes (content not materialised beyond what the tree reports)."""
    return Entry(b"\0" * min(size, 16) + f"#size={size}".encode(), "100644")


def lfs_file(size: int, oid: str = "") -> Entry:
    """A Git LFS file of ``size`` bytes as git holds it: its pointer (the tree lists ~130 bytes)."""
    from grader.contracts.lfs import pointer_text

    return Entry(pointer_text(oid or hashlib.sha256(str(size).encode()).hexdigest(), size), "100644")


def entry_size(entry: Entry) -> int:
    match = re.search(rb"#size=(\d+)$", entry.content)
    return int(match.group(1)) if match else len(entry.content)


@dataclass
class FakePull:
    number: int
    author: str
    association: str
    head_repo: str
    head_ref: str
    head_sha: str
    head_files: dict[str, Entry]
    changed: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    title: str = "Submission"
    before_sha: str = "0" * 40  # the head before the last push (the event's ``before``)


@dataclass
class FakeRepo:
    full_name: str
    files: dict[str, Entry]
    base_sha: str = ""
    pulls: dict[int, FakePull] = field(default_factory=dict)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)


class FakeGitHub:
    """The server's state and its controls; ``url`` is the ``base_url`` to give PyGithub."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.repos: dict[str, FakeRepo] = {}
        self.tokens: dict[str, tuple[str, bool]] = {}
        self.trees: dict[str, list[dict[str, Any]]] = {}
        self.commits: dict[str, str] = {}  # commit sha -> root tree sha
        self.git_blobs: dict[str, bytes] = {}  # blob sha -> content, served by "Get a blob"
        self.runs: dict[int, dict[str, Any]] = {}  # workflow run id -> "Get a workflow run" payload
        self.blobs: dict[int, bytes] = {}  # artifact id -> its zip, served at /_blobs/{id} without a token
        self.faults: list[Fault] = []
        self.log: list[Request] = []
        self.per_page_limit = 100  # GitHub's cap on per_page; lower it to force pagination
        self.ids = itertools.count(1001)
        self.clock = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeGitHub:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- set-up ----------------------------------------------------------------------------
    def add_token(self, token: str, login: str, write: bool = True) -> None:
        self.tokens[token] = (login, write)

    def add_repo(self, full_name: str, files: dict[str, bytes | Entry] | None = None) -> FakeRepo:
        with self.lock:
            repo = FakeRepo(full_name, {p: _entry(v) for p, v in (files or {}).items()})
            repo.base_sha = self._commit(repo.files)
            self.repos[full_name] = repo
            return repo

    def open_pull(
        self,
        repo: FakeRepo,
        author: str,
        files: dict[str, bytes | Entry | None],
        association: str = "CONTRIBUTOR",
        renames: dict[str, str] | None = None,
        commit_sha: str | None = None,
    ) -> FakePull:
        """A PR from ``author``'s fork: the base files changed by ``files`` (None deletes a path)."""
        with self.lock:
            number = len(repo.pulls) + 1
            now = self.tick()
            pull = FakePull(
                number=number,
                author=author,
                association=association,
                head_repo=f"{author}/{repo.full_name.split('/')[1]}",
                head_ref=f"submit-{number}",
                head_sha="",
                head_files={},
                changed=[],
                created_at=now,
                updated_at=now,
            )
            repo.pulls[number] = pull
            repo.comments.setdefault(number, [])
            self._set_head(repo, pull, dict(repo.files), files, renames or {}, commit_sha)
            return pull

    def push(
        self, repo: FakeRepo, pull: FakePull, files: dict[str, bytes | Entry | None], commit_sha: str | None = None
    ) -> str:
        """A new commit on the PR's branch; returns its SHA (``commit_sha``: a real git commit's, to regrade it)."""
        with self.lock:
            pull.updated_at = self.tick()
            self._set_head(repo, pull, dict(pull.head_files), files, {}, commit_sha)
            return pull.head_sha

    def add_comment(
        self, repo: FakeRepo, number: int, login: str, body: str, user_type: str | None = None
    ) -> dict[str, Any]:
        """A comment by anyone (e.g. a student pasting the grader's marker).

        The author's ``type`` is "Bot" for a login ending in ``[bot]``, else "User"; ``user_type`` overrides it.
        """
        with self.lock:
            comment = self._create_comment(repo, number, login, body)
            if user_type is not None:
                comment["user_type"] = user_type
            return comment

    def add_artifact(
        self,
        repo: FakeRepo,
        name: str,
        files: dict[str, bytes],
        run_id: int,
        expired: bool = False,
        overwrite: bool = False,
        workflow: str = ".github/workflows/grade.yml",
        event: str = "pull_request_target",
    ) -> dict[str, Any]:
        """What ``actions/upload-artifact`` leaves behind when workflow run ``run_id`` uploads ``files``.

        The payload is the artifact object of GitHub's REST "List artifacts for a repository"
        (docs.github.com/en/rest/actions/artifacts, example response), field for field. Its
        ``workflow_run`` describes the run, not the PR: this course's workflows run on
        ``pull_request_target`` and ``workflow_dispatch``, for which GitHub's "Events that trigger
        workflows" page gives GITHUB_SHA as the last commit of the base branch and GITHUB_REF as the
        base branch, so ``head_sha`` is the base branch's commit and never the PR head.

        A name is unique within a run: upload-artifact v4 refuses a second upload of the same name
        in the same run (HTTP 409, ``FileExistsError`` here) unless ``overwrite: true``, which deletes
        the earlier artifact and creates a new one (a new id) for the same run, as a re-run attempt does.
        """
        with self.lock:
            self.runs.setdefault(run_id, self._run_json(repo, run_id, workflow, event))
            earlier = [a for a in repo.artifacts if a["name"] == name and a["workflow_run"]["id"] == run_id]
            if earlier and not overwrite:
                raise FileExistsError(f"409 Conflict: an artifact named {name!r} already exists in run {run_id}")
            for artifact in earlier:
                repo.artifacts.remove(artifact)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                for path, data in files.items():
                    archive.writestr(path, data)
            number = next(self.ids)
            self.blobs[number] = buffer.getvalue()
            created = self.tick()
            base = f"{self.url}/repos/{repo.full_name}/actions"
            artifact = {
                "id": number,
                "node_id": f"MDg6QXJ0aWZhY3Q{number}",
                "name": name,
                "size_in_bytes": len(self.blobs[number]),
                "url": f"{base}/artifacts/{number}",
                "archive_download_url": f"{base}/artifacts/{number}/zip",
                "expired": expired,
                "digest": "sha256:" + hashlib.sha256(self.blobs[number]).hexdigest(),
                "created_at": _iso(created),
                "expires_at": _iso(created - timedelta(minutes=1) if expired else created + timedelta(days=90)),
                "updated_at": _iso(created),
                "workflow_run": {
                    "id": run_id,
                    "repository_id": 1,
                    "head_repository_id": 1,
                    "head_branch": "main",
                    "head_sha": repo.base_sha,
                },
            }
            repo.artifacts.append(artifact)
            return artifact

    def blob_files(self, artifact_id: int) -> dict[str, bytes]:
        """What downloading the artifact gives (actions/download-artifact unzips it)."""
        with zipfile.ZipFile(io.BytesIO(self.blobs[artifact_id])) as archive:
            return {name: archive.read(name) for name in archive.namelist()}

    def fail(self, **fault: Any) -> Fault:
        """Inject a fault (see ``Fault``); returns it so a test can check it was used up."""
        added = Fault(**fault)
        with self.lock:
            self.faults.append(added)
        return added

    def event(self, repo: FakeRepo, pull: FakePull, action: str = "synchronize") -> dict[str, Any]:
        """The ``pull_request_target`` event payload GitHub would send for the PR as it stands: the
        ``pull_request`` webhook's (GitHub's OpenAPI description, ``webhook-pull-request-synchronize``:
        action, number, pull_request, repository, sender, and before / after for a push)."""
        with self.lock:
            payload = {
                "action": action,
                "number": pull.number,
                "pull_request": self._pull_json(repo, pull),
                "repository": self._repo_json(repo),
                "sender": self._user_json(pull.author),
            }
            if action == "synchronize":
                payload.update(before=pull.before_sha, after=pull.head_sha)
            return payload

    def dispatch_event(
        self, repo: FakeRepo, sender: str, inputs: dict[str, str], ref: str = "refs/heads/main"
    ) -> dict[str, Any]:
        """The ``workflow_dispatch`` event payload (``webhook-workflow-dispatch``: inputs, ref,
        repository, sender, workflow), as regrade.yml's run would see it."""
        with self.lock:
            return {
                "inputs": dict(inputs),
                "ref": ref,
                "repository": self._repo_json(repo),
                "sender": self._user_json(sender),
                "workflow": ".github/workflows/regrade.yml",
            }

    def tick(self) -> datetime:
        self.clock += timedelta(minutes=1)
        return self.clock

    # --- inspection ------------------------------------------------------------------------
    def comments(self, repo: FakeRepo, number: int) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(c) for c in repo.comments.get(number, [])]

    def requests(self, method: str | None = None, path: str | None = None) -> list[Request]:
        with self.lock:
            return [
                r for r in self.log if (method is None or r[0] == method) and (path is None or re.fullmatch(path, r[1]))
            ]

    def pygithub(self, token: str, **options: Any):
        """PyGithub pointed at this server, with no request spacing (and no retries unless given)."""
        from github import Auth, Github

        options = {"seconds_between_requests": 0, "seconds_between_writes": 0, "retry": None, "timeout": 5, **options}
        return Github(auth=Auth.Token(token), base_url=self.url, **options)

    # --- internals: git objects ------------------------------------------------------------
    def _set_head(
        self,
        repo: FakeRepo,
        pull: FakePull,
        tree: dict[str, Entry],
        changes: dict[str, bytes | Entry | None],
        renames: dict[str, str],
        commit_sha: str | None = None,
    ) -> None:
        for path, value in changes.items():
            if value is None:
                tree.pop(path, None)
            else:
                tree[path] = _entry(value)
        for new, old in renames.items():
            tree[new] = tree.pop(old, Entry(b""))
        pull.head_files = tree
        pull.before_sha = pull.head_sha or "0" * 40
        pull.head_sha = self._commit(tree, salt=f"{repo.full_name}#{pull.number}@{pull.updated_at}", sha=commit_sha)
        pull.changed = _diff(repo.files, tree, renames)

    def _commit(self, files: dict[str, Entry], salt: str = "", sha: str | None = None) -> str:
        root = self._tree(files)
        sha = sha or hashlib.sha1(f"commit {root} {salt}".encode()).hexdigest()
        self.commits[sha] = root
        return sha

    def _tree(self, files: dict[str, Entry]) -> str:
        """Store the nested trees for ``files``; returns the root tree's SHA."""
        children: dict[str, dict[str, Entry]] = {}
        entries = []
        for path, entry in sorted(files.items()):
            head, _, rest = path.partition("/")
            if rest:
                children.setdefault(head, {})[rest] = entry
            else:
                blob = hashlib.sha1(b"blob " + entry.content).hexdigest()
                self.git_blobs[blob] = entry.content
                entries.append(
                    {
                        "path": head,
                        "mode": entry.mode,
                        "type": entry.type,
                        "sha": blob,
                        **({} if entry.type == "commit" else {"size": entry_size(entry)}),
                    }
                )
        for name, sub in children.items():
            entries.append({"path": name, "mode": "040000", "type": "tree", "sha": self._tree(sub)})
        entries.sort(key=lambda e: e["path"])
        sha = hashlib.sha1(json.dumps(entries, sort_keys=True).encode()).hexdigest()
        self.trees[sha] = entries
        return sha

    def _flatten(self, tree_sha: str, prefix: str = "") -> Iterator[dict[str, Any]]:
        for entry in self.trees[tree_sha]:
            yield {**entry, "path": prefix + entry["path"]}
            if entry["type"] == "tree":
                yield from self._flatten(entry["sha"], prefix + entry["path"] + "/")

    # --- internals: JSON shapes ------------------------------------------------------------
    def _user_json(self, login: str, kind: str | None = None) -> dict[str, Any]:
        """GitHub's ``simple-user``, every required field (tests/test_fake_payloads.py)."""
        number = int(hashlib.sha1(login.encode()).hexdigest()[:8], 16)
        api = f"{self.url}/users/{login}"
        return {
            "login": login,
            "id": number,
            "node_id": f"MDQ6VXNlcj{number}",
            "avatar_url": f"https://avatars.github.test/u/{number}?v=4",
            "gravatar_id": "",
            "url": api,
            "html_url": f"https://github.test/{login}",
            "followers_url": f"{api}/followers",
            "following_url": f"{api}/following{{/other_user}}",
            "gists_url": f"{api}/gists{{/gist_id}}",
            "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
            "subscriptions_url": f"{api}/subscriptions",
            "organizations_url": f"{api}/orgs",
            "repos_url": f"{api}/repos",
            "events_url": f"{api}/events{{/privacy}}",
            "received_events_url": f"{api}/received_events",
            "type": kind or ("Bot" if login.endswith("[bot]") else "User"),
            "site_admin": False,
        }

    def _run_json(self, repo: FakeRepo, run_id: int, workflow: str, event: str) -> dict[str, Any]:
        """GitHub's ``workflow-run`` ("Get a workflow run", docs.github.com/en/rest/actions/workflow-runs):
        the fields the grader reads (path, event) and the ones around them."""
        now = _iso(self.clock)
        return {
            "id": run_id,
            "name": workflow.rsplit("/", 1)[-1].removesuffix(".yml"),
            "node_id": f"WFR_kwLOAAAAAc{run_id}",
            "head_branch": "main",
            "head_sha": repo.base_sha,
            "path": workflow,
            "run_number": run_id % 1000,
            "run_attempt": 1,
            "event": event,
            "status": "completed",
            "conclusion": "success",
            "workflow_id": int(hashlib.sha1(workflow.encode()).hexdigest()[:7], 16),
            "url": f"{self.url}/repos/{repo.full_name}/actions/runs/{run_id}",
            "html_url": f"https://github.test/{repo.full_name}/actions/runs/{run_id}",
            "created_at": now,
            "updated_at": now,
            "run_started_at": now,
            "repository": self._repo_json(repo),
            "head_repository": self._repo_json(repo),
        }

    def _repo_json(self, repo: FakeRepo) -> dict[str, Any]:
        owner, name = repo.full_name.split("/")
        return {
            "id": 1,
            "node_id": "MDEwOlJlcG9zaXRvcnkx",
            "name": name,
            "full_name": repo.full_name,
            "private": False,
            "owner": self._user_json(owner),
            "html_url": f"https://github.test/{repo.full_name}",
            "description": None,
            "fork": False,
            "url": f"{self.url}/repos/{repo.full_name}",
            "default_branch": "main",
            "visibility": "public",
        }

    def _pull_json(self, repo: FakeRepo, pull: FakePull) -> dict[str, Any]:
        base = f"{self.url}/repos/{repo.full_name}"
        web = f"https://github.test/{repo.full_name}/pull/{pull.number}"
        return {
            "url": f"{base}/pulls/{pull.number}",
            "id": pull.number,
            "node_id": f"PR_kwDOAAAAAc{pull.number}",
            "html_url": web,
            "diff_url": f"{web}.diff",
            "patch_url": f"{web}.patch",
            "issue_url": f"{base}/issues/{pull.number}",
            "number": pull.number,
            "state": "open",
            "locked": False,
            "title": pull.title,
            "body": None,
            "draft": False,
            "closed_at": None,
            "merged_at": None,
            "merge_commit_sha": None,
            "user": self._user_json(pull.author),
            "author_association": pull.association,
            "head": {
                "sha": pull.head_sha,
                "ref": pull.head_ref,
                "label": f"{pull.author}:{pull.head_ref}",
                "repo": {
                    **self._repo_json(repo),
                    "id": 2,
                    "node_id": "MDEwOlJlcG9zaXRvcnky",
                    "name": pull.head_repo.split("/")[1],
                    "full_name": pull.head_repo,
                    "owner": self._user_json(pull.author),
                    "html_url": f"https://github.test/{pull.head_repo}",
                    "fork": True,
                    "url": f"{self.url}/repos/{pull.head_repo}",
                },
                "user": self._user_json(pull.author),
            },
            "base": {
                "sha": repo.base_sha,
                "ref": "main",
                "label": f"{repo.full_name.split('/')[0]}:main",
                "repo": self._repo_json(repo),
                "user": self._user_json(repo.full_name.split("/")[0]),
            },
            "changed_files": len(pull.changed),
            "labels": [],
            "created_at": _iso(pull.created_at),
            "updated_at": _iso(pull.updated_at),
        }

    def _comment_json(self, repo: FakeRepo, number: int, comment: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": comment["id"],
            "body": comment["body"],
            "user": self._user_json(comment["login"], comment.get("user_type")),
            "url": f"{self.url}/repos/{repo.full_name}/issues/comments/{comment['id']}",
            "issue_url": f"{self.url}/repos/{repo.full_name}/issues/{number}",
            "html_url": f"https://github.test/{repo.full_name}/pull/{number}#issuecomment-{comment['id']}",
            "created_at": comment["created_at"],
            "updated_at": comment["updated_at"],
        }

    def _create_comment(self, repo: FakeRepo, number: int, login: str, body: str) -> dict[str, Any]:
        now = _iso(self.tick())
        comment = {"id": next(self.ids), "login": login, "body": body, "created_at": now, "updated_at": now}
        repo.comments.setdefault(number, []).append(comment)
        return comment

    # --- internals: routing ----------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, str], body: Any, login: str | None, can_write: bool
    ) -> tuple[int, Any, dict[str, str]]:
        """Answer one authenticated request: (status, JSON body, extra headers)."""
        with self.lock:
            for pattern, verb, action in ROUTES:
                match = re.fullmatch(pattern, path)
                if match and verb == method:
                    repo = self.repos.get(match.group("repo"))
                    if repo is None:
                        return 404, {"message": "Not Found"}, {}
                    if method != "GET" and not can_write:
                        return 403, {"message": "Resource not accessible by integration"}, {}
                    return action(self, repo, match.groupdict(), query, body, login)
            return 404, {"message": "Not Found"}, {}

    def page(
        self, path: str, query: dict[str, str], items: list[Any], key: str | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        """One page of ``items``; with ``key``, wrapped as ``{"total_count": n, key: [...]}`` (the Actions API)."""
        per_page = max(1, min(self.per_page_limit, int(query.get("per_page", 30))))
        number = max(1, int(query.get("page", 1)))
        last = max(1, -(-len(items) // per_page))
        rels = ([("next", number + 1), ("last", last)] if number < last else []) + (
            [("prev", number - 1), ("first", 1)] if number > 1 else []
        )
        links = [
            f'<{self.url}{path}?{urlencode({**query, "per_page": per_page, "page": target})}>; rel="{rel}"'
            for rel, target in rels
        ]
        headers = {"Link": ", ".join(links)} if links else {}
        chunk = items[(number - 1) * per_page : number * per_page]
        return 200, ({"total_count": len(items), key: chunk} if key else chunk), headers

    def blob(self, path: str) -> tuple[int, Any, dict[str, str]] | None:
        """A pre-signed storage address (``/_blobs/{id}``): served without a token, like GitHub's; else None."""
        match = re.fullmatch(r"/_blobs/(\d+)", path)
        if match is None:
            return None
        with self.lock:
            data = self.blobs.get(int(match.group(1)))
        if data is None:
            return 404, b"<Error><Code>BlobNotFound</Code></Error>", {"Content-Type": "application/xml"}
        return 200, data, {"Content-Type": "application/zip"}


def _repo_get(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    return 200, fake._repo_json(repo), {}


def _pull_get(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    pull = repo.pulls.get(int(groups["number"]))
    return (200, fake._pull_json(repo, pull), {}) if pull else (404, {"message": "Not Found"}, {})


def _pull_files(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    pull = repo.pulls.get(int(groups["number"]))
    if pull is None:
        return 404, {"message": "Not Found"}, {}
    return fake.page(f"/repos/{repo.full_name}/pulls/{pull.number}/files", query, pull.changed)


def _comments_list(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    number = int(groups["number"])
    items = [fake._comment_json(repo, number, c) for c in repo.comments.get(number, [])]
    return fake.page(f"/repos/{repo.full_name}/issues/{number}/comments", query, items)


def _repo_comments_list(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    """Every issue and PR comment of the repository, oldest first (GitHub's default sort)."""
    items = sorted(
        (fake._comment_json(repo, number, c) for number, comments in repo.comments.items() for c in comments),
        key=lambda c: c["id"],
    )
    return fake.page(f"/repos/{repo.full_name}/issues/comments", query, items)


def _comment_create(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    number = int(groups["number"])
    if number not in repo.pulls:
        return 404, {"message": "Not Found"}, {}
    text = (body or {}).get("body")
    if not isinstance(text, str) or len(text) > 65536:
        return 422, {"message": "Validation Failed", "errors": [{"field": "body", "code": "custom"}]}, {}
    return 201, fake._comment_json(repo, number, fake._create_comment(repo, number, login, text)), {}


def _find_comment(repo: FakeRepo, comment_id: int) -> tuple[int, dict[str, Any]] | None:
    for number, comments in repo.comments.items():
        for comment in comments:
            if comment["id"] == comment_id:
                return number, comment
    return None


def _comment_get(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    found = _find_comment(repo, int(groups["id"]))
    return (200, fake._comment_json(repo, *found), {}) if found else (404, {"message": "Not Found"}, {})


def _comment_edit(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    found = _find_comment(repo, int(groups["id"]))
    if found is None:
        return 404, {"message": "Not Found"}, {}
    number, comment = found
    if comment["login"] != login:
        return 403, {"message": "You can only edit your own comments"}, {}
    text = (body or {}).get("body")
    if not isinstance(text, str) or len(text) > 65536:
        return 422, {"message": "Validation Failed"}, {}
    comment.update(body=text, updated_at=_iso(fake.tick()))
    return 200, fake._comment_json(repo, number, comment), {}


def _comment_delete(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    found = _find_comment(repo, int(groups["id"]))
    if found is None:
        return 404, {"message": "Not Found"}, {}
    number, comment = found
    repo.comments[number].remove(comment)
    return 204, None, {}


def _commit_get(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    sha = groups["sha"]
    if sha not in fake.commits:
        return 404, {"message": "No commit found for SHA"}, {}
    return (
        200,
        {
            "sha": sha,
            "url": f"{fake.url}/repos/{repo.full_name}/commits/{sha}",
            "commit": {"tree": {"sha": fake.commits[sha]}},
        },
        {},
    )


def _status_create(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    body = body or {}
    if body.get("state") not in ("error", "failure", "pending", "success"):
        return 422, {"message": "Validation Failed"}, {}
    if len(body.get("description") or "") > 140:
        return 422, {"message": "description is too long (maximum is 140 characters)"}, {}
    status = {
        "id": next(fake.ids),
        "state": body["state"],
        "description": body.get("description"),
        "context": body.get("context", "default"),
        "target_url": body.get("target_url"),
        "creator": fake._user_json(login),
        "created_at": _iso(fake.tick()),
        "url": f"{fake.url}/repos/{repo.full_name}/statuses/{groups['sha']}",
    }
    repo.statuses.setdefault(groups["sha"], []).append(status)
    return 201, status, {}


def _status_list(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    items = list(reversed(repo.statuses.get(groups["sha"], [])))
    return fake.page(f"/repos/{repo.full_name}/commits/{groups['sha']}/statuses", query, items)


def _tree_get(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    sha = fake.commits.get(groups["sha"], groups["sha"])
    if sha not in fake.trees:
        return 404, {"message": "Not Found"}, {}
    entries = list(fake._flatten(sha)) if query.get("recursive") else list(fake.trees[sha])
    for entry in entries:
        kind = "trees" if entry["type"] == "tree" else "blobs"
        entry["url"] = f"{fake.url}/repos/{repo.full_name}/git/{kind}/{entry['sha']}"
    return (
        200,
        {"sha": sha, "url": f"{fake.url}/repos/{repo.full_name}/git/trees/{sha}", "tree": entries, "truncated": False},
        {},
    )


def _blob_get(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    """GitHub's "Get a blob" (docs.github.com/en/rest/git/blobs, example response): base64 content
    in 60-character lines, its encoding, sha, size, url and node_id."""
    content = fake.git_blobs.get(groups["sha"])
    if content is None:
        return 404, {"message": "Not Found"}, {}
    encoded = base64.b64encode(content).decode()
    return (
        200,
        {
            "content": "\n".join(encoded[i : i + 60] for i in range(0, len(encoded), 60)) + "\n",
            "encoding": "base64",
            "url": f"{fake.url}/repos/{repo.full_name}/git/blobs/{groups['sha']}",
            "sha": groups["sha"],
            "size": len(content),
            "node_id": f"MDQ6QmxvYj{groups['sha'][:8]}",
        },
        {},
    )


def _run_get(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    run = fake.runs.get(int(groups["id"]))
    return (200, run, {}) if run is not None else (404, {"message": "Not Found"}, {})


def _artifacts_list(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    items = [a for a in repo.artifacts if "name" not in query or a["name"] == query["name"]]
    return fake.page(f"/repos/{repo.full_name}/actions/artifacts", query, items, key="artifacts")


def _artifact_zip(fake: FakeGitHub, repo: FakeRepo, groups, query, body, login):
    """GitHub answers 302 to a short-lived storage address; an expired artifact is 410 Gone."""
    artifact = next((a for a in repo.artifacts if a["id"] == int(groups["id"])), None)
    if artifact is None:
        return 404, {"message": "Not Found"}, {}
    if artifact["expired"]:
        return 410, {"message": "Artifact has expired"}, {}
    return 302, None, {"Location": f"{fake.url}/_blobs/{artifact['id']}"}


REPO = r"/repos/(?P<repo>[^/]+/[^/]+)"
ROUTES = [
    (REPO, "GET", _repo_get),
    (REPO + r"/pulls/(?P<number>\d+)", "GET", _pull_get),
    (REPO + r"/pulls/(?P<number>\d+)/files", "GET", _pull_files),
    (REPO + r"/issues/comments", "GET", _repo_comments_list),
    (REPO + r"/issues/(?P<number>\d+)/comments", "GET", _comments_list),
    (REPO + r"/issues/(?P<number>\d+)/comments", "POST", _comment_create),
    (REPO + r"/issues/comments/(?P<id>\d+)", "GET", _comment_get),
    (REPO + r"/issues/comments/(?P<id>\d+)", "PATCH", _comment_edit),
    (REPO + r"/issues/comments/(?P<id>\d+)", "DELETE", _comment_delete),
    (REPO + r"/commits/(?P<sha>[0-9a-f]{40})", "GET", _commit_get),
    (REPO + r"/commits/(?P<sha>[0-9a-f]{40})/statuses", "GET", _status_list),
    (REPO + r"/statuses/(?P<sha>[0-9a-f]{40})", "POST", _status_create),
    (REPO + r"/git/trees/(?P<sha>[0-9a-f]{40})", "GET", _tree_get),
    (REPO + r"/git/blobs/(?P<sha>[0-9a-f]{40})", "GET", _blob_get),
    (REPO + r"/actions/artifacts", "GET", _artifacts_list),
    (REPO + r"/actions/runs/(?P<id>\d+)", "GET", _run_get),
    (REPO + r"/actions/artifacts/(?P<id>\d+)/zip", "GET", _artifact_zip),
]


def _handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_PATCH(self) -> None:
            self._serve("PATCH")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            fault = self._take_fault(method, parts.path)
            if fault and not fault.after:
                time.sleep(fault.delay_s)
                if fault.status is not None:
                    self._record(method, parts, fault.status)
                    return self._fault_response(fault)
            status, body, headers = self._answer(method, parts.path, query, raw)
            lost = fault is not None and fault.after
            self._record(method, parts, fault.status or status if lost else status)
            if lost:
                time.sleep(fault.delay_s)
                if fault.status is not None:
                    return self._fault_response(fault)
            self._send(status, body, headers)

        def _record(self, method: str, parts, status: int) -> None:
            """Log the request as soon as its outcome is decided (a slow reply is logged before it is sent)."""
            with fake.lock:
                fake.log.append(Request(method, parts.path, status, parts.query, self.headers.get("Authorization", "")))

        def _take_fault(self, method: str, path: str) -> Fault | None:
            with fake.lock:
                for fault in fake.faults:
                    if fault.matches(method, path):
                        fault.times -= 1
                        return fault
            return None

        def _answer(self, method: str, path: str, query: dict[str, str], raw: bytes):
            stored = fake.blob(path) if method == "GET" else None
            if stored is not None:
                return stored
            auth = self.headers.get("Authorization", "")
            token = auth.split(" ", 1)[1] if " " in auth else ""
            if token not in fake.tokens:
                return 401, {"message": "Bad credentials"}, {}
            login, can_write = fake.tokens[token]
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                return 400, {"message": "Problems parsing JSON"}, {}
            return fake.handle(method, path, query, body, login, can_write)

        def _fault_response(self, fault: Fault) -> None:
            headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
            if fault.status in (403, 429):
                body: Any = {
                    "message": fault.message or SECONDARY_RATE_LIMIT,
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                }
                return self._send(fault.status, body, headers)
            page = f"<html><body><h1>{fault.status} {fault.message or 'Bad gateway'}</h1></body></html>".encode()
            return self._send(fault.status, page, {**headers, "Content-Type": "text/html"})

        def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
            data = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
            try:
                self.send_response(status)
                headers = {"Content-Type": "application/json; charset=utf-8", **headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test): nothing to answer

    return Handler


def _entry(value: bytes | Entry) -> Entry:
    return value if isinstance(value, Entry) else Entry(value)


def _diff(base: dict[str, Entry], head: dict[str, Entry], renames: dict[str, str]) -> list[dict[str, Any]]:
    """The PR's file list, as ``GET /pulls/{n}/files`` reports it."""
    changed = []
    for path in sorted(set(base) | set(head)):
        if path in renames.values() and path not in head:
            continue
        if path in renames:
            changed.append({"filename": path, "status": "renamed", "previous_filename": renames[path]})
        elif path not in head:
            changed.append({"filename": path, "status": "removed"})
        elif path not in base:
            changed.append({"filename": path, "status": "added"})
        elif base[path] != head[path]:
            changed.append({"filename": path, "status": "modified"})
    for item in changed:
        item.update(sha=hashlib.sha1(item["filename"].encode()).hexdigest(), additions=1, deletions=0, changes=1)
    return changed


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    """A fresh fake GitHub API on 127.0.0.1, stopped after the test."""
    fake = FakeGitHub().start()
    try:
        yield fake
    finally:
        fake.stop()
