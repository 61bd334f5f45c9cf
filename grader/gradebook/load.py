"""Open everything a gradebook needs: the store, the policy files (assignments, roster), the table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from grader.config.assignment import Assignment, list_assignment_ids, load_assignment
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


def open_gradebook(sources: Sources, store: Store, with_metrics: bool = True) -> Gradebook:
    """The gradebook; ``with_metrics`` adds the figures of the counted runs (leaderboards, Gradescope)."""
    roster: Roster = load_roster(sources.roster or default_roster_path())
    book = build_gradebook(
        store.runs_frame(),
        load_assignments(sources.assignments),
        roster,
        store.overrides_frame(),
        store.extensions_frame(),
        web_url=sources.web_url,
    )
    if with_metrics:
        counted = book.runs.index[book.runs["counted"]]
        figures = store.metrics(book.runs.loc[counted, "id"])
        book.runs["metrics_json"] = book.runs["id"].map(figures).fillna("{}")
        from grader.gradebook.final import board_from_store

        for assignment in book.assignments:
            if assignment.score is not None and assignment.leaderboard is not None:
                book.boards[assignment.id] = board_from_store(store, assignment, roster)
    return book
