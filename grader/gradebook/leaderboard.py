"""The leaderboard of an assignment that names two figures (e.g. accuracy and speed): each team's
counted run as a point, and the Pareto front — the teams no other team beats on both figures."""

from __future__ import annotations

import numpy as np
import pandas as pd

from grader.checks import pareto
from grader.config.assignment import Assignment
from grader.gradebook.table import Gradebook, metrics_of

LEADERBOARD_COLUMNS = ["rank", "team", "x", "y", "on_front", "score", "baseline", "run_id"]


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
    """One row per team, in the one order every leaderboard table shows.

    With a score formula: exactly ``grader leaderboard``'s rows and ranks (``book.boards``, ranked by
    ``grader.gradebook.final.rank``: best gated entry per team, ties to the earlier submission,
    baseline rows last with no rank). Without one there is nothing to rank by: each rostered team's
    counted run, by team name, and no ``rank`` column at all.
    """
    spec = assignment.leaderboard
    if spec is None:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    if assignment.score is not None and assignment.id in book.boards:
        board = _ranked_rows(book.boards[assignment.id], spec.x.metric, spec.y.metric)
    else:
        board = _counted_rows(book, assignment)
    plotted = board[["x", "y"]].notna().all(axis=1) & ~board["baseline"]
    front = pareto_front(
        board.loc[plotted, "x"].to_numpy(float),
        board.loc[plotted, "y"].to_numpy(float),
        spec.x.higher_is_better,
        spec.y.higher_is_better,
    )
    board["on_front"] = False
    board.loc[plotted, "on_front"] = front
    columns = LEADERBOARD_COLUMNS if assignment.score is not None else [c for c in LEADERBOARD_COLUMNS if c != "rank"]
    return board[columns].reset_index(drop=True)


def _ranked_rows(entries: list, x: str, y: str) -> pd.DataFrame:
    rows = [
        {
            "rank": e.rank,
            "team": e.team,
            "x": e.figures.get(x),
            "y": e.figures.get(y),
            "score": e.score,
            "run_id": e.run_id,
            "baseline": e.baseline,
        }
        for e in entries
    ]
    frame = pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS)
    return frame.astype({"x": float, "y": float, "score": float, "rank": "Int64", "run_id": "Int64"})


def _counted_rows(book: Gradebook, assignment: Assignment) -> pd.DataFrame:
    spec = assignment.leaderboard
    counted = book.runs[
        (book.runs["assignment"] == assignment.id) & book.runs["counted"] & book.runs["team"].isin(book.rostered)
    ]
    metrics = metrics_of(counted)
    frame = pd.DataFrame(
        {
            "rank": pd.NA,
            "team": counted["team"],
            "x": metrics.map(lambda m: m.get(spec.x.metric)),
            "y": metrics.map(lambda m: m.get(spec.y.metric)),
            "score": counted["final"],
            "run_id": counted["id"],
            "baseline": counted["team"].isin(book.staff),
        }
    )
    frame = frame.dropna(subset=["x", "y"]).astype({"x": float, "y": float})
    return frame.sort_values("team", kind="stable")
