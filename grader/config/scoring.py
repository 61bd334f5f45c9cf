"""The final project's leaderboard score: a weighted formula over figures, written in assignment.yaml.

Every term is a ratio against the course reference measured in the same run (speedup, size
reduction, accuracy ratio), so the score does not depend on how fast the grading machine is:
a slower runner slows the reference and the entry alike. The formula is printed in the report.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from grader.contracts.base import Strict
from grader.contracts.figures import SCORE_FIGURE  # noqa: F401  (the figure this formula fills)
from grader.contracts.observations import Estimate


class Term(Strict):
    metric: str = Field(description="a figure name, e.g. candidate_vs_reference.speedup_b64")
    weight: float
    transform: Literal["log2", "linear"] = Field("log2", description="log2: doubling a ratio adds `weight`")
    label: str = ""


class ScoreFormula(Strict):
    terms: list[Term] = Field(min_length=1)

    def describe(self) -> str:
        parts = []
        for term in self.terms:
            name = term.label or term.metric
            parts.append(f"{term.weight:g}·log2({name})" if term.transform == "log2" else f"{term.weight:g}·{name}")
        return "score = " + " + ".join(parts)

    def evaluate(self, figures: dict[str, Estimate]) -> Estimate:
        """The score from the figures' central values; None when a term's figure is missing or not
        positive, with a note naming the term and why it is missing, so the student can fix it."""
        total = 0.0
        for term in self.terms:
            figure = figures.get(term.metric)
            value = figure.value if figure is not None else None
            if value is None or (term.transform == "log2" and value <= 0):
                name = term.label or term.metric
                why = figure.note if figure is not None and figure.note else "not measured"
                if value is not None:
                    why = f"it is {value:g}, and only a positive ratio has a log2"
                pending = figure is not None and figure.pending  # it waits for the GPU runner: so does the score
                return Estimate(value=None, note=f"{name} has no value: {why}", pending=pending)
            total += term.weight * (math.log2(value) if term.transform == "log2" else value)
        return Estimate(value=total)

    def neutral(self) -> float:
        """The score of an entry that equals the reference (every ratio 1): the reference row."""
        return sum(term.weight * (0.0 if term.transform == "log2" else 1.0) for term in self.terms)
