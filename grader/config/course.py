"""``course.yaml``: course-wide settings that are not about one assignment, today where untrusted code runs
(the ``runner:`` key, which ``grader check --runner`` overrides).

Like ``assignment.yaml`` and ``roster.yaml`` it is staff-written and read from the base branch
(never from a PR), so a typo is a ``ConfigError`` that fails loudly, not a silent default. A
missing file means the defaults: the local child-process sandbox.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from grader.config.paths import REPO_ROOT
from grader.contracts.base import Strict
from grader.errors import ConfigError

COURSE_FILE = "course.yaml"
NOBODY = "65534:65534"


# a GPU index (YAML reads ``[0, 1]`` as numbers) or a UUID such as GPU-8f5c... (MIG-... for a MIG
# slice); never a word such as ``all``, which the NVIDIA toolkit would read as every GPU
GpuId = Annotated[
    str,
    BeforeValidator(lambda v: str(v) if isinstance(v, int) else v),
    StringConstraints(pattern=r"^([0-9]{1,4}|(GPU|MIG)-[A-Za-z0-9-]{1,60})$"),
]
NO_ALL_GPUS = (
    "gpus: all is no longer offered: one grading gets exactly one GPU, so that gradings never time "
    "on a shared chip; use auto (a free one of this machine's) or a list such as [0, 1] to pin the choice"
)


class DockerSettings(Strict):
    """How the Docker sandbox starts the worker's container.

    The security settings (no network, read-only root, no capabilities, no new privileges) are
    not knobs: only sizes, the image, the GPUs and the unprivileged user can be chosen.
    """

    image: str = Field("", description="the grading image, pinned by digest in CI (name@sha256:...)")
    gpus: Literal["auto", "none"] | list[GpuId] = Field(
        "auto",
        description="the one GPU each grading that wants a GPU gets, leased so no other grading on this "
        "machine times on it; auto: a free one of this machine's where the engine can pass one through, "
        "else CPU only; a list of GPU indices / UUIDs: the first free one of those; none: CPU only",
    )
    cpus: float = Field(2.0, gt=0, description="CPU limit in cores (CFS quota)")
    cpuset: str | None = Field(None, pattern=r"^[0-9,-]+$", description="pin to these host CPUs, e.g. '2-3'")
    pids: int = Field(256, ge=16, description="most processes and threads the container may hold")
    user: str = Field(NOBODY, pattern=r"^[0-9]+:[0-9]+$", description="uid:gid; never 0")
    scratch_mb: int = Field(256, ge=16, description="size of the tmpfs at /tmp (counts against memory)")
    pull: bool = Field(True, description="pull the image when the engine does not have it")
    readonly_mounts: list[str] = Field(
        [], description="host paths bind-mounted read-only at the same path into model workers (e.g. staff data)"
    )
    service_mounts: list[str] = Field(
        [],
        description="host paths bind-mounted read-only into service-track "
        "containers; none by default: a team's service runs its own "
        "code and must not see staff data",
    )

    @field_validator("gpus", mode="before")
    @classmethod
    def _never_all(cls, value: object) -> object:
        if value == "all" or (isinstance(value, list) and "all" in value):
            raise ValueError(NO_ALL_GPUS)
        return value

    @field_validator("user")
    @classmethod
    def _not_root(cls, value: str) -> str:
        if any(part == "0" for part in value.split(":")):
            raise ValueError("the worker must not run as root (uid or gid 0)")
        return value

    @field_validator("readonly_mounts", "service_mounts")
    @classmethod
    def _absolute(cls, value: list[str]) -> list[str]:
        relative = [path for path in value if not os.path.isabs(path)]
        if relative:
            raise ValueError(f"readonly_mounts must be absolute host paths: {relative}")
        return value


class RunnerConfig(Strict):
    kind: Literal["local", "docker"] = "local"
    docker: DockerSettings = DockerSettings()


class CourseMeasure(Strict):
    """Course-wide measurement defaults; an assignment's own ``measure:`` overrides them."""

    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu",
        description="where assignments that do not name a device run and time their models: cpu, cuda (a "
        "machine without one leaves those figures pending) or auto (cuda where there is one)",
    )


class Course(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal[1] = Field(1, alias="schema")
    runner: RunnerConfig = RunnerConfig()
    measure: CourseMeasure = CourseMeasure()
    ends: AwareDatetime | None = Field(
        None,
        description="when the course ends (ISO 8601 with a UTC offset, e.g. 2027-02-15T23:59:00+01:00): an "
        "assignment without a deadline is "
        "'missing' in the gradebook only after this, and never before",
    )


def default_course_path() -> Path:
    """``$GRADER_COURSE``, else ``course.yaml`` at the root of the checkout the grader runs from."""
    env = os.environ.get("GRADER_COURSE")
    return Path(env) if env else REPO_ROOT / COURSE_FILE


def load_course(path: Path | None = None) -> Course:
    """The course settings; an explicitly named file must exist, the default one may be absent."""
    explicit = path is not None or "GRADER_COURSE" in os.environ
    path = Path(path) if path is not None else default_course_path()
    if not path.is_file():
        if explicit:
            raise ConfigError(f"{path}: no such course file")
        return Course()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        return Course.model_validate(data if data is not None else {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
