"""``submission.yaml``: what the student hands in, validated before anything is opened.

Everything here is student-controlled, so the schema is strict (unknown keys are errors, so a
typo is caught rather than ignored), bounded (no megabyte notes), and every error names the field
and says how to fix it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import ConfigDict, Field, StringConstraints, ValidationError, field_validator

from grader.contracts.base import AssignmentId, GitHubLogin, Strict, TeamName
from grader.contracts.problem import Problem
from grader.errors import SubmissionError

MANIFEST_NAME = "submission.yaml"
MAX_MANIFEST_BYTES = 64 * 1024

RelPath = Annotated[str, StringConstraints(min_length=1, max_length=255)]
ClaimValue = bool | int | float | Annotated[str, StringConstraints(max_length=200)]


class ModelRef(Strict):
    """A model file; ``architecture`` names a course architecture for weights-only formats."""

    path: RelPath
    architecture: Annotated[str, StringConstraints(max_length=64)] | None = None


class DataRef(Strict):
    inputs: RelPath | None = None
    search_log: RelPath | None = None  # hw5: an Optuna SQLite study, or its trials as CSV / JSON


class ServiceRef(Strict):
    """How to start the team's service (service-track assignments); a list, never a shell line."""

    command: list[Annotated[str, StringConstraints(min_length=1, max_length=512)]] = Field(min_length=1, max_length=32)


class Submission(Strict):
    schema_: int = Field(alias="schema")
    assignment: AssignmentId
    team: TeamName
    members: list[GitHubLogin] = Field(min_length=1, max_length=20)
    models: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")], ModelRef] = {}
    service: ServiceRef | None = None
    data: DataRef = DataRef()
    claims: dict[Annotated[str, StringConstraints(max_length=64)], ClaimValue] = Field({}, max_length=50)
    reported: dict[Annotated[str, StringConstraints(max_length=64)], ClaimValue] = Field({}, max_length=50)
    notes: Annotated[str, StringConstraints(max_length=2000)] = ""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("schema_")
    @classmethod
    def _known_schema(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only schema: 1 exists")
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _shorthand_paths(cls, value: Any) -> Any:
        """``baseline: model.onnx`` is shorthand for ``baseline: {path: model.onnx}``."""
        if isinstance(value, dict):
            return {k: ({"path": v} if isinstance(v, str) else v) for k, v in value.items()}
        return value


FIELD_HINTS = {
    "team": "use lowercase letters, digits and single '-' (e.g. team-alpha), at most 39 characters",
    "members": "list your GitHub logins, e.g. members: [octocat]",
    "assignment": "use the assignment's folder name, e.g. hw2-quantization-pruning",
    "models": "map each model role to a file in this folder, e.g. candidate: compressed.onnx",
    "schema": "write schema: 1 as the first line",
}


# keys that are fields one level down: written at the top, they were meant to be indented under it
BELONGS_UNDER = {
    **{role: "models" for role in ("baseline", "candidate", "teacher", "student", "source", "onnx", "reference")},
    **{key: "data" for key in ("inputs", "search_log")},
    **{key: "claims" for key in ("quantization", "sparsity", "clusters", "trial", "study", "objectives", "tensorrt")},
    **{key: "reported" for key in ("size_mb", "params", "latency_ms", "accuracy")},
}
MISNAMED = ("submission.yml", "Submission.yaml", "submission.yaml.txt", "submission.json", "SUBMISSION.yaml")


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    """Turn one pydantic error into (field, message) a student can act on."""
    loc = ["schema" if part == "schema_" else str(part) for part in error["loc"]] or ["schema"]
    field = ".".join(loc)
    if error["type"] == "extra_forbidden":
        parent = BELONGS_UNDER.get(loc[-1]) if len(loc) == 1 else None
        where = f"'{loc[-1]}' belongs under '{parent}:' (indent it there)" if parent else "check its spelling"
        message = f"unknown field '{field}' ({where}; see the assignment README for the fields)"
    elif error["type"] == "missing":
        message = f"missing required field '{field}'"
    else:
        message = f"field '{field}': {error['msg']}"
    hint = FIELD_HINTS.get(loc[0], "")
    return field, f"{message}; {hint}" if hint else message


def _has_aliases(text: str) -> bool:
    """Anchors and aliases let 64 KiB of YAML stand for billions of values (and cost as much to validate)."""
    try:
        return any(isinstance(token, (yaml.AliasToken, yaml.AnchorToken)) for token in yaml.scan(text))
    except (yaml.YAMLError, RecursionError):
        return False  # the parse below reports it


def parse_manifest(text: str) -> Submission:
    """Parse and validate manifest text; raises ``SubmissionError`` naming every bad field."""
    if _has_aliases(text):
        raise SubmissionError(
            f"{MANIFEST_NAME} uses YAML anchors or aliases (& or *).",
            "Write every value out; a manifest needs no references.",
            kind="manifest",
        )
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise SubmissionError(
            f"{MANIFEST_NAME} is nested too deeply to be a manifest.",
            "See the example in the assignment README: a few levels of fields are all it needs.",
            kind="manifest",
        ) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. an integer past Python's digit limit
        raise SubmissionError(
            f"{MANIFEST_NAME} holds a value YAML cannot read ({' '.join(str(exc).split())[:200]}).",
            "Write numbers and text as in the example in the assignment README.",
            kind="manifest",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SubmissionError(
            f"{MANIFEST_NAME} is not valid YAML{where}.",
            "Check indentation and quoting; see the example in the assignment README.",
            kind="manifest",
        ) from None
    if not isinstance(data, dict):
        raise SubmissionError(
            f"{MANIFEST_NAME} must be a mapping of fields (schema, assignment, team, ...).",
            "See the example in the assignment README.",
            kind="manifest",
        )
    try:
        return Submission.model_validate(data)
    except RecursionError:
        raise SubmissionError(
            f"{MANIFEST_NAME} is nested too deeply to be a manifest.",
            "See the example in the assignment README.",
            kind="manifest",
        ) from None
    except ValidationError as exc:
        problems = [
            Problem(kind="manifest", field=field, message=message) for field, message in map(_describe, exc.errors())
        ]
        raise SubmissionError.of(problems) from None


def load_manifest(submission_dir: Path) -> Submission:
    """Read ``submission.yaml`` from a submission folder, refusing oversized or linked files."""
    path = Path(submission_dir) / MANIFEST_NAME
    if path.is_symlink():
        raise SubmissionError(f"{MANIFEST_NAME} is a symbolic link.", "Commit it as a regular file.", "manifest")
    if not path.is_file():
        misnamed = next((name for name in MISNAMED if (Path(submission_dir) / name).is_file()), None)
        if misnamed:
            raise SubmissionError(
                f"no {MANIFEST_NAME} in {submission_dir}, but there is '{misnamed}'.",
                f"Rename it: git mv {misnamed} {MANIFEST_NAME} (the grader reads that one name only).",
                kind="manifest",
            )
        raise SubmissionError(
            f"no {MANIFEST_NAME} in {submission_dir}.",
            "Add one; the assignment README has a template.",
            kind="manifest",
        )
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise SubmissionError(f"{MANIFEST_NAME} is larger than 64 KiB.", "Keep notes short.", "manifest")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SubmissionError(f"{MANIFEST_NAME} is not UTF-8 text.", "Save it as UTF-8.", "manifest") from None
    return parse_manifest(text)
