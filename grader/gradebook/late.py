"""Lateness and late penalties: an assignment's ``Policy`` applied to runs' GitHub event times.

Lateness is real elapsed time in UTC (a day is 86,400 s even across a daylight-saving change),
counted in started days: one second past the deadline (after the grace period) is one day late.
Vectorised over a pandas frame, because the gradebook applies it to tens of thousands of runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from grader.config.policy import SECONDS_PER_DAY, LateRule


@dataclass
class Lateness:
    """Per run: seconds past its deadline (NaN: no deadline), started days late, points lost, final score."""

    seconds_late: pd.Series
    days_late: pd.Series
    past_cutoff: pd.Series
    points_lost: pd.Series
    final: pd.Series


def assess(when: pd.Series, deadline: pd.Series, score: pd.Series, max_score: pd.Series, rule: LateRule) -> Lateness:
    """Apply one late rule to runs; ``when`` and ``deadline`` are UTC timestamps (deadline NaT: none)."""
    seconds = (when - deadline).dt.total_seconds()
    late = seconds > rule.grace_minutes * 60
    days = pd.Series(np.where(late, np.ceil(seconds / SECONDS_PER_DAY), 0), index=when.index).astype(int)
    cutoff = rule.cutoff_days * SECONDS_PER_DAY if rule.cutoff_days is not None else np.inf
    past_cutoff = (seconds > cutoff).fillna(False)
    fraction = np.minimum(rule.cap, rule.per_day * days)
    basis = score if rule.basis == "score" else max_score
    lost = (fraction * basis).clip(upper=score).round(2)
    return Lateness(
        seconds_late=seconds,
        days_late=days,
        past_cutoff=past_cutoff.astype(bool),
        points_lost=lost,
        final=(score - lost).round(2),
    )
