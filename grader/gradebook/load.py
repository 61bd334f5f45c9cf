"""Open everything a gradebook needs: the store, the policy files (assignments, roster), the table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from grader.config.assignment import Assignment, list_assignment_ids, load_assignment
from grader.config.paths import assignments_root
from grader.config.roster import Roster, default_roster_path, load_roster
from grader.gradebook.table import Gradebook, build_gradebook
from grader.records.store import Store


@dataclass
class Sources:
    db: Path
    assignments: Path | None = None  # None: $GRADER_ASSIGNMENTS or the repository's assignments/
    roster: Path | None = None
    web_url: str = "https://github.com"


def load_assignments(root: Path | None) -> list[Assignment]:
    return [load_assignment(i, root) for i in list_assignment_ids(root)]


def board_run_ids(book: Gradebook, assignment: Assignment) -> list[int]:
    """The runs a leaderboard may take: graded, the latest grading of their commit, before the cutoff."""
    runs = book.runs
    keep = (runs["assignment"] == assignment.id) & runs["current"] & ~runs["past_cutoff"] & (runs["status"] == "graded")
    return runs.loc[keep, "id"].astype(int).tolist()


def course_end(sources: Sources) -> datetime | None:
    """``ends`` of the course repository's course.yaml (next to its assignments/), where it says."""
    from grader.config.course import COURSE_FILE, load_course

    path = (sources.assignments or assignments_root()).parent / COURSE_FILE
    return load_course(path).ends if path.is_file() else None


def open_gradebook(sources: Sources, store: Store, with_metrics: bool = True) -> Gradebook:
    """The gradebook; ``with_metrics`` adds the figures of the counted runs (leaderboards, Gradescope)."""
    roster_path = sources.roster or default_roster_path()
    roster: Roster = load_roster(roster_path)
    runs = store.runs_frame()
    book = build_gradebook(
        runs,
        load_assignments(sources.assignments),
        roster,
        store.overrides_frame(),
        store.extensions_frame(),
        web_url=sources.web_url,
        course_ends=course_end(sources),
    )
    book.provenance = (
        f"store {sources.db} ({len(runs)} runs), roster {roster_path} ({len(roster.teams)} teams), "
        f"assignments {sources.assignments or assignments_root()}"
    )
    if with_metrics:
        counted = book.runs.index[book.runs["counted"]]
        figures = store.metrics(book.runs.loc[counted, "id"])
        book.runs["metrics_json"] = book.runs["id"].map(figures).fillna("{}")
        from grader.gradebook.final import board_from_store

        for assignment in book.assignments:
            if assignment.score is not None and assignment.leaderboard is not None:
                book.boards[assignment.id] = board_from_store(
                    store, assignment, roster, board_run_ids(book, assignment)
                )
    return book
