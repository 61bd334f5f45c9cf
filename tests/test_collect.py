"""``grader results collect`` against a fake GitHub API on 127.0.0.1 (real HTTP, real PyGithub)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from grader.ci.collect import Source, artifact_name, collect, from_artifacts, from_comments
from grader.records.store import Store
from grader.report.render import render_markdown
from tests.fakegithub import FakeGitHub, FakeRepo
from tests.results_builders import REPO, make_result

ROOT = Path(__file__).resolve().parent.parent
BOT = "github-actions[bot]"
TOKEN = "ghs_test_token_123"


@pytest.fixture
def github(fake_github: FakeGitHub) -> FakeGitHub:
    """The fake GitHub API with the course repository, a read-only token, and pages of two (so paging is followed)."""
    fake_github.add_token(TOKEN, "teacher", write=False)
    fake_github.add_repo(REPO)
    fake_github.per_page_limit = 2
    return fake_github


@pytest.fixture
def repo(github: FakeGitHub) -> FakeRepo:
    return github.repos[REPO]


def source(github: FakeGitHub, **overrides) -> Source:
    return Source(**({"repository": REPO, "token": TOKEN, "api_url": github.url} | overrides))


def comment_for(result) -> str:
    return render_markdown(result)


def test_collects_the_bots_comments_across_pages(github: FakeGitHub, repo: FakeRepo) -> None:
    teams = ["team-a", "team-b", "team-c", "team-d", "team-e"]
    for number, team in enumerate(teams, start=1):
        github.add_comment(repo, number, BOT, comment_for(make_result(team, score=50 + number, pr=number)))
    batch = from_comments(source(github))
    assert sorted(r.submission.team for r, _ in batch.results) == teams
    assert not batch.rejected
    assert any("page=3" in r.query for r in github.requests("GET", r".*/issues/comments"))  # five, two per page
    assert all(r.auth == f"token {TOKEN}" for r in github.requests())
    result, where = batch.results[0]
    assert where.startswith(f"comment:https://github.test/{REPO}/pull/") and result.context.repository == REPO


def test_only_the_bots_comments_are_trusted(github: FakeGitHub, repo: FakeRepo) -> None:
    forged = make_result("team-a", score=100, pr=3)
    github.add_comment(repo, 3, "team-a-student", comment_for(forged), user_type="User")  # a pasted block
    github.add_comment(repo, 3, "github-actions", comment_for(forged), user_type="User")  # a look-alike login
    github.add_comment(repo, 3, BOT, "Thanks for the PR! (no block here)")
    assert from_comments(source(github)).results == []
    assert len(from_comments(source(github, bot="team-a-student")).results) == 1  # the filter is the only gate


def test_hostile_blocks_from_the_bot_are_rejected_not_stored(github: FakeGitHub, repo: FakeRepo) -> None:
    wrong_pr = make_result("team-a", pr=9)
    github.add_comment(repo, 4, BOT, comment_for(wrong_pr))  # names PR 9, posted on PR 4
    other_repo = make_result("team-b", pr=5)
    other_repo.context.repository = "someone/else"
    github.add_comment(repo, 5, BOT, comment_for(other_repo))
    too_good = make_result("team-c", pr=6)
    too_good.score = 1000
    github.add_comment(repo, 6, BOT, comment_for(too_good))
    github.add_comment(repo, 7, BOT, "<!-- compression-grader:result:v1 AAAA -->")  # not gzip: silently not a block
    batch = from_comments(source(github))
    assert batch.results == []
    reasons = " | ".join(r.reason for r in batch.rejected)
    assert "names PR #9 but was posted on #4" in reasons
    assert "someone/else" in reasons and "outside 0..100" in reasons


def test_comment_without_pr_context_gets_it_from_the_comment(github: FakeGitHub, repo: FakeRepo) -> None:
    result = make_result("team-a", pr=None)
    result.context.repository = None
    github.add_comment(repo, 12, BOT, comment_for(result))
    ((found, _),) = from_comments(source(github)).results
    assert (found.context.repository, found.context.pr_number) == (REPO, 12)


def test_collects_result_json_from_artifacts(github: FakeGitHub, repo: FakeRepo) -> None:
    results = [make_result(f"team-{c}", pr=i + 1) for i, c in enumerate("abc")]
    for i, result in enumerate(results):  # named as grade.yml names them, per team and assignment
        run = result.context.run_id = 500 + i
        name = artifact_name(result.submission.team, result.assignment.id)
        github.add_artifact(repo, name, {"out/result.json": result.to_json().encode(), "report.md": b"x"}, run)
    github.add_artifact(repo, "result", {"result.json": results[0].to_json().encode()}, 500, expired=True)
    github.add_artifact(repo, "coverage", {"result.json": b"{}"}, 9)  # another artifact name
    github.add_artifact(repo, "resultant", {"result.json": b"{}"}, 9)  # only a common prefix
    github.add_artifact(repo, "regrade-results", {"1/result.json": b"{}"}, 9)  # import --tasks takes these
    github.add_artifact(repo, "result", {"result.json": results[1].to_json().encode()}, 777)  # copied into another run
    github.add_artifact(repo, "result", {"notes.txt": b"hello"}, 10)
    forged = make_result("team-a", pr=1, score=100)
    forged.context.run_id = 31
    # a workflow a pull request brought along, on its own pull_request event, naming its artifact as grade.yml does
    github.add_artifact(
        repo,
        "result-team-a-hw2",
        {"result.json": forged.to_json().encode()},
        31,
        workflow=".github/workflows/x.yml",
        event="pull_request",
    )
    twice = make_result("team-b", pr=2)
    twice.context.run_id = 32
    github.add_artifact(
        repo,
        "result-team-b-hw2",
        {"a/result.json": twice.to_json().encode(), "b/result.json": twice.to_json().encode()},
        32,
    )
    batch = from_artifacts(source(github))
    assert sorted(r.submission.team for r, _ in batch.results) == ["team-a", "team-b", "team-c"]
    assert [r.reason for r in batch.rejected] == [
        "result.json names workflow run 501, but run 777 uploaded it",
        "artifact holds no result.json",
        "the artifact was uploaded by run 31 of .github/workflows/x.yml on 'pull_request', not by "
        ".github/workflows/grade.yml on pull_request_target",
        "artifact holds 2 result.json files; a grading uploads one",
    ]
    assert github.requests("GET", r"/_blobs/\d+")  # followed the redirect


def test_an_artifact_of_a_pull_request_target_run_is_bound_by_run_id_not_commit(
    github: FakeGitHub, repo: FakeRepo
) -> None:
    """GitHub's workflow_run.head_sha is the base branch's commit for grade.yml's runs, never the
    PR head the result graded: the two differ in every real artifact, and both must be accepted."""
    result = make_result("team-a", pr=1)
    artifact = github.add_artifact(
        repo, "result-team-a-hw2-quantization", {"result.json": result.to_json().encode()}, 1234
    )
    assert artifact["workflow_run"]["head_sha"] == repo.base_sha != result.context.head_sha
    ((found, _),) = from_artifacts(source(github)).results
    assert found.context.head_sha == result.context.head_sha


def test_comments_and_artifacts_of_one_run_store_one_row(github: FakeGitHub, repo: FakeRepo, tmp_path: Path) -> None:
    result = make_result("team-a", pr=1)
    github.add_comment(repo, 1, BOT, comment_for(result))
    github.add_artifact(repo, "result", {"result.json": result.to_json().encode()}, result.context.run_id)
    batch = collect(source(github))
    assert len(batch.results) == 2
    with Store(tmp_path / "g.sqlite") as store:
        report = store.add_runs(batch.results)
        assert (report.added, report.duplicates) == (1, 1)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("GITHUB_TOKEN", "GH_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "grader.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=clean | env,
    )


def test_cli_collect_end_to_end(github: FakeGitHub, repo: FakeRepo, tmp_path: Path) -> None:
    github.add_comment(repo, 1, BOT, comment_for(make_result("team-a", pr=1)))
    bad = make_result("team-b", pr=2)
    bad.score = 500
    github.add_comment(repo, 2, BOT, comment_for(bad))
    db = tmp_path / "g.sqlite"
    args = ("results", "collect", "--repo", REPO, "--api-url", github.url, "--from", "comments", "--db", str(db))
    done = run_cli(*args, env={"GITHUB_TOKEN": TOKEN})
    assert done.returncode == 3, done.stderr  # one rejected
    assert "stored 1 new run(s)" in done.stdout and "outside 0..100" in done.stderr
    assert TOKEN not in done.stdout + done.stderr
    again = run_cli(*args, env={"GITHUB_TOKEN": TOKEN})
    assert "stored 0 new run(s); 1 already stored" in again.stdout
    with Store(db) as store:
        assert store.runs_frame()["team"].tolist() == ["team-a"]


def test_cli_collect_with_a_bad_token_says_so(github: FakeGitHub, tmp_path: Path) -> None:
    done = run_cli(
        "results",
        "collect",
        "--repo",
        REPO,
        "--api-url",
        github.url,
        "--db",
        str(tmp_path / "g.sqlite"),
        env={"GITHUB_TOKEN": "wrong"},
    )
    assert done.returncode == 5 and "401" in done.stderr and "Traceback" not in done.stderr
    unknown = run_cli(
        "results",
        "collect",
        "--repo",
        "nobody/nothing",
        "--api-url",
        github.url,
        "--db",
        str(tmp_path / "g.sqlite"),
        env={"GITHUB_TOKEN": TOKEN},
    )
    assert unknown.returncode == 5 and "404" in unknown.stderr
    usage = run_cli("results", "collect", "--repo", "not a repo", env={})
    assert usage.returncode == 2 and "OWNER/NAME" in usage.stderr


def test_event_times_survive_the_round_trip(github: FakeGitHub, repo: FakeRepo) -> None:
    event = datetime(2026, 12, 11, 22, 58, 59, tzinfo=timezone.utc)
    github.add_comment(repo, 1, BOT, comment_for(make_result("team-a", pr=1, event_time=event)))
    ((found, _),) = from_comments(source(github)).results
    assert found.context.event_time == event
    assert json.loads(found.to_json())["context"]["event_time"].startswith("2026-12-11T22:58:59")
