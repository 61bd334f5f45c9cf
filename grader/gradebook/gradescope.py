"""``grader results export --format gradescope``: one Gradescope-style ``results.json`` per team
and assignment, from the counted run (late penalty and override applied, each shown as a test).

The layout follows Gradescope's autograder specification: top-level ``score``, ``output``,
``visibility`` and ``tests`` (``name``, ``score``, ``max_score``, ``status`` passed/failed,
``output``, ``visibility``), plus ``leaderboard`` entries where the assignment defines one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from grader.config.assignment import Assignment
from grader.contracts.result import CheckStatus, Result
from grader.gradebook.table import Gradebook, metrics_of


def gradescope_results(
    grade: pd.Series, result: Result | None, assignment: Assignment, metrics: dict[str, float]
) -> dict[str, Any]:
    tests: list[dict[str, Any]] = []
    if result is not None:
        for check in result.checks:
            tests.append(
                {
                    "name": check.title,
                    "number": check.id,
                    "score": check.points,
                    "max_score": check.max_points,
                    "status": "passed" if check.status is CheckStatus.PASS else "failed",
                    "output": f"[{check.status.value}] {check.message}",
                    "visibility": "visible",
                }
            )
    lost = grade["points_lost"]
    if pd.notna(lost) and lost > 0:
        tests.append(
            {
                "name": "Late penalty",
                "score": -float(lost),
                "max_score": 0,
                "status": "failed",
                "output": f"{int(grade['days_late'])} day(s) late by the GitHub event time",
                "visibility": "visible",
            }
        )
    if pd.notna(grade["override_points"]):
        tests.append(
            {
                "name": "Instructor override",
                "score": float(grade["override_points"]),
                "max_score": 0,
                "status": "passed",
                "output": f"Points set to {grade['override_points']:g}: {grade['override_reason']}",
                "visibility": "visible",
            }
        )
    output = [
        f"{assignment.title}: {grade['score']:g} / {assignment.max_score:g}"
        if pd.notna(grade["score"])
        else f"{assignment.title}: no counted run"
    ]
    if isinstance(grade["pr_url"], str):
        output.append(f"Graded from {grade['pr_url']}")
    if grade["flags"]:
        output.append(f"Notes: {grade['flags']}")
    data: dict[str, Any] = {
        "score": float(grade["score"]) if pd.notna(grade["score"]) else 0.0,
        "output": "\n".join(output),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }
    if assignment.leaderboard is not None:
        board = [(axis, metrics.get(axis.metric)) for axis in (assignment.leaderboard.y, assignment.leaderboard.x)]
        data["leaderboard"] = [
            {"name": axis.label, "value": value, "order": "desc" if axis.higher_is_better else "asc"}
            for axis, value in board
            if value is not None
        ]
    return data


def export_gradescope(book: Gradebook, results: dict[int, Result], out_dir: Path) -> list[Path]:
    """Write ``<out>/<assignment>/<team>/results.json`` for every team grade; returns the paths."""
    by_id = {a.id: a for a in book.assignments}
    counted = book.runs[book.runs["counted"]]
    metrics = dict(zip(counted["id"], metrics_of(counted)))
    written = []
    for _, grade in book.grades.iterrows():
        run_id = int(grade["run_id"]) if pd.notna(grade["run_id"]) else None
        data = gradescope_results(
            grade, results.get(run_id) if run_id else None, by_id[grade["assignment"]], metrics.get(run_id, {})
        )
        path = out_dir / grade["assignment"] / grade["team"] / "results.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written
