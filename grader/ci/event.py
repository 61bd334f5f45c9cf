"""What GitHub says about this run: the pull request, its head SHA, its author and the event time.

The event file (``$GITHUB_EVENT_PATH``) and the ``GITHUB_*`` variables are written by GitHub's
runner, not by the student, so they are the trusted facts every later check compares against.
The event time is the PR's ``updated_at`` as GitHub recorded it for this event (a push updates
it), never a commit date, which the student sets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from grader.contracts.result import RunContext
from grader.errors import CIUsageError

SUPPORTED_EVENTS = ("pull_request_target", "pull_request")
DEFAULT_API_URL = "https://api.github.com"
DEFAULT_SERVER_URL = "https://github.com"

CommitSha = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")]
RepoName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", max_length=200)]


class PullRequestEvent(BaseModel):
    """The few fields of a ``pull_request_target`` event the grader relies on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    action: str
    repository: RepoName
    pr_number: int
    head_sha: CommitSha
    head_repository: str | None
    author: str
    author_association: str
    event_time: datetime


class RunInfo(BaseModel):
    """Where this workflow run lives, from the runner's ``GITHUB_*`` variables."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: int | None = None
    run_attempt: int | None = None
    run_url: str | None = None
    api_url: str = DEFAULT_API_URL


def load_event(env: Mapping[str, str] | None = None, event_path: Path | None = None) -> PullRequestEvent:
    """Read the pull-request event this run was started by; a usage error if there is none."""
    env = os.environ if env is None else env
    name = env.get("GITHUB_EVENT_NAME", "")
    if name not in SUPPORTED_EVENTS:
        raise CIUsageError(f"GITHUB_EVENT_NAME is {name!r}; grader ci runs on {' or '.join(SUPPORTED_EVENTS)} events.")
    path = event_path or (Path(env["GITHUB_EVENT_PATH"]) if env.get("GITHUB_EVENT_PATH") else None)
    if path is None:
        raise CIUsageError("GITHUB_EVENT_PATH is not set (it is set by GitHub Actions; pass --event FILE to test).")
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        pull = payload["pull_request"]
        head_repo = pull["head"].get("repo") or {}
        return PullRequestEvent(
            name=name,
            action=payload.get("action", ""),
            repository=env.get("GITHUB_REPOSITORY") or payload["repository"]["full_name"],
            pr_number=pull["number"],
            head_sha=pull["head"]["sha"],
            head_repository=head_repo.get("full_name"),
            author=pull["user"]["login"],
            author_association=pull.get("author_association", "NONE"),
            event_time=pull.get("updated_at") or pull["created_at"],
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise CIUsageError(f"cannot read the pull-request event from {path}: {exc}") from exc


def run_info(env: Mapping[str, str] | None = None) -> RunInfo:
    env = os.environ if env is None else env
    run_id = env.get("GITHUB_RUN_ID")
    repository = env.get("GITHUB_REPOSITORY")
    server = env.get("GITHUB_SERVER_URL") or DEFAULT_SERVER_URL
    url = f"{server}/{repository}/actions/runs/{run_id}" if run_id and repository else None
    attempt = env.get("GITHUB_RUN_ATTEMPT", "")
    return RunInfo(
        run_id=int(run_id) if run_id and run_id.isdigit() else None,
        run_attempt=int(attempt) if attempt.isdigit() else None,
        run_url=url,
        api_url=env.get("GITHUB_API_URL") or DEFAULT_API_URL,
    )


def run_context(event: PullRequestEvent, run: RunInfo) -> RunContext:
    """The context ``grader check --context`` records in ``result.json``."""
    return RunContext(
        repository=event.repository,
        pr_number=event.pr_number,
        head_sha=event.head_sha,
        event_time=event.event_time,
        run_id=run.run_id,
        run_attempt=run.run_attempt,
        run_url=run.run_url,
    )
