"""``result.json``: the versioned record of one grading, read by every later stage.

Renderers, publishers and the gradebook depend only on this file's schema; the JSON Schema is
exported to ``schemas/result.schema.json`` (``grader schema``) so non-Python consumers can
validate it too.
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field

from grader.contracts.base import Strict
from grader.contracts.observations import Environment, Estimate
from grader.contracts.problem import Problem  # noqa: F401  (part of the result)

SCHEMA_VERSION = 1


class CheckStatus(str, Enum):
    PASS = "pass"
    PARTIAL = "partial"
    FAIL = "fail"
    SKIPPED = "skipped"
    ERROR = "error"


class ChartPoint(Strict):
    x: float
    y: float
    label: str = Field("", max_length=64)


class ChartSeries(Strict):
    name: str = Field(max_length=64)
    points: list[ChartPoint] = Field(max_length=10_000)
    table: bool = Field(True, description="also list these points in the Markdown comment's table")


class Chart(Strict):
    """A scatter plot a check wants shown (e.g. hw5's Pareto front): data, not an image."""

    title: str = Field(max_length=200)
    x_label: str = Field(max_length=64)
    y_label: str = Field(max_length=64)
    series: list[ChartSeries] = Field(max_length=8)


class CheckResult(Strict):
    id: str
    title: str
    status: CheckStatus
    points: float
    max_points: float
    message: str = Field(description="what was found and, on a shortfall, how to fix it")
    evidence: dict[str, Any] = {}
    gate: bool = False
    bonus: bool = Field(False, description="extra credit: points add to score, max_points not to max_score")
    pending: bool = Field(
        False,
        description="could not run on this machine (e.g. needs a GPU): skipped, and its "
        "points count neither for nor against; the grading runner decides",
    )
    chart: Chart | None = None


class AssignmentRef(Strict):
    id: str
    version: int


class SubmissionRef(Strict):
    team: str
    members: list[str] = []
    path: str
    files: dict[str, str] = Field({}, description="file name -> sha256")
    model_files: dict[str, dict[str, int]] = Field(
        {}, description="model role -> every file its size counts (an ONNX file and its external data): path -> bytes"
    )
    claims: dict[str, Any] = {}
    reported: dict[str, Any] = {}
    notes: str = ""


class GraderRef(Strict):
    version: str


class RunContext(Strict):
    """Where and when this grading happened, as GitHub says (never from commit dates)."""

    repository: str | None = None
    pr_number: int | None = None
    head_sha: str | None = None
    event_time: datetime | None = Field(None, description="time of the push / PR event, from GitHub")
    run_id: int | None = None
    run_attempt: int | None = Field(
        None, description="the workflow run's attempt that graded (GITHUB_RUN_ATTEMPT): a re-run keeps the run id"
    )
    run_url: str | None = None


class Result(Strict):
    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    status: Literal["graded", "rejected", "error"]
    assignment: AssignmentRef
    submission: SubmissionRef
    score: float = Field(description="points earned, bonus points included")
    max_score: float = Field(description="points of the regular checks graded in this run (no bonus, no pending)")
    bonus_points: float = Field(0.0, description="bonus points earned (already part of score)")
    pending_points: float = Field(0.0, description="points of checks that could not run here (e.g. no GPU)")
    checks: list[CheckResult] = []
    problems: list[Problem] = []
    metrics: dict[str, Estimate] = {}
    flags: list[str] = Field(
        [],
        max_length=50,
        description="what staff should look at (a speedup beyond what the file explains, weights computed at "
        "run time, control flow, no parameters found, timed answers that differ): shown, never scored",
    )
    environment: Environment = Environment()
    grader: GraderRef
    context: RunContext = RunContext()
    started_at: datetime
    duration_s: float

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)

    @classmethod
    def load(cls, path: Path) -> Result:
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))


def json_schema() -> str:
    """The result's JSON Schema, as committed in ``schemas/result.schema.json``."""
    schema = Result.model_json_schema(by_alias=True)
    schema["$id"] = "https://compression-grader/schemas/result.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
