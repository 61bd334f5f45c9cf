"""Turn untrusted JSON (a result.json file, a PR comment's block, a workflow artifact) into a Result.

Whatever its source, a result is hostile input until it passes the schema and a few plausibility
checks the schema cannot express: names the reports and tables can show safely, a score within
its maximum, a real commit SHA. What fails is reported with the reason, never stored.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from grader.contracts.result import Result

MAX_RESULT_BYTES = 8 * 1024 * 1024
TEAM = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
ASSIGNMENT = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
SHA = re.compile(r"^[0-9a-f]{40}$")
REPOSITORY = re.compile(r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$")


class InvalidResult(ValueError):
    """Why a piece of JSON was not accepted as a result."""


@dataclass
class Rejection:
    source: str
    reason: str


@dataclass
class Batch:
    """Results accepted from some source, and what was refused and why."""

    results: list[tuple[Result, str]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def parse_result(data: str | bytes | dict[str, Any]) -> Result:
    """Validate JSON against the result schema and the store's plausibility rules."""
    try:
        result = Result.model_validate(data) if isinstance(data, dict) else Result.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InvalidResult(
            f"not a valid result ({exc.error_count()} error(s); first at {where}: {first['msg']})"
        ) from None
    check_plausible(result)
    return result


def check_plausible(result: Result) -> None:
    if not TEAM.match(result.submission.team) or len(result.submission.team) > 39:
        raise InvalidResult(f"team name {result.submission.team[:60]!r} is not a valid team name")
    if not ASSIGNMENT.match(result.assignment.id):
        raise InvalidResult(f"assignment id {result.assignment.id[:80]!r} is not a valid assignment id")
    if not all(math.isfinite(v) for v in (result.score, result.max_score)):
        raise InvalidResult("score or max_score is not a finite number")
    if not 0 <= result.score <= result.max_score:
        raise InvalidResult(f"score {result.score:g} is outside 0..{result.max_score:g}")
    ctx = result.context
    if ctx.head_sha is not None and not SHA.match(ctx.head_sha):
        raise InvalidResult("context.head_sha is not a 40-digit lowercase hex commit SHA")
    if ctx.repository is not None and not REPOSITORY.match(ctx.repository):
        raise InvalidResult("context.repository is not OWNER/NAME")
    if ctx.pr_number is not None and ctx.pr_number <= 0:
        raise InvalidResult("context.pr_number is not a positive number")
    if ctx.event_time is not None and ctx.event_time.tzinfo is None:
        raise InvalidResult("context.event_time has no time zone")
    if ctx.run_url is not None and not ctx.run_url.startswith("https://"):
        raise InvalidResult("context.run_url is not an https URL")


def read_result_file(path: Path) -> Result:
    if path.is_symlink() or not path.is_file():
        raise InvalidResult("not a regular file")
    if path.stat().st_size > MAX_RESULT_BYTES:
        raise InvalidResult(f"larger than {MAX_RESULT_BYTES // (1024 * 1024)} MiB")
    return parse_result(path.read_bytes())


def result_files(paths: list[Path]) -> list[Path]:
    """Files named on the command line, and every result.json below each folder named."""
    found: list[Path] = []
    for path in paths:
        found.extend(sorted(path.rglob("result.json")) if path.is_dir() else [path])
    return found


def read_results(paths: list[Path]) -> Batch:
    batch = Batch()
    for path in result_files(paths):
        try:
            batch.results.append((read_result_file(path), f"file:{path}"))
        except (InvalidResult, OSError) as exc:
            batch.rejected.append(Rejection(str(path), str(exc)))
    return batch
