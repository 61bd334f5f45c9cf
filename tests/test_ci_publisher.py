"""The publisher against a fake GitHub API on 127.0.0.1: one comment per key, whatever the faults."""

from __future__ import annotations

import pytest

from grader.ci.api import ClientSettings, make_client
from grader.ci.publisher import Publisher, PublishError, fit_comment
from grader.report.render import COMMENT_LIMIT
from tests.fakegithub import FakeGitHub

BOT = "github-actions[bot]"
REPO = "course/grading"
MARKER = "<!-- compression-grader:v1 team=team-alpha assignment=hw2-quantization-pruning -->"
OTHER_MARKER = "<!-- compression-grader:v1 team=team-alpha assignment=hw3-clustering -->"


def client(fake: FakeGitHub, token: str = "bot-token", **settings):
    options = dict(
        request_spacing_s=0, write_spacing_s=0, timeout_s=1, attempts=4, backoff_s=0.01, secondary_rate_wait_s=0.05
    )
    return make_client(ClientSettings(api_url=fake.url, token=token, **{**options, **settings}))


@pytest.fixture
def course(fake_github: FakeGitHub):
    fake_github.add_token("bot-token", BOT, write=True)
    fake_github.add_token("read-token", BOT, write=False)
    repo = fake_github.add_repo(REPO, {"roster.yaml": b"teams: {}\n"})
    pull = fake_github.open_pull(repo, "octocat", {"submissions/team-alpha/hw2-quantization-pruning/a": b"1"})
    return fake_github, repo, pull


def publisher(fake: FakeGitHub, **settings) -> Publisher:
    return Publisher(client(fake, **settings), REPO, BOT, attempts=4, backoff_s=0.01, secondary_rate_wait_s=0.05)


def report(text: str, marker: str = MARKER) -> str:
    return f"{marker}\n## {text}\n"


def bodies(fake: FakeGitHub, repo, pull) -> list[tuple[str, str]]:
    return [(c["login"], c["body"]) for c in fake.comments(repo, pull.number)]


def test_first_report_creates_the_comment_and_a_second_push_edits_it(course) -> None:
    fake, repo, pull = course
    pub = publisher(fake)
    first = pub.upsert_comment(pull.number, MARKER, report("35 / 100"))
    second = pub.upsert_comment(pull.number, MARKER, report("90 / 100"))
    assert first.id == second.id
    assert bodies(fake, repo, pull) == [(BOT, report("90 / 100"))]
    assert len(fake.requests("POST", r".*/comments")) == 1 and len(fake.requests("PATCH")) == 1


def test_an_unchanged_report_is_not_rewritten(course) -> None:
    fake, repo, pull = course
    pub = publisher(fake)
    pub.upsert_comment(pull.number, MARKER, report("35 / 100"))
    pub.upsert_comment(pull.number, MARKER, report("35 / 100"))
    assert fake.requests("PATCH") == []


def test_a_marker_planted_in_a_students_comment_is_ignored(course) -> None:
    fake, repo, pull = course
    planted = report("100 / 100 (forged)")
    fake.add_comment(repo, pull.number, "octocat", planted)
    publisher(fake).upsert_comment(pull.number, MARKER, report("35 / 100"))
    assert bodies(fake, repo, pull) == [("octocat", planted), (BOT, report("35 / 100"))]


def test_other_keys_and_markers_not_on_the_first_line_are_left_alone(course) -> None:
    fake, repo, pull = course
    other = report("hw3", OTHER_MARKER)
    quoted = f"> quoting the bot\n{MARKER}\n"
    fake.add_comment(repo, pull.number, BOT, other)
    fake.add_comment(repo, pull.number, BOT, quoted)
    publisher(fake).upsert_comment(pull.number, MARKER, report("35 / 100"))
    assert bodies(fake, repo, pull) == [(BOT, other), (BOT, quoted), (BOT, report("35 / 100"))]


def test_the_comment_is_found_on_a_later_page(course) -> None:
    fake, repo, pull = course
    for i in range(12):
        fake.add_comment(repo, pull.number, "octocat", f"comment {i}")
    pub = publisher(fake, per_page=5)
    pub.upsert_comment(pull.number, MARKER, report("35 / 100"))
    for i in range(4):
        fake.add_comment(repo, pull.number, "octocat", f"later {i}")
    pub.upsert_comment(pull.number, MARKER, report("90 / 100"))
    ours = [b for login, b in bodies(fake, repo, pull) if login == BOT]
    assert ours == [report("90 / 100")]
    assert len(fake.requests("GET", r".*/issues/1/comments")) >= 3 + 4  # every page was read, twice


def test_duplicates_left_by_an_earlier_fault_are_removed(course) -> None:
    fake, repo, pull = course
    fake.add_comment(repo, pull.number, BOT, report("old"))
    fake.add_comment(repo, pull.number, BOT, report("old duplicate"))
    publisher(fake).upsert_comment(pull.number, MARKER, report("new"))
    assert bodies(fake, repo, pull) == [(BOT, report("new"))]


COMMENTS = r".*/issues/1/comments"


@pytest.mark.parametrize(
    "fault, posts",
    [
        (dict(method="POST", path=COMMENTS, status=502, after=True), 1),  # created, then the proxy failed: found, kept
        (dict(method="POST", path=COMMENTS, status=None, delay_s=2.5, after=True), 1),  # created, the reply too slow
        (dict(method="POST", path=COMMENTS, status=502, times=2), 3),  # GitHub down twice, nothing created
        (dict(method="POST", path=COMMENTS, status=403), 2),  # secondary rate limit, no Retry-After
        (dict(method="GET", path=COMMENTS, status=403, retry_after=1), 1),  # secondary rate limit with Retry-After
        (dict(method="GET", path=COMMENTS, status=429, retry_after=0), 1),
        (dict(method="GET", path=COMMENTS, status=None, delay_s=2.5), 1),  # a slow read, timed out and read again
    ],
)
def test_faults_end_in_exactly_one_comment(course, fault, posts: int) -> None:
    fake, repo, pull = course
    injected = fake.fail(**fault)
    publisher(fake).upsert_comment(pull.number, MARKER, report("35 / 100"))
    assert injected.times == 0, "the fault was never triggered"
    assert bodies(fake, repo, pull) == [(BOT, report("35 / 100"))]
    assert len(fake.requests("POST")) == posts


def test_faults_on_an_edit_still_end_in_one_updated_comment(course) -> None:
    fake, repo, pull = course
    pub = publisher(fake)
    pub.upsert_comment(pull.number, MARKER, report("35 / 100"))
    fake.fail(method="PATCH", path=r".*/issues/comments/\d+", status=502, after=True)
    fake.fail(method="PATCH", path=r".*/issues/comments/\d+", status=429, retry_after=0)
    pub.upsert_comment(pull.number, MARKER, report("90 / 100"))
    assert bodies(fake, repo, pull) == [(BOT, report("90 / 100"))]


def test_an_outage_that_outlasts_the_retries_is_an_error_not_a_comment(course) -> None:
    fake, repo, pull = course
    fake.fail(method="*", path=r".*/issues/1/comments", status=503, times=100)
    with pytest.raises(PublishError, match="after 4 attempt"):
        publisher(fake).upsert_comment(pull.number, MARKER, report("35 / 100"))
    assert fake.comments(repo, pull.number) == []


def test_a_read_only_token_cannot_comment(course) -> None:
    fake, repo, pull = course
    with pytest.raises(PublishError, match="403"):
        Publisher(client(fake, token="read-token"), REPO, BOT, attempts=4, backoff_s=0.01).upsert_comment(
            pull.number, MARKER, report("x")
        )
    assert len(fake.requests("POST")) == 1  # a 403 that is not a rate limit is not retried


def test_commit_status_is_set_and_its_description_fits(course) -> None:
    fake, repo, pull = course
    fake.fail(method="POST", path=r".*/statuses/.*", status=502)
    publisher(fake).set_status(
        pull.head_sha,
        "success",
        "Graded: 35 / 100 points " + "x" * 200,
        "compression-grader/hw2-quantization-pruning",
        "https://example.test/run/1",
    )
    [status] = repo.statuses[pull.head_sha]
    assert status["state"] == "success" and status["context"] == "compression-grader/hw2-quantization-pruning"
    assert status["description"].startswith("Graded: 35 / 100") and len(status["description"]) <= 140


def test_a_body_must_start_with_its_marker_and_is_kept_under_the_limit(course) -> None:
    fake, repo, pull = course
    pub = publisher(fake)
    with pytest.raises(ValueError):
        pub.upsert_comment(pull.number, MARKER, "no marker\n" + MARKER)
    huge = report("verdict first") + "detail\n" * 20000
    pub.upsert_comment(pull.number, MARKER, huge)
    [(_, body)] = bodies(fake, repo, pull)
    assert len(body) <= COMMENT_LIMIT and body.startswith(report("verdict first"))
    assert fit_comment("short") == "short"
