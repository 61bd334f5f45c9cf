"""The writes: one PR comment per (PR, team, assignment), a commit status, a job summary.

The comment is found by its hidden marker on the first line **and** by its author being the
grader's bot (a student can paste the marker into a comment of their own). It is created once and
edited in place afterwards. Every write is retried on transient faults (5xx, 429, secondary rate
limits, timeouts); each retry of the upsert re-reads the comments first, so a create whose
response was lost is found and edited rather than posted twice, and duplicates left by any earlier
fault are deleted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import requests
from github import Github, GithubException
from github.IssueComment import IssueComment

from grader.report.render import COMMENT_LIMIT

T = TypeVar("T")
STATUS_DESCRIPTION_LIMIT = 140
TRIMMED = "\n\n*(trimmed to fit GitHub's comment limit)*\n"


class PublishError(Exception):
    """GitHub kept failing (or refused a write) after every retry."""


def retry_after(exc: GithubException) -> float | None:
    value = (exc.headers or {}).get("Retry-After") or (exc.headers or {}).get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def is_rate_limit(exc: GithubException) -> bool:
    message = str((exc.data or {}).get("message", "")) if isinstance(exc.data, dict) else str(exc.data)
    return exc.status in (403, 429) and (retry_after(exc) is not None or "rate limit" in message.lower())


def is_transient(exc: BaseException) -> bool:
    """Faults worth another try: the network, GitHub's 5xx, and rate limits."""
    if isinstance(exc, requests.exceptions.RequestException):
        return True
    return isinstance(exc, GithubException) and (exc.status >= 500 or is_rate_limit(exc))


def fit_comment(body: str, limit: int = COMMENT_LIMIT) -> str:
    """Keep the top of the body (the verdict comes first) within GitHub's limit."""
    return body if len(body) <= limit else body[: limit - len(TRIMMED)] + TRIMMED


def first_line(text: str | None) -> str:
    return (text or "").split("\n", 1)[0].strip()


class Publisher:
    """Writes to one repository as the grader's bot."""

    def __init__(
        self,
        gh: Github,
        repository: str,
        bot_login: str,
        attempts: int = 5,
        backoff_s: float = 2.0,
        secondary_rate_wait_s: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.repo = gh.get_repo(repository)
        self.bot_login = bot_login
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.secondary_rate_wait_s = secondary_rate_wait_s
        self.sleep = sleep

    def is_ours(self, comment: IssueComment, marker: str) -> bool:
        author = comment.user.login if comment.user else ""
        return author.lower() == self.bot_login.lower() and first_line(comment.body) == marker

    def find_comments(self, number: int, marker: str) -> list[IssueComment]:
        """The bot's comments carrying ``marker``, oldest first."""
        comments = self.repo.get_issue(number).get_comments()
        return sorted((c for c in comments if self.is_ours(c, marker)), key=lambda c: c.id)

    def upsert_comment(self, number: int, marker: str, body: str) -> IssueComment:
        """Create the PR's comment for ``marker`` or edit it in place; never leaves two."""
        if first_line(body) != marker:
            raise ValueError("the comment body must start with its marker line")
        body = fit_comment(body)
        return self._retrying(f"updating the comment on PR #{number}", lambda: self._upsert_once(number, marker, body))

    def _upsert_once(self, number: int, marker: str, body: str) -> IssueComment:
        ours = self.find_comments(number, marker)
        if not ours:
            return self.repo.get_issue(number).create_comment(body)
        keep, *duplicates = ours
        if keep.body != body:
            keep.edit(body)
        for duplicate in duplicates:
            duplicate.delete()
        return keep

    def edit_if_present(self, number: int, marker: str, body: str) -> IssueComment | None:
        """Edit the bot's comment for ``marker`` if there is one; create nothing."""

        def once() -> IssueComment | None:
            ours = self.find_comments(number, marker)
            if ours and ours[0].body != body:
                ours[0].edit(body)
            return ours[0] if ours else None

        return self._retrying(f"updating the comment on PR #{number}", once)

    def set_status(self, sha: str, state: str, description: str, context: str, target_url: str | None) -> None:
        """A commit status on the PR's head commit (posting it twice is harmless: the latest wins)."""
        description = description if len(description) <= STATUS_DESCRIPTION_LIMIT else description[:137] + "..."
        extra = {"target_url": target_url} if target_url else {}
        self._retrying(
            f"setting the commit status {context}",
            lambda: self.repo.get_commit(sha).create_status(
                state=state, description=description, context=context, **extra
            ),
        )

    def _retrying(self, what: str, operation: Callable[[], T]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return operation()
            except (GithubException, requests.exceptions.RequestException) as exc:
                if not is_transient(exc) or attempt == self.attempts:
                    raise PublishError(f"{what} failed after {attempt} attempt(s): {describe(exc)}") from exc
                self.sleep(self._wait(exc, attempt))
        raise AssertionError("unreachable")

    def _wait(self, exc: BaseException, attempt: int) -> float:
        if isinstance(exc, GithubException):
            after = retry_after(exc)
            if after is not None:
                return after
            if is_rate_limit(exc):
                return self.secondary_rate_wait_s
        return self.backoff_s * 2 ** (attempt - 1)


def describe(exc: BaseException) -> str:
    if isinstance(exc, GithubException):
        message = exc.data.get("message") if isinstance(exc.data, dict) else exc.data
        return f"HTTP {exc.status}: {message}"
    return f"{type(exc).__name__}: {exc}"


def write_step_summary(path: Path | None, body: str) -> None:
    """Append the report to ``$GITHUB_STEP_SUMMARY`` (the run's page shows it)."""
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(body.rstrip("\n") + "\n")
