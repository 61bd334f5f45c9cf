"""An assignment's grading policy: deadline, late rule, which run counts, its leaderboard axes.

It lives in ``assignment.yaml`` on the base branch (so it is versioned with the thresholds and a
student cannot change it). Only the schema is here; ``grader.gradebook.late`` applies it. The
deadline must be unambiguous: either an ISO time with a UTC offset, or a local time plus an IANA
``timezone`` (which is how a course announces it, and which gets daylight saving right).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator

SECONDS_PER_DAY = 86_400


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LateRule(Strict):
    """Points lost per started day late (1 second late is 1 day), up to ``cap``; none after ``cutoff_days``."""

    per_day: float = Field(0.0, ge=0, le=1, description="fraction lost per started day late")
    basis: Literal["score", "max_score"] = Field("score", description="fraction of the run's score or of the maximum")
    cap: float = Field(1.0, ge=0, le=1, description="at most this fraction is lost")
    grace_minutes: float = Field(0.0, ge=0, description="lateness up to this is forgiven (clock skew, queues)")
    cutoff_days: float | None = Field(None, gt=0, description="runs later than this after the deadline do not count")


class Axis(Strict):
    metric: str = Field(description="a key of result.metrics, e.g. candidate.accuracy")
    label: str
    higher_is_better: bool = True


class Leaderboard(Strict):
    """Two figures of the counted run, plotted against each other with their Pareto front."""

    x: Axis
    y: Axis
    ranked_if: list[str] = Field([], description="checks an entry must pass to be ranked, besides the gate checks "
                                                 "(the service track: correct answers)")


class Policy(Strict):
    deadline: datetime | None = None
    timezone: str | None = Field(None, description="IANA zone for a deadline written without a UTC offset")
    late: LateRule = LateRule()
    counts: Literal["best", "last"] = Field(
        "best", description="best: the highest score after late penalties; last: the latest run before the cutoff")

    @model_validator(mode="before")
    @classmethod
    def _localise_deadline(cls, data: Any) -> Any:
        """Turn a local deadline + zone into an aware time; refuse a deadline that is neither."""
        if not isinstance(data, dict) or data.get("deadline") is None:
            return data
        deadline = data["deadline"]
        if isinstance(deadline, str):
            try:
                deadline = datetime.fromisoformat(deadline)
            except ValueError as exc:
                raise ValueError(f"deadline '{deadline}' is not an ISO 8601 time (e.g. 2026-12-11 23:59)") from exc
        if not isinstance(deadline, datetime):
            raise ValueError("deadline must be a date and time, e.g. 2026-12-11 23:59")
        zone_name = data.get("timezone")
        zone = None
        if zone_name is not None:
            try:
                zone = ZoneInfo(str(zone_name))
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"timezone '{zone_name}' is not an IANA zone name (e.g. Europe/Zurich)") from exc
        if deadline.tzinfo is None:
            if zone is None:
                raise ValueError("deadline has no UTC offset: add one (2026-12-11T23:59:00+01:00) or set timezone")
            deadline = deadline.replace(tzinfo=zone)
        return {**data, "deadline": deadline}

    def deadline_utc(self) -> datetime | None:
        return self.deadline.astimezone(timezone.utc) if self.deadline else None
