"""The pull-request policy: which files a submission PR may touch, decided from GitHub's lists.

A PR may change only ``submissions/<team>/<assignment>/`` of one team whose roster entry (on the
base branch) lists the PR's author, for an assignment the base branch defines. At the head commit
that folder may hold only regular files: no symlinks, no submodules, not too many, not too big.
Anything else is refused with reasons that say what to fix, and nothing is graded.

These are pure functions over plain data (the API calls that gather it live in ``api.py``), so
every rule is tested without a network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from grader.config.roster import Roster
from grader.contracts.base import Strict

SUBMISSIONS = "submissions"
SHOWN_PATHS = 20  # a refusal lists this many offending paths, then "and N more"
GATES = ("none", "first-time", "all")
FIRST_TIME = {"FIRST_TIMER", "FIRST_TIME_CONTRIBUTOR"}
ENVIRONMENT = "grading"
APPROVAL_ENVIRONMENT = "grading-approval"


class PolicyLimits(Strict):
    """Course-wide caps on what one submission PR may carry (the assignment's own limits still apply)."""

    max_changed_files: int = 100
    max_files: int = 64
    max_file_mb: float = 100.0
    max_total_mb: float = 300.0


@dataclass(frozen=True)
class ChangedFile:
    """One entry of ``GET /pulls/{n}/files``; a rename also names the path it came from."""

    path: str
    status: str = "added"
    previous_path: str | None = None


@dataclass(frozen=True)
class TreeEntry:
    """One entry of the submission folder's git tree at the head commit (path relative to the folder)."""

    path: str
    kind: Literal["file", "symlink", "submodule", "folder"]
    size: int = 0  # for a Git LFS file, the object's size (from its pointer), not the pointer's
    lfs: bool = False


@dataclass(frozen=True)
class FolderTree:
    """The folder's entries; ``truncated`` when GitHub cut the listing short (far too many files)."""

    entries: list[TreeEntry]
    truncated: bool = False


class Refusal(Strict):
    rule: str
    message: str
    paths: list[str] = []
    more: int = 0


class Decision(Strict):
    """What the policy decided for one PR at one head commit; ``refusals`` say why, phrased for the student."""

    verdict: Literal["grade", "refuse", "stale", "limited"]  # limited: today's runs of a limited assignment are used
    author: str
    head_sha: str
    team: str | None = None
    assignment: str | None = None
    author_teams: list[str] = []
    refusals: list[Refusal] = []
    needs_approval: bool = False
    runs_today: int | None = None  # graded runs counted against a runs-per-day limit, where there is one

    @property
    def folder(self) -> str | None:
        return f"{SUBMISSIONS}/{self.team}/{self.assignment}" if self.team and self.assignment else None

    @property
    def environment(self) -> str:
        """The deployment environment the grading job runs in (the optional human gate)."""
        return APPROVAL_ENVIRONMENT if self.needs_approval else ENVIRONMENT


def refusal(rule: str, message: str, paths: list[str] | None = None) -> Refusal:
    paths = sorted(set(paths or []))
    return Refusal(rule=rule, message=message, paths=paths[:SHOWN_PATHS], more=max(0, len(paths) - SHOWN_PATHS))


def submission_folder(path: str) -> tuple[str, str] | None:
    """(team, assignment) for ``submissions/<team>/<assignment>/<something>``, else None."""
    parts = path.split("/")
    if len(parts) < 4 or parts[0] != SUBMISSIONS or not all(parts):
        return None
    return parts[1], parts[2]


def check_changes(
    author: str,
    changed: list[ChangedFile],
    changed_count: int,
    roster: Roster,
    assignment_ids: list[str],
    limits: PolicyLimits,
) -> tuple[tuple[str, str] | None, list[Refusal]]:
    """The folder this PR submits, or the reasons it may not be graded (from the changed-file list)."""
    teams = roster.teams_of(author)
    if changed_count > limits.max_changed_files:
        return None, [
            refusal(
                "too-many-changes",
                f"This pull request changes {changed_count} files; a submission "
                f"may change at most {limits.max_changed_files}. Open a PR with only your submission folder.",
            )
        ]
    if not teams:
        return None, [
            refusal(
                "not-on-roster",
                f"The GitHub account {author} is not on the course roster "
                "(roster.yaml on the base branch), so there is no team to grade. Ask course staff to "
                "add you; a pull request cannot change the roster.",
            )
        ]
    paths = [p for f in changed for p in (f.path, f.previous_path) if p]
    outside = [p for p in paths if submission_folder(p) is None]
    folders = {folder for p in paths if (folder := submission_folder(p))}
    refusals = []
    if outside:
        refusals.append(
            refusal(
                "outside-submissions",
                "This pull request changes files outside "
                "submissions/<team>/<assignment>/. The grader, workflows, roster and assignments "
                "come from the base branch and only course staff change them: remove these "
                "changes from the PR.",
                outside,
            )
        )
    others = sorted({team for team, _ in folders if team not in teams})
    if others:
        refusals.append(
            refusal(
                "other-team",
                f"This pull request changes the folder of team(s) {', '.join(others)}, "
                f"but the roster lists {author} only in: {', '.join(teams)}. Change only your own "
                "team's folder.",
                [p for p in paths if (submission_folder(p) or ("",))[0] in others],
            )
        )
    unknown = sorted({a for t, a in folders if t in teams and a not in assignment_ids})
    if unknown:
        refusals.append(
            refusal(
                "unknown-assignment",
                f"There is no assignment {', '.join(unknown)}. Name the folder "
                f"after one of: {', '.join(assignment_ids) or 'none'}.",
            )
        )
    own = {(team, assignment) for team, assignment in folders if team in teams}
    if len(own) > 1:
        refusals.append(
            refusal(
                "one-folder",
                "This pull request changes several submission folders; open one pull request per assignment.",
                [f"{SUBMISSIONS}/{t}/{a}" for t, a in own],
            )
        )
    if not folders and not refusals:
        refusals.append(
            refusal(
                "nothing-to-grade",
                "This pull request changes no submission folder. Add your work under submissions/<team>/<assignment>/.",
            )
        )
    if refusals:
        return None, refusals
    return next(iter(folders)), []


def check_tree(folder: str, tree: FolderTree | None, limits: PolicyLimits) -> list[Refusal]:
    """Refusals for the submission folder as it stands at the head commit (``None``: it does not exist)."""
    entries = tree.entries if tree else []
    if not entries:
        return [
            refusal(
                "nothing-to-grade",
                f"At this commit {folder}/ holds no files (was it deleted?); there is nothing to grade.",
            )
        ]
    if tree.truncated:
        return [
            refusal(
                "too-many-files",
                f"{folder}/ holds so many files that GitHub cannot list them; keep only "
                "the files submission.yaml names.",
            )
        ]
    where = [f"{folder}/{e.path}" for e in entries]
    refusals = []
    links = [w for w, e in zip(where, entries) if e.kind == "symlink"]
    if links:
        refusals.append(refusal("symlink", "Symbolic links are not accepted; commit the files themselves.", links))
    modules = [w for w, e in zip(where, entries) if e.kind == "submodule"]
    if modules:
        refusals.append(refusal("submodule", "Git submodules are not accepted; commit the files themselves.", modules))
    files = [(w, e) for w, e in zip(where, entries) if e.kind == "file"]
    if len(files) > limits.max_files:
        refusals.append(
            refusal(
                "too-many-files",
                f"The folder holds {len(files)} files; at most {limits.max_files} "
                "are accepted. Keep only the files submission.yaml names.",
            )
        )
    odd = [w for w, e in files if e.lfs and e.size < 0]
    if odd:
        refusals.append(
            refusal(
                "lfs-pointer",
                "These look like Git LFS pointers the grader cannot read (so their size is unknown): "
                "commit them again with a current git-lfs, or without LFS.",
                odd,
            )
        )
    big = [w for w, e in files if e.size > limits.max_file_mb * 2**20]
    if big:
        refusals.append(refusal("file-too-big", f"Files larger than {limits.max_file_mb:g} MB are not accepted.", big))
    total = sum(max(e.size, 0) for _, e in files)
    if total > limits.max_total_mb * 2**20:
        refusals.append(
            refusal(
                "folder-too-big",
                f"The folder holds {total / 2**20:.0f} MB; at most {limits.max_total_mb:g} MB are accepted.",
            )
        )
    return refusals


def needs_approval(gate: str, author_association: str) -> bool:
    """Whether a person must approve the grading job first (``gate`` is the course's choice)."""
    if gate not in GATES:
        raise ValueError(f"gate must be one of {GATES}, not {gate!r}")
    return gate == "all" or (gate == "first-time" and author_association in FIRST_TIME)
