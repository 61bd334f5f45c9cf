"""The fake GitHub's payloads, pinned to GitHub's documented shapes field for field.

The field lists below are copied from GitHub's own descriptions of each payload:
- webhook payloads: GitHub's OpenAPI description (github/rest-api-description), schemas
  ``webhook-pull-request-synchronize`` / ``-opened`` (the ``pull_request_target`` event carries the
  ``pull_request`` webhook's payload, docs.github.com "Events that trigger workflows") and
  ``webhook-workflow-dispatch``; ``simple-user``, ``repository`` and ``pull-request`` for the
  objects inside them;
- REST responses: docs.github.com/en/rest/actions/artifacts ("List artifacts for a repository",
  example response: ``total_count`` and ``artifacts``, each an ``artifact``) and
  docs.github.com/en/rest/git/blobs ("Get a blob").
Only documented names may appear in what the fake serves, and every field the grader reads must
be there with the documented type, so a test cannot pass against a shape GitHub never sends
(as it once did with ``workflow_run.head_sha`` modelled as the PR head).
"""

from __future__ import annotations

import json
import re

import pytest

from grader.ci.event import load_event
from tests.fakegithub import FakeGitHub, lfs_file

SIMPLE_USER = {
    "login", "id", "node_id", "avatar_url", "gravatar_id", "url", "html_url", "followers_url", "following_url",
    "gists_url", "starred_url", "subscriptions_url", "organizations_url", "repos_url", "events_url",
    "received_events_url", "type", "site_admin",
}  # fmt: skip
# the repository object's fields the fake serves: a subset of the (long) documented list, none invented
REPOSITORY = {
    "id", "node_id", "name", "full_name", "owner", "private", "html_url", "description", "fork", "url",
    "default_branch", "visibility",
}  # fmt: skip
PULL_REQUEST = {
    "url", "id", "node_id", "html_url", "diff_url", "patch_url", "issue_url", "number", "state", "locked", "title",
    "user", "body", "created_at", "updated_at", "closed_at", "merged_at", "merge_commit_sha", "head", "base",
    "author_association", "draft", "labels", "changed_files",
}  # fmt: skip
PULL_REQUEST_BRANCH = {"label", "ref", "repo", "sha", "user"}  # pull-request: head / base
PULL_REQUEST_EVENT = {"action", "number", "pull_request", "repository", "sender"}  # + before / after on synchronize
WORKFLOW_DISPATCH_EVENT = {"inputs", "ref", "repository", "sender", "workflow"}
ARTIFACT = {
    "id", "node_id", "name", "size_in_bytes", "url", "archive_download_url", "expired", "digest", "created_at",
    "expires_at", "updated_at", "workflow_run",
}  # fmt: skip
ARTIFACT_WORKFLOW_RUN = {"id", "repository_id", "head_repository_id", "head_branch", "head_sha"}
BLOB = {"content", "encoding", "url", "sha", "size", "node_id"}
SHA = re.compile(r"^[0-9a-f]{40}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")  # GitHub's timestamps: ISO 8601 UTC with Z


@pytest.fixture
def course(fake_github: FakeGitHub):
    fake_github.add_token("t", "github-actions[bot]")
    repo = fake_github.add_repo("course/grading", {"README.md": b"x\n"})
    pull = fake_github.open_pull(repo, "octocat", {"submissions/a/hw2/model.onnx": lfs_file(5 * 2**20)})
    fake_github.push(repo, pull, {"submissions/a/hw2/notes.md": b"again\n"})
    return fake_github, repo, pull


def test_user_and_repository_objects_carry_every_required_field(course) -> None:
    fake, repo, pull = course
    event = fake.event(repo, pull)
    for user in (event["sender"], event["pull_request"]["user"], event["repository"]["owner"]):
        assert set(user) == SIMPLE_USER
    assert set(event["repository"]) <= REPOSITORY and {"id", "full_name", "owner", "private"} <= set(
        event["repository"]
    )


def test_a_pull_request_target_event_is_the_pull_request_webhook_payload(course) -> None:
    fake, repo, pull = course
    event = fake.event(repo, pull, "synchronize")
    assert set(event) == PULL_REQUEST_EVENT | {"before", "after"}
    assert SHA.match(event["before"]) and event["after"] == event["pull_request"]["head"]["sha"]
    assert set(fake.event(repo, pull, "opened")) == PULL_REQUEST_EVENT
    pr = event["pull_request"]
    assert set(pr) <= PULL_REQUEST and {"number", "user", "head", "base", "updated_at", "author_association"} <= set(pr)
    for branch in ("head", "base"):
        assert set(pr[branch]) == PULL_REQUEST_BRANCH and SHA.match(pr[branch]["sha"])
        assert set(pr[branch]["repo"]) <= REPOSITORY
    assert pr["head"]["repo"]["fork"] is True and pr["head"]["repo"]["full_name"] != repo.full_name
    assert TIME.match(pr["updated_at"]) and TIME.match(pr["created_at"])
    assert isinstance(pr["number"], int) and pr["number"] == event["number"]


def test_the_grader_reads_the_fakes_event_as_it_reads_githubs(course, tmp_path) -> None:
    fake, repo, pull = course
    path = tmp_path / "event.json"
    path.write_text(json.dumps(fake.event(repo, pull)))
    event = load_event({"GITHUB_EVENT_NAME": "pull_request_target", "GITHUB_REPOSITORY": repo.full_name}, path)
    assert (event.pr_number, event.head_sha, event.author) == (pull.number, pull.head_sha, "octocat")
    assert event.head_repository == pull.head_repo


def test_a_workflow_dispatch_event_has_the_documented_fields(course) -> None:
    fake, repo, _ = course
    event = fake.dispatch_event(repo, "prof", {"tasks": "regrade/tasks.json"})
    assert set(event) == WORKFLOW_DISPATCH_EVENT
    assert event["inputs"] == {"tasks": "regrade/tasks.json"} and event["ref"].startswith("refs/heads/")
    assert set(event["sender"]) == SIMPLE_USER


def test_artifacts_list_as_the_rest_api_documents_it(course) -> None:
    fake, repo, pull = course
    fake.add_artifact(repo, "result-a-hw2", {"result.json": b"{}"}, run_id=77)
    status, body, _ = fake.page(f"/repos/{repo.full_name}/actions/artifacts", {}, repo.artifacts, key="artifacts")
    assert status == 200 and set(body) == {"total_count", "artifacts"} and body["total_count"] == 1
    [artifact] = body["artifacts"]
    assert set(artifact) == ARTIFACT and set(artifact["workflow_run"]) == ARTIFACT_WORKFLOW_RUN
    assert artifact["digest"].startswith("sha256:") and TIME.match(artifact["expires_at"])
    # a pull_request_target run's head_sha is the base branch's commit, never the PR head it graded
    assert artifact["workflow_run"]["head_sha"] == repo.base_sha != pull.head_sha
    assert artifact["workflow_run"]["id"] == 77


def test_a_blob_as_the_rest_api_documents_it(course) -> None:
    fake, repo, pull = course
    gh = fake.pygithub("t")
    tree = gh.get_repo(repo.full_name).get_git_tree(pull.head_sha, recursive=True)
    [entry] = [e for e in tree.tree if e.path.endswith("model.onnx")]
    raw = gh.get_repo(repo.full_name).get_git_blob(entry.sha).raw_data
    assert set(raw) == BLOB and raw["encoding"] == "base64" and raw["sha"] == entry.sha
    assert raw["size"] == entry.size < 200  # the pointer, as git holds it


# "Get a workflow run" (docs.github.com/en/rest/actions/workflow-runs, example response): the fields served
WORKFLOW_RUN = {
    "id", "name", "node_id", "head_branch", "head_sha", "path", "run_number", "run_attempt", "event", "status",
    "conclusion", "workflow_id", "url", "html_url", "created_at", "updated_at", "run_started_at", "repository",
    "head_repository",
}  # fmt: skip


def test_a_workflow_run_as_the_rest_api_documents_it(course) -> None:
    fake, repo, _ = course
    fake.add_artifact(repo, "result-a-hw2", {"result.json": b"{}"}, run_id=88)
    run = fake.pygithub("t").get_repo(repo.full_name).get_workflow_run(88).raw_data
    assert set(run) == WORKFLOW_RUN and run["path"] == ".github/workflows/grade.yml"
    assert run["event"] == "pull_request_target" and run["head_sha"] == repo.base_sha
