"""The gradebook's pictures, drawn with matplotlib (Agg, no display) and returned as PNG data URIs
so the HTML page is one self-contained file that opens anywhere, offline."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from grader.config.assignment import Assignment
from grader.gradebook.leaderboard import leaderboard
from grader.gradebook.table import Gradebook


@dataclass
class Plot:
    id: str
    title: str
    alt: str
    data_uri: str


def _say_empty(ax: Any) -> None:
    """An axis with nothing to show says so, instead of a frame with meaningless ±0.04 ticks."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, NO_RUNS, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="#777777")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


NO_RUNS = "no runs yet"


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    # a tight bounding box: no tick label, title or long team name is cut off at the edge (one more draw)
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight", pad_inches=0.1)
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def score_distributions(book: Gradebook) -> Plot:
    """One histogram per assignment of the teams' final scores (overrides and penalties included)."""
    plt = _pyplot()
    count = max(len(book.assignments), 1)
    columns = min(count, 4)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    fig.subplots_adjust(
        left=0.08, right=0.98, bottom=0.5 / (2.4 * rows) + 0.04, top=1 - 0.45 / (2.4 * rows), wspace=0.35, hspace=0.75
    )
    for ax, assignment in zip(axes.flat, book.assignments):
        scores = book.grades.loc[book.grades["assignment"] == assignment.id, "score"].dropna()
        ax.set_title(assignment.id, fontsize=9)
        if not len(scores):
            _say_empty(ax)
            continue
        top = max(assignment.max_score, float(scores.max()), 1.0)
        ax.hist(scores, bins=np.linspace(0, top, 21), color="#4c72b0")
        ax.set_xlabel("score", fontsize=8)
        ax.set_ylabel("teams", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[count:]:
        ax.axis("off")
    fig.suptitle("Score distribution per assignment", fontsize=10)
    return Plot(
        "scores",
        "Score distribution per assignment",
        "histograms of the teams' final scores, one per assignment",
        _png(fig),
    )


def submissions_over_time(book: Gradebook) -> Plot:
    """Runs per hour around each assignment's deadline (cumulative), with the deadline marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.6))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.3, top=0.95)
    runs = book.runs[book.runs["current"]]
    if not len(runs):
        _say_empty(ax)
        return Plot("timeline", "Submissions over time against the deadline", f"timeline: {NO_RUNS}", _png(fig))
    for assignment in book.assignments:
        times = runs.loc[runs["assignment"] == assignment.id, "when"].sort_values()
        if not len(times):
            continue
        line = ax.step(
            times.dt.tz_convert(None), np.arange(1, len(times) + 1), where="post", label=assignment.id, linewidth=1.2
        )
        deadline = assignment.policy.deadline_utc()
        if deadline is not None:
            ax.axvline(deadline.replace(tzinfo=None), color=line[0].get_color(), linestyle="--", linewidth=1)
    ax.set_xlabel("GitHub event time (UTC); dashed: deadline")
    ax.set_ylabel("runs so far")
    ax.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    return Plot(
        "timeline",
        "Submissions over time against the deadline",
        "cumulative runs per assignment over time, each deadline a dashed line",
        _png(fig),
    )


def leaderboard_scatter(book: Gradebook, assignment: Assignment) -> Plot | None:
    spec = assignment.leaderboard
    if spec is None:
        return None
    board = leaderboard(book, assignment)
    board = board[board[["x", "y"]].notna().all(axis=1) & ~board["baseline"].astype(bool)]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.93)
    if not len(board):
        ax.set_title(f"{assignment.id}: {NO_RUNS}", fontsize=10)
        _say_empty(ax)
        return Plot(f"leaderboard-{assignment.id}", f"{assignment.title}: {NO_RUNS}", f"scatter: {NO_RUNS}", _png(fig))
    others, front = board[~board["on_front"]], board[board["on_front"]].sort_values("x")
    ax.scatter(others["x"], others["y"], s=14, color="#999999", label="teams")
    ax.plot(front["x"], front["y"], "o-", color="#c44e52", markersize=5, label="Pareto front")
    for row in front.itertuples():
        ax.annotate(row.team, (row.x, row.y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(spec.x.label + ("" if spec.x.higher_is_better else " (lower is better)"))
    ax.set_ylabel(spec.y.label + ("" if spec.y.higher_is_better else " (lower is better)"))
    which = "best ranked entry" if assignment.score is not None else "counted run"
    ax.set_title(f"{assignment.id}: {which} per team", fontsize=10)
    ax.legend(fontsize=7)
    return Plot(
        f"leaderboard-{assignment.id}",
        f"{assignment.title}: {spec.y.label} vs {spec.x.label}",
        f"scatter of {spec.y.label} against {spec.x.label} per team, Pareto front in red",
        _png(fig),
    )


def all_plots(book: Gradebook) -> list[Plot]:
    plots = [score_distributions(book), submissions_over_time(book)]
    plots += [p for p in (leaderboard_scatter(book, a) for a in book.assignments) if p is not None]
    return plots
