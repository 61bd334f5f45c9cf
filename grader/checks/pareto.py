"""Pareto dominance over several objectives, each maximised or minimised.

Plain functions on numbers, shared by the hw5 checks and anything that later ranks submissions
on more than one figure (a leaderboard). A point is "within tolerance of the front" when no
logged point dominates it even after it is moved by its tolerance in its favour on every
objective, so a figure that is within noise of a better trial never counts against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Point = Sequence[float]


def better_or_equal(a: float, b: float, direction: str) -> bool:
    return a >= b if direction == "maximize" else a <= b


def strictly_better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def dominates(a: Point, b: Point, directions: Sequence[str]) -> bool:
    """``a`` is at least as good as ``b`` on every objective and better on one."""
    pairs = list(zip(a, b, directions))
    return all(better_or_equal(x, y, d) for x, y, d in pairs) and any(strictly_better(x, y, d) for x, y, d in pairs)


def pareto_front(points: Mapping[int, Point], directions: Sequence[str]) -> list[int]:
    """Keys of the points no other point dominates, in key order."""
    return [
        k
        for k, p in sorted(points.items())
        if not any(dominates(q, p, directions) for j, q in points.items() if j != k)
    ]


def give_benefit(point: Point, tolerances: Sequence[float], directions: Sequence[str]) -> list[float]:
    """``point`` moved by its tolerance in the favourable direction on every objective."""
    return [v + t if d == "maximize" else v - t for v, t, d in zip(point, tolerances, directions)]


def dominators(
    point: Point, tolerances: Sequence[float], points: Mapping[int, Point], directions: Sequence[str]
) -> list[int]:
    """Keys of the logged points that dominate ``point`` even after it gets its tolerance."""
    helped = give_benefit(point, tolerances, directions)
    return [k for k, p in sorted(points.items()) if dominates(p, helped, directions)]
