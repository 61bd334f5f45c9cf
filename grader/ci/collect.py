"""``grader results collect``: fetch results from GitHub through PyGithub.

Two sources, both hostile input:
- **comments**: the machine-readable block at the end of each report comment. Only comments
  authored by the grader's bot count (anyone can paste a block into a comment), each block is
  validated against the result schema, and its PR must be the PR the comment is on. A comment is
  updated in place, so it holds the latest grading of that PR; collect regularly, or use
- **artifacts**: the ``result.json`` each grading workflow run uploads (every run, until GitHub
  expires them). Zips are size-limited and only ``result.json`` entries are read.

The token comes from ``GITHUB_TOKEN`` / ``GH_TOKEN`` and is only ever handed to PyGithub.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from grader.contracts.result import Result
from grader.records.ingest import Batch, InvalidResult, Rejection, parse_result
from grader.report import machine

DEFAULT_BOT = "github-actions[bot]"
DEFAULT_ARTIFACT = "result"  # grade.yml uploads result-<team>-<assignment> (see artifact_name)
MAX_ARTIFACT_BYTES = 16 * 1024 * 1024
MAX_RESULT_BYTES = 8 * 1024 * 1024
ISSUE_NUMBER = re.compile(r"/issues/(\d+)$")


@dataclass
class Source:
    repository: str  # OWNER/NAME
    token: str | None
    api_url: str = "https://api.github.com"
    bot: str = DEFAULT_BOT
    artifact_name: str = DEFAULT_ARTIFACT


def client(source: Source) -> Any:
    from github import Auth, Github

    auth = Auth.Token(source.token) if source.token else None
    return Github(auth=auth, base_url=source.api_url.rstrip("/"), per_page=100, retry=None, timeout=30)


def from_comments(source: Source) -> Batch:
    """Results in the bot's report comments on every PR of the repository."""
    batch = Batch()
    repo = client(source).get_repo(source.repository)
    for comment in repo.get_issues_comments():
        if comment.user is None or comment.user.login.lower() != source.bot.lower():
            continue
        where = f"comment:{comment.html_url}"
        data = machine.decode(comment.body or "")
        if data is None:
            continue
        number = ISSUE_NUMBER.search(comment.issue_url or "")
        try:
            result = _with_context(parse_result(data), source.repository, int(number.group(1)) if number else None)
            batch.results.append((result, where))
        except InvalidResult as exc:
            batch.rejected.append(Rejection(where, str(exc)))
    return batch


def from_artifacts(source: Source) -> Batch:
    """The ``result.json`` in every unexpired artifact of that name that a grading uploaded."""
    from github import GithubException

    batch = Batch()
    gh = client(source)
    repo = gh.get_repo(source.repository)
    for artifact in repo.get_artifacts():
        if not named(artifact.name, source.artifact_name):
            continue
        where = f"artifact:{source.repository}#{artifact.id}"
        if artifact.expired:
            continue
        try:
            batch.results += [(result, where) for result in artifact_results(gh, artifact, source.repository)]
        except (InvalidResult, zipfile.BadZipFile, OSError, GithubException) as exc:
            batch.rejected.append(Rejection(where, str(exc)))
    return batch


def artifact_results(gh: Any, artifact: Any, repository: str) -> list[Result]:
    """Every ``result.json`` in one artifact, validated as hostile input.

    Raises ``InvalidResult`` (or ``BadZipFile`` / ``OSError``) for an artifact that is too big,
    malformed, off-schema, from another repository, or whose result names another workflow run
    than the one that uploaded it.

    An artifact is bound to its result by **run id**, not by commit: for ``pull_request_target``
    and ``workflow_dispatch`` runs, GitHub's ``workflow_run.head_sha`` is the base branch's commit,
    while the result names the PR head it graded (see ``bound_to_run``). And the run must be a
    grading: grade.yml on ``pull_request_target``. Any workflow can upload an artifact of any name
    (a PR's own ``pull_request`` workflow included), so the name proves nothing (``grading_run``).
    One grading uploads one result.json; an artifact with more is refused whole.
    """
    if artifact.size_in_bytes > MAX_ARTIFACT_BYTES:
        raise InvalidResult(f"artifact is {artifact.size_in_bytes} bytes (limit {MAX_ARTIFACT_BYTES})")
    run_id = (artifact.raw_data.get("workflow_run") or {}).get("id")
    grading_run(gh, repository, run_id)
    entries = list(_result_entries(_download(gh, artifact.archive_download_url)))
    if len(entries) != 1:
        raise InvalidResult(f"artifact holds {len(entries)} result.json files; a grading uploads one")
    return [bound_to_run(_with_context(parse_result(entries[0]), repository, None), run_id)]


GRADING_WORKFLOW = ".github/workflows/grade.yml"
GRADING_EVENT = "pull_request_target"


def grading_run(gh: Any, repository: str, run_id: object) -> None:
    """The workflow run that uploaded an artifact must be grade.yml on ``pull_request_target``: the
    base branch's grading, not a workflow a pull request brought along (which runs on its own
    ``pull_request`` event and can upload any artifact name it likes)."""
    if not isinstance(run_id, int) or isinstance(run_id, bool):
        raise InvalidResult("the artifact names no workflow run, so nothing ties its result to a grading")
    run = gh.get_repo(repository).get_workflow_run(run_id)
    path = (run.raw_data.get("path") or "").split("@")[0]
    if path != GRADING_WORKFLOW or run.raw_data.get("event") != GRADING_EVENT:
        raise InvalidResult(
            f"the artifact was uploaded by run {run_id} of {path or 'an unknown workflow'} on "
            f"{run.raw_data.get('event')!r}, not by {GRADING_WORKFLOW} on {GRADING_EVENT}"
        )


def bound_to_run(result: Result, run_id: int) -> Result:
    """``result`` if it names the workflow run that uploaded it (a grading, as ``grading_run``
    checked first); a copy from another run is refused."""
    if result.context.run_id != run_id:
        raise InvalidResult(f"result.json names workflow run {result.context.run_id}, but run {run_id} uploaded it")
    return result


def artifact_name(team: str, assignment: str, prefix: str = DEFAULT_ARTIFACT) -> str:
    """What grade.yml names a grading's artifact: per team and assignment, so that the policy job's
    runs-per-day count lists exactly one team's artifacts instead of downloading everyone's."""
    return f"{prefix}-{team}-{assignment}"


def named(name: str, prefix: str) -> bool:
    """``prefix`` itself or ``prefix-<team>-<assignment>``."""
    return name == prefix or name.startswith(prefix + "-")


def _download(gh: Any, url: str) -> bytes:
    """The artifact zip, through PyGithub's requester (which follows GitHub's redirect), capped."""
    _, _, chunks = gh.requester.getStream(url, chunk_size=65536)
    buffer = io.BytesIO()
    for chunk in chunks:
        buffer.write(chunk)
        if buffer.tell() > MAX_ARTIFACT_BYTES:
            raise InvalidResult(f"artifact download exceeds {MAX_ARTIFACT_BYTES} bytes")
    return buffer.getvalue()


def _result_entries(blob: bytes) -> Iterator[bytes]:
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        entries = [e for e in archive.infolist() if e.filename.rsplit("/", 1)[-1] == "result.json"]
        if not entries:
            raise InvalidResult("artifact holds no result.json")
        for entry in entries:
            if entry.file_size > MAX_RESULT_BYTES:
                raise InvalidResult(f"{entry.filename} is larger than {MAX_RESULT_BYTES} bytes")
            with archive.open(entry) as handle:
                data = handle.read(MAX_RESULT_BYTES + 1)
            if len(data) > MAX_RESULT_BYTES:
                raise InvalidResult(f"{entry.filename} is larger than {MAX_RESULT_BYTES} bytes")
            yield data


def _with_context(result: Result, repository: str, pr_number: int | None) -> Result:
    """Fill the repository and PR from where the result was found; refuse one that names others."""
    ctx = result.context
    if ctx.repository is not None and ctx.repository.lower() != repository.lower():
        raise InvalidResult(f"result names repository {ctx.repository}, found in {repository}")
    if pr_number is not None and ctx.pr_number is not None and ctx.pr_number != pr_number:
        raise InvalidResult(f"result names PR #{ctx.pr_number} but was posted on #{pr_number}")
    update = {"repository": ctx.repository or repository, "pr_number": ctx.pr_number or pr_number}
    return result.model_copy(update={"context": ctx.model_copy(update=update)})


def collect(source: Source, kinds: tuple[str, ...] = ("comments", "artifacts")) -> Batch:
    batch = Batch()
    for kind in kinds:
        found = from_comments(source) if kind == "comments" else from_artifacts(source)
        batch.results += found.results
        batch.rejected += found.rejected
    return batch
