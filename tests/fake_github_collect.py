"""A small fake of the GitHub REST API, just the endpoints ``grader results collect`` uses.

A real threaded HTTP server on 127.0.0.1 that PyGithub talks to over real sockets: token
authentication, ``Link`` header pagination (pages capped small so the collector must follow
them), the artifact zip download's 302 redirect to a blob address. It is separate from the fuller
fake GitHub of the workflows' tests (``tests/fakegithub.py``) and is meant to be merged into it.
"""

from __future__ import annotations

import io
import json
import re
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

GITHUB_TIME = "%Y-%m-%dT%H:%M:%SZ"


@dataclass
class FakeRepo:
    owner: str
    name: str
    comments: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    blobs: dict[int, bytes] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


class FakeGitHub:
    """``with FakeGitHub(token="t") as gh: gh.repo("o", "n").add_comment(...); gh.url`` is the API base."""

    def __init__(self, token: str = "test-token", page_size: int = 2) -> None:
        self.token = token
        self.page_size = page_size
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []  # (path, Authorization header) for assertions
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeGitHub":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def repo(self, owner: str, name: str) -> FakeRepo:
        return self.repos.setdefault(f"{owner}/{name}".lower(), FakeRepo(owner, name))

    # fixtures ------------------------------------------------------------------------------

    def add_comment(self, repo: FakeRepo, issue: int, login: str, body: str, user_type: str = "Bot") -> None:
        number = sum(len(r.comments) for r in self.repos.values()) + 1
        base = f"{self.url}/repos/{repo.full_name}"
        repo.comments.append({
            "id": number, "node_id": f"IC_{number}", "body": body,
            "user": {"login": login, "id": 1000 + number, "type": user_type},
            "html_url": f"https://github.com/{repo.full_name}/pull/{issue}#issuecomment-{number}",
            "issue_url": f"{base}/issues/{issue}", "url": f"{base}/issues/comments/{number}",
            "created_at": "2026-12-10T12:00:00Z", "updated_at": "2026-12-10T12:00:00Z",
        })

    def add_artifact(self, repo: FakeRepo, name: str, files: dict[str, bytes], head_sha: str,
                     expired: bool = False) -> int:
        number = sum(len(r.artifacts) for r in self.repos.values()) + 1
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path, data in files.items():
                archive.writestr(path, data)
        repo.blobs[number] = buffer.getvalue()
        base = f"{self.url}/repos/{repo.full_name}"
        repo.artifacts.append({
            "id": number, "node_id": f"A_{number}", "name": name, "size_in_bytes": len(repo.blobs[number]),
            "url": f"{base}/actions/artifacts/{number}", "archive_download_url": f"{base}/actions/artifacts/{number}/zip",
            "expired": expired, "created_at": "2026-12-10T12:00:00Z", "updated_at": "2026-12-10T12:00:00Z",
            "expires_at": "2027-03-10T12:00:00Z",
            "workflow_run": {"id": 5000 + number, "head_branch": "hw2", "head_sha": head_sha},
        })
        return number

    # HTTP ----------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                fake.requests.append((self.path, self.headers.get("Authorization", "")))
                fake._route(self)

        return Handler

    def _route(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        blob = re.fullmatch(r"/_blobs/([^/]+)/([^/]+)/(\d+)", url.path)
        if blob:  # a pre-signed storage address: no token needed, like GitHub's
            repo = self.repos.get(f"{blob.group(1)}/{blob.group(2)}".lower())
            data = repo.blobs.get(int(blob.group(3))) if repo else None
            return self._send(h, 200, data, "application/zip") if data else self._json(h, 404, {"message": "Not Found"})
        if h.headers.get("Authorization", "") not in (f"token {self.token}", f"Bearer {self.token}"):
            return self._json(h, 401, {"message": "Bad credentials"})
        match = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)?", url.path)
        repo = self.repos.get(f"{match.group(1)}/{match.group(2)}".lower()) if match else None
        if repo is None:
            return self._json(h, 404, {"message": "Not Found"})
        rest = match.group(3) or ""
        if rest == "":
            return self._json(h, 200, {"id": 1, "name": repo.name, "full_name": repo.full_name,
                                       "owner": {"login": repo.owner, "id": 1, "type": "Organization"},
                                       "url": f"{self.url}/repos/{repo.full_name}", "private": True})
        if rest == "/issues/comments":
            return self._page(h, url.path, query, repo.comments, None)
        if rest == "/actions/artifacts":
            items = [a for a in repo.artifacts if "name" not in query or a["name"] == query["name"]]
            return self._page(h, url.path, query, items, "artifacts")
        zipped = re.fullmatch(r"/actions/artifacts/(\d+)/zip", rest)
        if zipped:
            h.send_response(302)
            h.send_header("Location", f"{self.url}/_blobs/{repo.full_name}/{zipped.group(1)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return None
        return self._json(h, 404, {"message": "Not Found"})

    def _page(self, h: BaseHTTPRequestHandler, path: str, query: dict[str, str], items: list, key: str | None) -> None:
        size = min(int(query.get("per_page", 30)), self.page_size)
        page = int(query.get("page", 1))
        last = max(1, -(-len(items) // size))
        chunk = items[(page - 1) * size: page * size]
        links = []
        for rel, number in (("next", page + 1), ("last", last)):
            if rel == "next" and page >= last:
                continue
            links.append(f'<{self.url}{path}?{urlencode({**query, "per_page": size, "page": number})}>; rel="{rel}"')
        body = {"total_count": len(items), key: chunk} if key else chunk
        self._json(h, 200, body, {"Link": ", ".join(links)} if links else {})

    @staticmethod
    def _json(h: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        FakeGitHub._send(h, status, json.dumps(body).encode(), "application/json", headers)

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, data: bytes, kind: str, headers: dict[str, str] | None = None) -> None:
        h.send_response(status)
        h.send_header("Content-Type", kind)
        h.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)
