"""``assignments/<id>/assignment.yaml``: what staff decide (roles, limits, checks, thresholds).

It comes from the base branch and is trusted, but a staff typo must still fail loudly at load
time (``ConfigError``), not halfway through a student's grading.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grader.errors import ConfigError, SubmissionError
from grader.policy import Leaderboard, Policy

ASSIGNMENT_FILE = "assignment.yaml"
# libyaml's safe loader when PyYAML has it (same rules, ~10x faster: the gradebook reads every file)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSlot(Strict):
    description: str = ""
    required: bool = True


class Limits(Strict):
    wall_time_s: float = 180
    memory_mb: int = 4096
    model_file_mb: int = 512
    inputs_file_mb: int = 256


class TimingSpec(Strict):
    """Interleaved timing: rounds of A B A B within ``budget_s``, after ``warmup`` calls each."""

    threads: int = 1
    batch_sizes: list[int] = [1, 64]
    warmup: int = 3
    budget_s: float = 20.0
    min_rounds: int = 7
    max_rounds: int = 400


class Pair(Strict):
    reference: str
    candidate: str


class MeasureSpec(Strict):
    compare: list[Pair] = []
    timing: TimingSpec = TimingSpec()
    fidelity_batch_size: int = 256
    max_samples: int = 4096


class ServiceSpec(Strict):
    """Service track: how the grader starts, loads and judges a team's inference service.

    Paths are relative to the course repository (trusted, base branch).
    """

    reference_model: str = Field(description="ONNX model whose answers the service must give")
    corpus: str = Field(description="public request corpus (.npz with 'input', optional 'labels')")
    reference_command: list[str] = Field(description="command of the course's reference service")
    reference_folder: str
    startup_s: float = 60
    warmup_s: float = 2
    levels: list[int] = [1, 4, 16]
    level_s: float = 5
    request_timeout_s: float = 5
    max_requests: int = 2048


class CheckSpec(Strict):
    """One check; ``rule`` names a function in ``grader.checks`` and ``params`` are its knobs."""

    id: str
    title: str
    rule: str
    points: float = 0
    gate: bool = False
    params: dict[str, Any] = {}
    fix: str = Field("", description="how to fix a shortfall, shown to the student")

    @field_validator("fix", "title")
    @classmethod
    def _tidy(cls, value: str) -> str:
        """YAML folded blocks end in a newline; reports want one clean line."""
        return " ".join(value.split())


class Assignment(Strict):
    id: str
    version: int
    title: str
    summary: str = ""
    models: dict[str, ModelSlot]
    inputs_required: bool = True
    limits: Limits = Limits()
    measure: MeasureSpec = MeasureSpec()
    checks: list[CheckSpec]
    service: ServiceSpec | None = None
    checker: str | None = Field(None, description="module in the assignment folder that adds rules")
    policy: Policy = Field(Policy(), description="deadline, late rule and which run counts (gradebook)")
    leaderboard: Leaderboard | None = Field(None, description="figures plotted against each other (gradebook)")

    @model_validator(mode="after")
    def _consistent(self) -> "Assignment":
        roles = set(self.models)
        for pair in self.measure.compare:
            unknown = {pair.reference, pair.candidate} - roles
            if unknown:
                raise ValueError(f"measure.compare names unknown model roles {sorted(unknown)}")
        ids = [c.id for c in self.checks]
        if len(ids) != len(set(ids)):
            raise ValueError("check ids must be unique")
        return self

    @property
    def max_score(self) -> float:
        return sum(c.points for c in self.checks)


def assignments_root() -> Path:
    """Where assignment folders live: ``$GRADER_ASSIGNMENTS`` or the repository's own folder."""
    env = os.environ.get("GRADER_ASSIGNMENTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "assignments"


def load_assignment(assignment_id: str, root: Path | None = None) -> Assignment:
    """Load one assignment; an unknown id is the student's error, a broken file is staff's."""
    root = root or assignments_root()
    folder = root / assignment_id
    path = folder / ASSIGNMENT_FILE
    if not path.is_file():
        known = ", ".join(list_assignment_ids(root)) or "none"
        raise SubmissionError(
            f"there is no assignment '{assignment_id}'.",
            f"Set 'assignment' in submission.yaml to one of: {known}.",
            kind="manifest",
        )
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
        assignment = Assignment.model_validate(data)
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if assignment.id != assignment_id:
        raise ConfigError(f"{path}: id '{assignment.id}' differs from its folder name '{assignment_id}'")
    return assignment


def list_assignment_ids(root: Path | None = None) -> list[str]:
    root = root or assignments_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / ASSIGNMENT_FILE).is_file())
