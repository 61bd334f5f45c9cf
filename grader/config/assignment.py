"""``assignments/<id>/assignment.yaml``: what staff decide (roles, limits, checks, thresholds).

It comes from the base branch and is trusted, but a staff typo must still fail loudly at load
time (``ConfigError``), not halfway through a student's grading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from grader.config.paths import assignments_root, references_root  # noqa: F401  (re-exported)
from grader.config.policy import Leaderboard, Policy
from grader.config.scoring import ScoreFormula
from grader.contracts.base import Strict
from grader.contracts.figures import is_device_figure, named_metrics
from grader.contracts.job import (  # noqa: F401  (re-exported: part of assignment.yaml)
    DerivedSpec,
    HeldoutSpec,
    Limits,
    MeasureSpec,
    Pair,
    ProbeSpec,
    TimingSpec,
)
from grader.errors import ConfigError, SubmissionError

ASSIGNMENT_FILE = "assignment.yaml"
# libyaml's safe loader when PyYAML has it (same rules, ~10x faster: the gradebook reads every file)
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ModelSlot(Strict):
    description: str = ""
    required: bool = True
    formats: list[Literal["onnx", "pt2", "safetensors"]] | None = Field(
        None, description="formats this role accepts (default: any the grader reads)"
    )


class ReferenceModel(Strict):
    """A trusted course model graded alongside the submission (from ``reference/``, never the PR)."""

    path: str = Field(description="relative to the references folder ($GRADER_REFERENCES or reference/)")
    architecture: str | None = None
    description: str = ""


class ServiceSpec(Strict):
    """Service track: how the grader starts, loads and judges a team's inference service.

    Paths are relative to the course repository (trusted, base branch).
    """

    reference_model: str = Field(description="ONNX model whose answers the service must give")
    corpus: str = Field(description="public request corpus (.npz with 'input', optional 'labels')")
    reference_command: list[str] = Field(description="command of the course's reference service")
    reference_folder: str
    reference_files: list[str] = Field(
        [],
        description="course files placed next to the reference service's "
        "own files when it runs in a container (its model)",
    )
    startup_s: float = 60
    warmup_s: float = 2
    levels: list[int] = [1, 4, 16]
    level_s: float = Field(5, description="seconds of load per level, for each service")
    rounds: int = Field(2, ge=1, le=20, description="slices each level is cut into, alternating team and reference")
    request_timeout_s: float = 5
    max_requests: int = 2048


class ObjectiveSpec(Strict):
    """How a logged search objective maps to a figure the grader measures."""

    metric: str = Field(description="figure name, e.g. candidate.accuracy")
    direction: Literal["maximize", "minimize"]
    tolerance: float = Field(0.0, ge=0, description="absolute agreement allowed between logged and measured")
    relative_tolerance: float = Field(0.0, ge=0, description="relative agreement allowed (of the measured value)")
    hardware_dependent: bool = Field(
        False,
        description="e.g. latency: logged on the student's machine, "
        "so shown next to the measured value but not compared",
    )


class SearchSpec(Strict):
    """hw5: the objectives a search log may use, and the claim naming the chosen trial."""

    objectives: dict[str, ObjectiveSpec]
    trial_claim: str = "trial"


HARDWARE_RULES = frozenset({"derived_runtime"})
"""Rules whose check may be *pending* (skipped for want of a GPU or TensorRT, points neither won nor
lost). The publisher holds an uploaded result to this list: any other check that claims to be
pending is a forged result trying to shrink its maximum."""


class CheckSpec(Strict):
    """One check; ``rule`` names a function in ``grader.checks`` and ``params`` are its knobs."""

    id: str
    title: str
    rule: str
    points: float = 0
    gate: bool = False
    params: dict[str, Any] = {}
    bonus: bool = Field(False, description="extra credit: earned points add to the score, not to max_score")
    fix: str = Field("", description="how to fix a shortfall, shown to the student")
    requires: list[str] = Field(
        [], description="checks (earlier in the list) that must not fail for this one to earn points, e.g. fidelity"
    )
    _on_gpu: bool = PrivateAttr(False)  # set by Assignment: it reads figures measured on CUDA

    @property
    def device_figures(self) -> list[str]:
        """The figures this check reads that depend on the device the models ran on."""
        return [m for m in named_metrics(self.params) if is_device_figure(m)]

    @property
    def may_be_pending(self) -> bool:
        """A TensorRT check, or one that reads figures an assignment measures on CUDA: a machine
        without the hardware leaves its points pending, and only these checks may say so."""
        return self.rule in HARDWARE_RULES or self._on_gpu

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
    course_item: str | None = Field(
        None,
        description="the gradebook column this assignment counts under (default: its id). Assignments that "
        "share one are alternatives, as the final project's two tracks: a team's best of them counts, once",
    )
    models: dict[str, ModelSlot]
    references: dict[str, ReferenceModel] = {}
    inputs_required: bool = True
    search_log_required: bool = False
    search: SearchSpec | None = None
    limits: Limits = Limits()
    measure: MeasureSpec = MeasureSpec()
    checks: list[CheckSpec]
    service: ServiceSpec | None = None
    checker: str | None = Field(None, description="module in the assignment folder that adds rules")
    policy: Policy = Field(Policy(), description="deadline, late rule and which run counts (gradebook)")
    leaderboard: Leaderboard | None = Field(None, description="figures plotted against each other (gradebook)")
    score: ScoreFormula | None = Field(None, description="leaderboard score formula (final project)")
    max_runs_per_day: int | None = Field(None, ge=1, description="graded runs per team per UTC day (needs a store)")

    @model_validator(mode="after")
    def _consistent(self) -> Assignment:
        clash = set(self.models) & set(self.references)
        if clash:
            raise ValueError(f"references reuse model roles {sorted(clash)}")
        sources = set(self.models) | set(self.references)
        for spec in self.measure.derived:
            if spec.source not in self.models or spec.role in sources:
                raise ValueError(f"measure.derived '{spec.role}' must build a new role from a submitted model")
        roles = sources | {d.role for d in self.measure.derived}
        named = [r for pair in self.measure.compare for r in (pair.reference, pair.candidate)]
        named += self.measure.solo + (self.measure.probe.roles if self.measure.probe else [])
        named += self.measure.heldout.roles if self.measure.heldout else []
        unknown = sorted(set(named) - roles)
        if unknown:
            raise ValueError(f"measure names unknown model roles {unknown}")
        ids = [c.id for c in self.checks]
        if len(ids) != len(set(ids)):
            raise ValueError("check ids must be unique")
        for index, check in enumerate(self.checks):
            unknown = [r for r in check.requires if r not in ids[:index]]
            if unknown:
                raise ValueError(f"check '{check.id}' requires {unknown}, which are not checks listed before it")
        missing = sorted(set(self.leaderboard.ranked_if) - set(ids)) if self.leaderboard else []
        if missing:
            raise ValueError(f"leaderboard.ranked_if names unknown checks {missing}")
        self.mark_gpu_checks()
        return self

    def mark_gpu_checks(self) -> None:
        """Which checks read figures measured on CUDA (``measure.device: cuda``), so may be pending."""
        for check in self.checks:
            check._on_gpu = self.measure.device == "cuda" and bool(check.device_figures)

    def ranking_checks(self) -> list[str]:
        """The checks an entry must pass to be ranked on the leaderboard: the gates and ``ranked_if``."""
        extra = self.leaderboard.ranked_if if self.leaderboard else []
        return [c.id for c in self.checks if c.gate or c.id in extra]

    @property
    def item(self) -> str:
        return self.course_item or self.id

    @property
    def max_score(self) -> float:
        """Points of the regular checks; bonus checks come on top."""
        return sum(c.points for c in self.checks if not c.bonus)

    @property
    def bonus_points(self) -> float:
        return sum(c.points for c in self.checks if c.bonus)


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
    return with_course_device(assignment, root)


def with_course_device(assignment: Assignment, root: Path) -> Assignment:
    """An assignment that names no ``measure.device`` takes the course's: ``course.yaml`` of the course
    repository its folder belongs to (``root``'s parent), else ``cpu``. Resolved here, once, so the
    grading, the publisher (which pending checks it accepts) and the gradebook all read one device."""
    if assignment.measure.device is not None:
        return assignment
    from grader.config.course import COURSE_FILE, load_course

    course_file = root.resolve().parent / COURSE_FILE
    device = load_course(course_file).measure.device if course_file.is_file() else "cpu"
    measure = assignment.measure.model_copy(update={"device": device})
    resolved = assignment.model_copy(update={"measure": measure, "checks": [c.model_copy() for c in assignment.checks]})
    resolved.mark_gpu_checks()
    return resolved


def list_assignment_ids(root: Path | None = None) -> list[str]:
    root = root or assignments_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / ASSIGNMENT_FILE).is_file())
