"""The results store: schema version and migrations, idempotent import, hostile result files."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import pytest

from grader.contracts.result import Result
from grader.errors import ConfigError
from grader.records import store as store_module
from grader.records.ingest import InvalidResult, parse_result, read_results
from grader.records.store import SCHEMA_VERSION, Store
from grader.report import machine
from tests.results_builders import make_result


def write(path: Path, result: Result) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(result.to_json())
    return path


def test_new_store_is_at_the_current_schema_version(tmp_path: Path) -> None:
    with Store(tmp_path / "g.sqlite") as store:
        assert store.version == SCHEMA_VERSION >= 1
        tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"runs", "overrides", "extensions"} <= tables
    with Store(tmp_path / "g.sqlite") as again:  # reopening migrates nothing and loses nothing
        assert again.version == SCHEMA_VERSION


def test_migrations_run_in_order_from_an_older_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file made by release N is brought to release N+1 by the appended migration, data kept."""
    path = tmp_path / "g.sqlite"
    with Store(path) as store:
        store.add_runs([(make_result(), "test")])
    later = store_module.MIGRATIONS + ["ALTER TABLE runs ADD COLUMN reviewed INTEGER NOT NULL DEFAULT 0"]
    monkeypatch.setattr(store_module, "MIGRATIONS", later)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", len(later))
    with Store(path) as store:
        assert store.version == len(later)
        assert store.conn.execute("SELECT COUNT(*), MAX(reviewed) FROM runs").fetchone()[:] == (1, 0)


def test_a_failed_migration_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "g.sqlite"
    Store(path).close()
    broken = store_module.MIGRATIONS + ["CREATE TABLE extra (x); ALTER TABLE nowhere ADD COLUMN y"]
    monkeypatch.setattr(store_module, "MIGRATIONS", broken)
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", len(broken))
    with pytest.raises(ConfigError, match="migration to schema version"):
        Store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(broken) - 1
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'extra'").fetchone()[0] == 0


def test_a_store_from_a_newer_grader_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer than this grader"):
        Store(path)


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.sqlite"
    path.write_text("name,score\nalpha,3\n" * 100)
    with pytest.raises(ConfigError, match="not a results store"):
        Store(path)


def test_importing_the_same_run_twice_keeps_one_row(tmp_path: Path) -> None:
    first = write(tmp_path / "a" / "result.json", make_result(score=70))
    write(tmp_path / "copy" / "result.json", Result.load(first))
    with Store(tmp_path / "g.sqlite") as store:
        report = store.add_runs(read_results([tmp_path / "a"]).results)
        assert (report.added, report.duplicates) == (1, 0)
        report = store.add_runs(read_results([tmp_path]).results)  # the file again and a copy of it
        assert (report.added, report.duplicates) == (0, 2)
        assert len(store.runs_frame()) == 1


def test_the_comment_copy_and_the_file_are_the_same_run(tmp_path: Path) -> None:
    """A PR comment carries the result without evidence; collecting it after importing the file
    must not add a second row."""
    result = make_result()
    result.checks[0].evidence = {"tensors": list(range(50))}
    compact = parse_result(machine.decode(machine.encode(result)))
    with Store(tmp_path / "g.sqlite") as store:
        assert store.add_runs([(result, "file")]).added == 1
        assert store.add_runs([(compact, "comment")]).duplicates == 1


def test_each_grading_is_its_own_run(tmp_path: Path) -> None:
    event = datetime(2026, 12, 10, 12, 0, tzinfo=timezone.utc)
    runs = [
        make_result(event_time=event, graded_at=datetime(2026, 12, 10, 12, m, tzinfo=timezone.utc)) for m in (1, 30)
    ]
    with Store(tmp_path / "g.sqlite") as store:
        assert store.add_runs([(r, "file") for r in runs]).added == 2


def test_stored_columns_and_the_whole_result(tmp_path: Path) -> None:
    result = make_result(score=64.5, metrics={"candidate.accuracy": 0.97})
    with Store(tmp_path / "g.sqlite") as store:
        store.add_runs([(result, "file:x")])
        row = store.runs_frame(with_metrics=True).iloc[0]
        assert (row["team"], row["assignment"], row["status"], row["score"], row["max_score"]) == (
            "team-alpha",
            "hw2-quantization-pruning",
            "graded",
            64.5,
            100.0,
        )
        assert row["head_sha"] == result.context.head_sha and row["pr_number"] == 7
        assert row["event_time"] == "2026-12-10T12:00:00.000000Z" and row["grader_version"] == "0.1.0"
        assert json.loads(row["metrics_json"]) == {"candidate.accuracy": 0.97}
        assert store.results([int(row["id"])])[int(row["id"])] == result


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d.update(score=150), "outside 0..100"),
        (lambda d: d.update(score=float("nan")), "finite"),
        (lambda d: d["submission"].update(team="Team Alpha<script>"), "not a valid team name"),
        (lambda d: d["assignment"].update(id="../../etc"), "not a valid assignment id"),
        (lambda d: d["context"].update(head_sha="HEAD~1; rm -rf /"), "head_sha"),
        (lambda d: d["context"].update(run_url="javascript:alert(1)"), "https"),
        (lambda d: d["context"].update(repository="a/b/c"), "OWNER/NAME"),
        (lambda d: d.update(surprise=1), "not a valid result"),
        (lambda d: d.update(status="excellent"), "not a valid result"),
    ],
)
def test_hostile_results_are_rejected_with_a_reason(mutate, reason: str) -> None:
    data = json.loads(make_result().to_json())
    mutate(data)
    with pytest.raises(InvalidResult, match=reason):
        parse_result(json.dumps(data, allow_nan=True))


def test_import_keeps_the_good_files_and_names_the_bad(tmp_path: Path) -> None:
    write(tmp_path / "good" / "result.json", make_result())
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "result.json").write_text("{not json")
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "result.json").write_bytes(b" " * (8 * 1024 * 1024 + 1))
    batch = read_results([tmp_path])
    assert len(batch.results) == 1
    assert sorted(Path(r.source).parent.name for r in batch.rejected) == ["bad", "big"]
    assert any("larger than" in r.reason for r in batch.rejected)


def test_overrides_and_extensions_latest_wins(tmp_path: Path) -> None:
    with Store(tmp_path / "g.sqlite") as store:
        store.add_override("team-alpha", "hw2", 50, "first look", "ta")
        store.add_override("team-alpha", "hw2", 65, "after appeal", "prof")
        store.add_override("team-beta", "hw2", 80, "typo", "ta")
        store.add_override("team-beta", "hw2", None, "cleared", "ta")
        store.add_extension("team-alpha", "hw2", datetime(2026, 12, 14, 23, 59, tzinfo=timezone.utc), "ill", "prof")
        overrides = store.overrides_frame().set_index("team")
        assert overrides.loc["team-alpha", "points"] == 65 and overrides.loc["team-alpha", "author"] == "prof"
        assert overrides.loc["team-beta", "points"] != overrides.loc["team-beta", "points"]  # NaN: cleared
        assert store.extensions_frame().iloc[0]["due"] == "2026-12-14T23:59:00.000000Z"
