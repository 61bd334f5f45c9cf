"""What the checks will make of each timed figure, handed to the worker before it times.

Timing stops once more rounds cannot change a verdict (``grader.worker.timing``), so the worker
must know, for every speedup a check scores, the thresholds and points it is scored by. They are
read here from the assignment's ``thresholds`` checks, the same parameters the check itself is
bound with later, so the two cannot disagree.
"""

from __future__ import annotations

import re

from grader.checks.rules.compression import ThresholdsParams
from grader.config.assignment import Assignment
from grader.contracts.job import TimingDecision

TIMED_FIGURE = re.compile(r"^[a-z0-9_]+_vs_[a-z0-9_]+\.speedup_b\d+$")


def timing_decisions(assignment: Assignment) -> list[TimingDecision]:
    """One decision per scored speedup criterion; one that is also a leaderboard axis is ranked,
    so timing goes on until it is precise as well as decided."""
    found: list[TimingDecision] = []
    board = assignment.leaderboard
    ranked = {board.x.metric, board.y.metric} if board is not None else set()
    for check in assignment.checks:
        if check.rule != "thresholds" or not check.points:
            continue
        for criterion in ThresholdsParams.model_validate(check.params).criteria:
            if TIMED_FIGURE.match(criterion.metric):
                found.append(
                    TimingDecision(
                        figure=criterion.metric,
                        full=criterion.full,
                        zero=criterion.zero,
                        points=check.points,
                        favourable=criterion.use_interval,
                        ranked=criterion.metric in ranked,
                    )
                )
    return found
