"""Deadlines and late rules: parsing assignment.yaml's policy, and lateness at the boundaries."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
import yaml
from pydantic import ValidationError

from grader.config.assignment import load_assignment
from grader.config.policy import LateRule, Policy
from grader.errors import ConfigError
from grader.gradebook.late import assess

NEW_YORK = ZoneInfo("America/New_York")


def late(when: datetime, deadline: datetime, rule: LateRule, score: float = 80.0, max_score: float = 100.0):
    """Apply the rule to one run, through the same vectorised code the gradebook uses."""
    result = assess(
        pd.Series([pd.Timestamp(when).tz_convert("UTC")]),
        pd.Series([pd.Timestamp(deadline).tz_convert("UTC")]),
        pd.Series([score]),
        pd.Series([max_score]),
        rule,
    )
    return int(result.days_late[0]), float(result.points_lost[0]), float(result.final[0]), bool(result.past_cutoff[0])


def test_shipped_hw2_policy_is_valid_and_zone_aware() -> None:
    policy = load_assignment("hw2-quantization-pruning").policy
    assert policy.deadline.utcoffset() == timedelta(hours=1)  # Zurich in December: CET
    assert policy.deadline_utc() == datetime(2026, 12, 11, 22, 59, tzinfo=timezone.utc)
    assert policy.counts == "best" and policy.late.per_day == 0.10


@pytest.mark.parametrize(
    "data, expected_utc",
    [
        ({"deadline": "2026-12-11T23:59:00+01:00"}, datetime(2026, 12, 11, 22, 59, tzinfo=timezone.utc)),
        (
            {"deadline": "2026-12-11 23:59", "timezone": "Europe/Zurich"},
            datetime(2026, 12, 11, 22, 59, tzinfo=timezone.utc),
        ),
        (
            {"deadline": "2026-06-11 23:59", "timezone": "Europe/Zurich"},
            datetime(2026, 6, 11, 21, 59, tzinfo=timezone.utc),
        ),
    ],
)
def test_deadline_forms(data: dict, expected_utc: datetime) -> None:
    assert Policy.model_validate(data).deadline_utc() == expected_utc


def test_yaml_timestamps_work_too() -> None:
    data = yaml.safe_load("deadline: 2026-12-11 23:59:00\ntimezone: Europe/Zurich\n")
    assert Policy.model_validate(data).deadline_utc() == datetime(2026, 12, 11, 22, 59, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"deadline": "2026-12-11 23:59"}, "no UTC offset"),
        ({"deadline": "2026-12-11 23:59", "timezone": "Mars/Olympus"}, "not an IANA zone"),
        ({"deadline": "next friday"}, "not an ISO 8601"),
        ({"deadline": "2026-12-11T23:59:00Z", "counts": "first"}, "counts"),
        ({"late": {"per_day": 2}}, "per_day"),
    ],
)
def test_bad_policies_fail_with_a_reason(data: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Policy.model_validate(data)


def test_bad_policy_in_assignment_yaml_is_a_config_error(tmp_path: Path) -> None:
    source = Path(__file__).resolve().parent.parent / "assignments" / "hw2-quantization-pruning" / "assignment.yaml"
    data = yaml.safe_load(source.read_text())
    data["policy"]["timezone"] = None
    folder = tmp_path / "hw2-quantization-pruning"
    folder.mkdir()
    (folder / "assignment.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="no UTC offset"):
        load_assignment("hw2-quantization-pruning", tmp_path)


DEADLINE = datetime(2026, 12, 11, 23, 59, tzinfo=ZoneInfo("Europe/Zurich"))
RULE = LateRule(per_day=0.1, cap=0.5, cutoff_days=7)


def test_one_second_before_the_deadline_is_on_time() -> None:
    assert late(DEADLINE - timedelta(seconds=1), DEADLINE, RULE) == (0, 0.0, 80.0, False)
    assert late(DEADLINE, DEADLINE, RULE) == (0, 0.0, 80.0, False)


def test_one_second_after_the_deadline_is_one_day_late() -> None:
    assert late(DEADLINE + timedelta(seconds=1), DEADLINE, RULE) == (1, 8.0, 72.0, False)


def test_days_are_started_days_and_the_cap_holds() -> None:
    assert late(DEADLINE + timedelta(days=1), DEADLINE, RULE)[:3] == (1, 8.0, 72.0)
    assert late(DEADLINE + timedelta(days=1, seconds=1), DEADLINE, RULE)[:3] == (2, 16.0, 64.0)
    assert late(DEADLINE + timedelta(days=6, hours=1), DEADLINE, RULE)[:3] == (7, 40.0, 40.0)  # cap: 50%


def test_cutoff_boundary() -> None:
    assert late(DEADLINE + timedelta(days=7), DEADLINE, RULE)[3] is False
    assert late(DEADLINE + timedelta(days=7, seconds=1), DEADLINE, RULE)[3] is True


def test_grace_period() -> None:
    rule = LateRule(per_day=0.1, grace_minutes=5)
    assert late(DEADLINE + timedelta(minutes=5), DEADLINE, rule)[0] == 0
    assert late(DEADLINE + timedelta(minutes=5, seconds=1), DEADLINE, rule)[0] == 1


def test_penalty_of_the_maximum_never_goes_below_zero() -> None:
    rule = LateRule(per_day=0.3, basis="max_score")
    assert late(DEADLINE + timedelta(hours=1), DEADLINE, rule, score=50)[1:3] == (30.0, 20.0)
    assert late(DEADLINE + timedelta(days=2, hours=1), DEADLINE, rule, score=50)[1:3] == (50.0, 0.0)


def test_deadline_across_the_spring_dst_change() -> None:
    """New York springs forward on 2026-03-08 02:00: the deadline in local time is EDT, one second
    either side of it is measured in real time."""
    deadline = Policy.model_validate({"deadline": "2026-03-09 23:59", "timezone": "America/New_York"}).deadline
    assert deadline.astimezone(timezone.utc) == datetime(2026, 3, 10, 3, 59, tzinfo=timezone.utc)  # EDT, -4h
    assert late(datetime(2026, 3, 10, 3, 58, 59, tzinfo=timezone.utc), deadline, RULE)[0] == 0
    assert late(datetime(2026, 3, 10, 3, 59, 1, tzinfo=timezone.utc), deadline, RULE)[0] == 1


def test_a_day_late_is_24_real_hours_across_dst() -> None:
    """Deadline Saturday 12:00 EST; Monday 12:30 EDT is 47.5 real hours later (the clock lost an
    hour), so two started days, not the three a wall-clock difference (48.5 h) would give."""
    deadline = datetime(2026, 3, 7, 12, 0, tzinfo=NEW_YORK)
    monday = datetime(2026, 3, 9, 12, 30, tzinfo=NEW_YORK)
    assert (monday.astimezone(timezone.utc) - deadline.astimezone(timezone.utc)) == timedelta(hours=47, minutes=30)
    assert late(monday, deadline, RULE)[0] == 2
    # in autumn the clock gains an hour: 23:30 local the next day is 24.5 real hours later (two
    # started days), though the wall clock shows 23.5 h; 22:58 local is 23.98 h (one day)
    autumn = datetime(2026, 10, 31, 23, 59, tzinfo=NEW_YORK)
    assert late(datetime(2026, 11, 1, 22, 58, tzinfo=NEW_YORK), autumn, RULE)[0] == 1
    assert late(datetime(2026, 11, 1, 23, 30, tzinfo=NEW_YORK), autumn, RULE)[0] == 2


def test_no_deadline_means_never_late() -> None:
    result = assess(
        pd.Series([pd.Timestamp("2030-01-01", tz="UTC")]),
        pd.Series([pd.NaT], dtype="datetime64[ns, UTC]"),
        pd.Series([80.0]),
        pd.Series([100.0]),
        RULE,
    )
    assert int(result.days_late[0]) == 0 and float(result.final[0]) == 80.0 and not bool(result.past_cutoff[0])
