"""The leaderboard of an assignment that names two figures (e.g. accuracy and speed): each team's
counted run as a point, and the Pareto front — the teams no other team beats on both figures."""

from __future__ import annotations

import numpy as np
import pandas as pd

from grader.checks import pareto
from grader.config.assignment import Assignment
from grader.gradebook.table import Gradebook, metrics_of

LEADERBOARD_COLUMNS = ["team", "x", "y", "on_front", "score", "run_id"]


def pareto_front(x: np.ndarray, y: np.ndarray, x_higher: bool = True, y_higher: bool = True) -> np.ndarray:
    """Mask of the teams no other team matches or beats on both axes while beating it on one.

    The dominance rule is hw5's (``grader.checks.pareto``), so a front means the same thing everywhere;
    boards have one point per team, so its pairwise comparison is cheap.
    """
    directions = ["maximize" if x_higher else "minimize", "maximize" if y_higher else "minimize"]
    points = {i: (float(a), float(b)) for i, (a, b) in enumerate(zip(x, y))}
    front = set(pareto.pareto_front(points, directions))
    return np.array([i in front for i in range(len(points))], dtype=bool)


def leaderboard(book: Gradebook, assignment: Assignment) -> pd.DataFrame:
    """One row per team whose counted run has both figures, best ``y`` first."""
    spec = assignment.leaderboard
    if spec is None:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    counted = book.runs[(book.runs["assignment"] == assignment.id) & book.runs["counted"]]
    metrics = metrics_of(counted)
    board = (
        pd.DataFrame(
            {
                "team": counted["team"],
                "x": metrics.map(lambda m: m.get(spec.x.metric)),
                "y": metrics.map(lambda m: m.get(spec.y.metric)),
                "score": counted["final"],
                "run_id": counted["id"],
            }
        )
        .dropna(subset=["x", "y"])
        .astype({"x": float, "y": float})
    )
    front = pareto_front(board["x"].to_numpy(), board["y"].to_numpy(), spec.x.higher_is_better, spec.y.higher_is_better)
    board["on_front"] = pd.Series(front, index=board.index, dtype=bool)
    board = board.sort_values("y", ascending=not spec.y.higher_is_better, kind="stable")
    return board[LEADERBOARD_COLUMNS].reset_index(drop=True)
