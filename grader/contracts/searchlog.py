"""The trial log of a compression search (hw5), as the worker read it: data, validated and bounded.

``grader.worker.searchlog`` reads the student's file (Optuna SQLite, CSV or JSON) inside the
sandbox into these shapes; the host's checks only ever see them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from grader.contracts.base import Strict

MAX_TRIALS = 10_000
MAX_OBJECTIVES = 8
MAX_PARAMS = 64

Name = Annotated[str, StringConstraints(max_length=64)]
ParamValue = float | int | bool | Annotated[str, StringConstraints(max_length=200)] | None
TrialState = Literal["COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"]
Direction = Literal["maximize", "minimize"]


class Trial(Strict):
    number: int
    state: TrialState
    values: list[float | None] = Field(max_length=MAX_OBJECTIVES, description="by objective index; None if not finite")
    params: dict[Name, ParamValue] = Field({}, max_length=MAX_PARAMS)
    duration_s: float | None = Field(
        None,
        description="completion minus start time as the log records them; None where it records no times. "
        "study.optimize always takes time; create_trial/add_trial record the same instant twice",
    )

    def clocked(self) -> bool:
        """Whether a clock could have produced this trial: it has times, and it took some."""
        return self.duration_s is not None and self.duration_s > 0


class SearchLog(Strict):
    """The trials of one study, as logged (nothing here has been checked against a model yet)."""

    source: Literal["optuna-sqlite", "csv", "json"]
    study: str = Field("", max_length=512)
    objectives: list[Name] = Field(max_length=MAX_OBJECTIVES, description="names by index; '' where unnamed")
    directions: list[Direction | None] = Field(max_length=MAX_OBJECTIVES, description="None where the log says none")
    trials: list[Trial] = Field(max_length=MAX_TRIALS)

    def complete(self) -> list[Trial]:
        return [t for t in self.trials if t.state == "COMPLETE" and all(v is not None for v in t.values)]


class SearchLogObservation(Strict):
    """What the worker read: the log, or why it could not be read (phrased for the student)."""

    log: SearchLog | None = None
    error: str = Field("", max_length=2000)
