"""The regrade tasks file: the work of a ``workflow_dispatch`` regrade, one shard per matrix job.

Staff write it with ``grader regrade --tasks FILE --shards N`` and commit it; the workflow's plan
job validates it (``grader ci regrade-plan``) and every runner reads its shard from it. It is
read strictly all the same: the names become paths (``submissions/<team>/<assignment>``), the
SHAs become git arguments and the results must match the tasks they claim to be. Standard
library and pydantic only (no pandas, no torch), so the workflow's light jobs can import it.

Format::

    {"matrix": {"shard": [0, 1, ...]},
     "tasks": [{"run_id": 12, "team": "team-alpha", "assignment": "hw2-...", "head_sha": "<40 hex>",
                "repository": "OWNER/NAME" | null, "pr_number": 7 | null,
                "event_time": "2026-12-11T21:59:00.000000Z" | null, "old_status": "graded",
                "old_score": 40.0, "shard": 0}, ...]}
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from grader.contracts.result import Result, RunContext
from grader.records.ingest import ASSIGNMENT, REPOSITORY, SHA, TEAM, Batch, Rejection

MAX_SHARDS = 256  # GitHub runs at most 256 jobs per matrix
MAX_TASKS_BYTES = 32 * 1024 * 1024


class TasksFileError(ValueError):
    """Why a tasks file (or a result claiming to be one of its tasks) was refused."""


@dataclass(frozen=True)
class Task:
    """One stored grading to redo; everything a runner needs, nothing from the store."""

    run_id: int
    team: str
    assignment: str
    head_sha: str
    repository: str | None
    pr_number: int | None
    event_time: str | None
    old_status: str
    old_score: float

    def context(self) -> RunContext:
        return RunContext(
            repository=self.repository, pr_number=self.pr_number, head_sha=self.head_sha, event_time=self.event_time
        )


class _TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    run_id: int = Field(ge=1)
    team: str = Field(max_length=39, pattern=TEAM.pattern)
    assignment: str = Field(pattern=ASSIGNMENT.pattern)
    head_sha: str = Field(pattern=SHA.pattern)
    repository: str | None = Field(pattern=REPOSITORY.pattern)
    pr_number: int | None = Field(ge=1)
    event_time: str | None = Field(max_length=40)
    old_status: Literal["graded", "rejected", "error"]
    old_score: float
    shard: int = Field(ge=0, lt=MAX_SHARDS)

    @field_validator("event_time")
    @classmethod
    def _aware_time(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("not an ISO 8601 time") from None
            if moment.tzinfo is None:
                raise ValueError("has no time zone")
        return value

    @field_validator("old_score")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("is not a finite number")
        return value

    def task(self) -> Task:
        return Task(**self.model_dump(exclude={"shard"}))


class _Matrix(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    shard: list[int] = Field(min_length=1, max_length=MAX_SHARDS)


class _TasksFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    matrix: _Matrix
    tasks: list[_TaskEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> _TasksFile:
        shards = self.matrix.shard
        if shards != list(range(len(shards))):
            raise ValueError(f"matrix.shard must be 0..{len(shards) - 1} in order")
        outside = sorted({t.shard for t in self.tasks} - set(shards))
        if outside:
            raise ValueError(f"tasks name shard(s) {outside[:5]} that the matrix does not have")
        idle = sorted(set(shards) - {t.shard for t in self.tasks})
        if idle:
            raise ValueError(f"matrix shard(s) {idle[:5]} have no task (their jobs would do nothing)")
        twice = sorted(run for run, n in Counter(t.run_id for t in self.tasks).items() if n > 1)
        if twice:
            raise ValueError(f"run_id {twice[:5]} appear(s) more than once (results are filed by run_id)")
        return self


@dataclass(frozen=True)
class Plan:
    """A validated tasks file."""

    shards: list[int]
    tasks: list[tuple[int, Task]]  # (shard, task)

    @property
    def matrix(self) -> dict:
        return {"shard": list(self.shards)}

    def shard(self, number: int) -> list[Task]:
        if number not in self.shards:
            raise TasksFileError(f"shard {number} is not in the matrix (0..{len(self.shards) - 1})")
        return [task for shard, task in self.tasks if shard == number]

    def by_run_id(self) -> dict[int, Task]:
        return {task.run_id: task for _, task in self.tasks}


def parse_tasks(text: str | bytes) -> Plan:
    """Validate a tasks file's JSON; ``TasksFileError`` says what is wrong and where."""
    try:
        data = _TasksFile.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise TasksFileError(
            f"not a valid tasks file ({exc.error_count()} error(s); first at {where}: {first['msg']})"
        ) from None
    return Plan(shards=data.matrix.shard, tasks=[(t.shard, t.task()) for t in data.tasks])


def read_tasks(path: Path) -> Plan:
    if path.is_symlink() or not path.is_file():
        raise TasksFileError(f"{path} is not a regular file")
    if path.stat().st_size > MAX_TASKS_BYTES:
        raise TasksFileError(f"{path} is larger than {MAX_TASKS_BYTES // (1024 * 1024)} MiB")
    return parse_tasks(path.read_bytes())


def shard_tasks(path: Path, shard: int) -> list[Task]:
    return read_tasks(path).shard(shard)


def tasks_file(tasks: list[Task], shards: int, path: Path) -> dict:
    """Write ``{"matrix": {"shard": [...]}, "tasks": [...]}``: the matrix for ``strategy.matrix``
    and the work, each task tagged with its shard (round-robin, so shards stay even). What is
    written is validated first, as the workflow will validate it."""
    shards = max(1, min(shards, len(tasks), MAX_SHARDS))
    data = {
        "matrix": {"shard": list(range(shards))},
        "tasks": [{**asdict(task), "shard": i % shards} for i, task in enumerate(tasks)],
    }
    text = json.dumps(data, indent=1) + "\n"
    parse_tasks(text)
    path.parent.mkdir(parents=True, exist_ok=True)  # e.g. regrade/tasks.json in a fresh branch
    path.write_text(text, encoding="utf-8")
    return data


def _utc(moment: datetime | None) -> datetime | None:
    return moment.astimezone(timezone.utc) if moment else None


def task_key(task: Task) -> tuple:
    when = _utc(datetime.fromisoformat(task.event_time)) if task.event_time else None
    return (task.team, task.assignment, task.head_sha, task.pr_number, task.repository, when)


def result_key(result: Result) -> tuple:
    ctx = result.context
    return (
        result.submission.team,
        result.assignment.id,
        ctx.head_sha,
        ctx.pr_number,
        ctx.repository,
        _utc(ctx.event_time),
    )


def keep_task_results(batch: Batch, plan: Plan) -> Batch:
    """Only results that are the grading of one task of the regrade: same team, assignment, commit,
    PR, repository and event time (a forged event time would change lateness), one result per task.
    Results from the runners are hostile input: a runner that ran student code could write any
    well-formed result.json; this confines it to the gradings it was asked for."""
    tasks = {task_key(task): task for _, task in plan.tasks}
    claims = Counter(result_key(result) for result, _ in batch.results)
    kept = Batch(rejected=list(batch.rejected))
    for result, source in batch.results:
        key = result_key(result)
        task = tasks.get(key)
        if task is None:
            reason = (
                "is not the grading of any task in the tasks file (team, assignment, commit, PR, "
                "repository and event time must all match one)"
            )
            kept.rejected.append(Rejection(source.removeprefix("file:"), reason))
        elif claims[key] > 1:
            reason = f"{claims[key]} results claim task {task.run_id} ({task.team}, {task.assignment}); none is stored"
            kept.rejected.append(Rejection(source.removeprefix("file:"), reason))
        else:
            kept.results.append((result, source))
    return kept
