"""The PR policy's rules, on plain data: which changed files a submission PR may carry."""

from __future__ import annotations

from pathlib import Path

import pytest

from grader.ci.admission import (
    ChangedFile,
    FolderTree,
    PolicyLimits,
    TreeEntry,
    check_changes,
    check_tree,
    needs_approval,
)
from grader.config.roster import load_roster

ASSIGNMENTS = ["hw2-quantization-pruning", "hw3-clustering"]
LIMITS = PolicyLimits()


@pytest.fixture
def roster(tmp_path: Path):
    path = tmp_path / "roster.yaml"
    path.write_text(
        "schema: 1\nteams:\n  team-alpha:\n    members:\n      - {github: OctoCat}\n      - {github: mona}\n"
        "  team-beta:\n    members:\n      - {github: hubot}\n"
    )
    return load_roster(path)


def changes(*paths: str) -> list[ChangedFile]:
    return [ChangedFile(p) for p in paths]


def decide(roster, author: str, *paths: str, renamed_from: str | None = None):
    files = changes(*paths)
    if renamed_from:
        files = [ChangedFile(paths[0], "renamed", renamed_from)]
    return check_changes(author, files, len(files), roster, ASSIGNMENTS, LIMITS)


def rules(refusals) -> list[str]:
    return [r.rule for r in refusals]


def test_own_team_folder_is_accepted_case_insensitively(roster) -> None:
    folder, refusals = decide(
        roster,
        "octocat",
        "submissions/team-alpha/hw2-quantization-pruning/submission.yaml",
        "submissions/team-alpha/hw2-quantization-pruning/models/c.onnx",
    )
    assert refusals == [] and folder == ("team-alpha", "hw2-quantization-pruning")


@pytest.mark.parametrize(
    "path",
    [
        ".github/workflows/grade.yml",
        "grader/grading.py",
        "roster.yaml",
        "assignments/hw2-quantization-pruning/assignment.yaml",
        "submissions/README.md",
        "submissions/team-alpha/notes.txt",
    ],
)
def test_anything_outside_a_submission_folder_is_refused(roster, path: str) -> None:
    folder, refusals = decide(roster, "octocat", "submissions/team-alpha/hw2-quantization-pruning/a.onnx", path)
    assert folder is None and rules(refusals) == ["outside-submissions"]
    assert refusals[0].paths == [path] and "base branch" in refusals[0].message


def test_another_teams_folder_is_refused_naming_the_authors_team(roster) -> None:
    folder, refusals = decide(roster, "octocat", "submissions/team-beta/hw2-quantization-pruning/a.onnx")
    assert folder is None and rules(refusals) == ["other-team"]
    assert "team-beta" in refusals[0].message and "team-alpha" in refusals[0].message


def test_a_rename_out_of_another_teams_folder_is_refused(roster) -> None:
    _, refusals = decide(
        roster,
        "octocat",
        "submissions/team-alpha/hw2-quantization-pruning/a.onnx",
        renamed_from="submissions/team-beta/hw2-quantization-pruning/a.onnx",
    )
    assert rules(refusals) == ["other-team"]


def test_author_not_on_the_roster_is_refused(roster) -> None:
    _, refusals = decide(roster, "stranger", "submissions/team-alpha/hw2-quantization-pruning/a.onnx")
    assert rules(refusals) == ["not-on-roster"] and "stranger" in refusals[0].message


def test_unknown_assignment_and_several_folders(roster) -> None:
    _, refusals = decide(roster, "mona", "submissions/team-alpha/hw9/a.onnx")
    assert rules(refusals) == ["unknown-assignment"] and "hw2-quantization-pruning" in refusals[0].message
    _, refusals = decide(
        roster, "mona", "submissions/team-alpha/hw2-quantization-pruning/a", "submissions/team-alpha/hw3-clustering/a"
    )
    assert rules(refusals) == ["one-folder"]


def test_too_many_changed_files_is_refused_before_listing(roster) -> None:
    _, refusals = check_changes("mona", [], 5000, roster, ASSIGNMENTS, LIMITS)
    assert rules(refusals) == ["too-many-changes"] and "5000" in refusals[0].message


def test_a_refusal_lists_at_most_twenty_paths_and_counts_the_rest(roster) -> None:
    paths = [f"grader/f{i}.py" for i in range(45)]
    _, refusals = decide(roster, "mona", *paths)
    assert len(refusals[0].paths) == 20 and refusals[0].more == 25


def test_tree_refuses_symlinks_submodules_and_size() -> None:
    folder = "submissions/team-alpha/hw2-quantization-pruning"
    entries = [
        TreeEntry("submission.yaml", "file", 200),
        TreeEntry("models", "folder"),
        TreeEntry("models/b.onnx", "symlink", 11),
        TreeEntry("vendor", "submodule"),
        TreeEntry("models/huge.onnx", "file", 101 * 2**20),
    ]
    refusals = check_tree(folder, FolderTree(entries), LIMITS)
    assert rules(refusals) == ["symlink", "submodule", "file-too-big"]
    assert refusals[0].paths == [f"{folder}/models/b.onnx"] and refusals[2].paths == [f"{folder}/models/huge.onnx"]


def test_tree_refuses_too_many_files_a_big_folder_and_a_deleted_one() -> None:
    many = FolderTree([TreeEntry(f"f{i}", "file", 1) for i in range(65)])
    assert rules(check_tree("f", many, LIMITS)) == ["too-many-files"]
    big = FolderTree([TreeEntry(f"f{i}", "file", 90 * 2**20) for i in range(4)])
    assert rules(check_tree("f", big, LIMITS)) == ["folder-too-big"]
    assert rules(check_tree("f", None, LIMITS)) == ["nothing-to-grade"]
    assert rules(check_tree("f", FolderTree([TreeEntry("x", "file")], truncated=True), LIMITS)) == ["too-many-files"]
    assert check_tree("f", FolderTree([TreeEntry("submission.yaml", "file", 10)]), LIMITS) == []


def test_human_gate() -> None:
    assert not needs_approval("none", "FIRST_TIME_CONTRIBUTOR")
    assert needs_approval("first-time", "FIRST_TIME_CONTRIBUTOR") and not needs_approval("first-time", "CONTRIBUTOR")
    assert needs_approval("all", "CONTRIBUTOR")
    with pytest.raises(ValueError):
        needs_approval("sometimes", "NONE")
