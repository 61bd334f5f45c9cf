"""The results store: one SQLite file holding every graded run, overrides and extensions.

Standard-library ``sqlite3`` rather than SQLAlchemy: the store is one embedded file with three
tables and a handful of queries, pandas reads an ``sqlite3`` connection directly, and migrations
are a numbered list of SQL scripts keyed by SQLite's own ``PRAGMA user_version`` — no ORM or
Alembic needed. Every write is a transaction; importing the same run twice keeps one row
(``run_key`` is unique).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from grader.contracts.result import Result
from grader.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_DB = Path("grader-data") / "grades.sqlite"

# MIGRATIONS[i] takes a database from schema version i to i + 1. Append, never edit.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE runs (
        id                 INTEGER PRIMARY KEY,
        run_key            TEXT NOT NULL UNIQUE,
        team               TEXT NOT NULL,
        assignment         TEXT NOT NULL,
        assignment_version INTEGER NOT NULL,
        repository         TEXT,
        pr_number          INTEGER,
        head_sha           TEXT,
        event_time         TEXT,              -- the push / PR event, from GitHub (UTC)
        graded_at          TEXT NOT NULL,     -- when the grader started (UTC)
        status             TEXT NOT NULL CHECK (status IN ('graded', 'rejected', 'error')),
        score              REAL NOT NULL,
        max_score          REAL NOT NULL,
        grader_version     TEXT NOT NULL,
        run_url            TEXT,
        source             TEXT NOT NULL,     -- file, comment or artifact it came from
        imported_at        TEXT NOT NULL,
        metrics_json       TEXT NOT NULL,     -- flat {figure: value}, for plots and leaderboards
        result_json        TEXT NOT NULL      -- the whole result, last so light queries skip it
    );
    CREATE INDEX runs_by_team_assignment ON runs (team, assignment);
    CREATE TABLE overrides (
        id          INTEGER PRIMARY KEY,
        team        TEXT NOT NULL,
        assignment  TEXT NOT NULL,
        points      REAL,                     -- NULL clears an earlier override
        reason      TEXT NOT NULL,
        author      TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE extensions (
        id          INTEGER PRIMARY KEY,
        team        TEXT NOT NULL,
        assignment  TEXT NOT NULL,
        due         TEXT NOT NULL,            -- the team's own deadline (UTC)
        reason      TEXT NOT NULL,
        author      TEXT NOT NULL,
        created_at  TEXT NOT NULL
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

RUN_COLUMNS = (
    "id",
    "team",
    "assignment",
    "assignment_version",
    "repository",
    "pr_number",
    "head_sha",
    "event_time",
    "graded_at",
    "status",
    "score",
    "max_score",
    "grader_version",
    "run_url",
    "source",
)


def utc_text(moment: datetime) -> str:
    """A fixed-width UTC time that sorts as text (naive times are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_text() -> str:
    return utc_text(datetime.now(timezone.utc))


def run_key(result: Result) -> str:
    """One grading's identity: team, assignment, commit and grading start. Not the evidence, so the
    compact copy in a PR comment and the full result.json are the same run; not the repository or
    PR, which a collector may fill in from where it found the result."""
    parts = [result.submission.team, result.assignment.id, result.context.head_sha or "", utc_text(result.started_at)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def flat_metrics(result: Result) -> dict[str, float]:
    return {name: est.value for name, est in result.metrics.items() if est.value is not None}


@dataclass
class AddReport:
    added: int = 0
    duplicates: int = 0


def default_db_path() -> Path:
    return Path(os.environ.get("GRADER_DB") or DEFAULT_DB)


class Store:
    """A connection to the store, migrated to the current schema on open."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), isolation_level=None)  # explicit BEGIN / COMMIT below
        self.conn.row_factory = sqlite3.Row
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise ConfigError(f"{self.path} is not a results store ({exc})") from exc
        self.migrate()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        """Apply the migrations this file has not seen; refuse a file from a newer grader."""
        current = self.version
        if current > SCHEMA_VERSION:
            raise ConfigError(
                f"{self.path} has schema version {current}, newer than this grader's "
                f"{SCHEMA_VERSION}: upgrade compression-grader"
            )
        for target in range(current + 1, SCHEMA_VERSION + 1):
            try:
                self.conn.executescript(f"BEGIN; {MIGRATIONS[target - 1]}; PRAGMA user_version = {target}; COMMIT;")
            except sqlite3.Error as exc:
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise ConfigError(f"{self.path}: migration to schema version {target} failed: {exc}") from exc

    # runs ------------------------------------------------------------------------------------

    def add_runs(self, items: Iterable[tuple[Result, str]]) -> AddReport:
        """Insert (result, source) pairs in one transaction; a run already stored is kept as it was."""
        report = AddReport()
        imported_at = now_text()
        rows = []
        for result, source in items:
            ctx = result.context
            rows.append(
                (
                    run_key(result),
                    result.submission.team,
                    result.assignment.id,
                    result.assignment.version,
                    ctx.repository,
                    ctx.pr_number,
                    ctx.head_sha,
                    utc_text(ctx.event_time) if ctx.event_time else None,
                    utc_text(result.started_at),
                    result.status,
                    result.score,
                    result.max_score,
                    result.grader.version,
                    ctx.run_url,
                    source,
                    imported_at,
                    json.dumps(flat_metrics(result)),
                    result.to_json(),
                )
            )
        with self.transaction():
            for row in rows:
                cursor = self.conn.execute(
                    "INSERT OR IGNORE INTO runs (run_key, team, assignment, assignment_version, repository, "
                    "pr_number, head_sha, event_time, graded_at, status, score, max_score, grader_version, "
                    "run_url, source, imported_at, metrics_json, result_json) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                if cursor.rowcount:
                    report.added += 1
                else:
                    report.duplicates += 1
        return report

    def runs_frame(self, with_metrics: bool = False) -> pd.DataFrame:
        """Every run's light columns (not the result JSON), one row per run."""
        import pandas as pd

        columns = ", ".join(RUN_COLUMNS + (("metrics_json",) if with_metrics else ()))
        return pd.read_sql_query(f"SELECT {columns} FROM runs ORDER BY id", self.conn)

    def metrics(self, run_ids: Iterable[int]) -> dict[int, str]:
        """The flat figures (JSON text) of these runs: only what leaderboards need, not every run's."""
        return dict(self._by_id("metrics_json", run_ids))

    def results(self, run_ids: Iterable[int]) -> dict[int, Result]:
        """The stored results of these runs, parsed again with the schema."""
        return {run_id: Result.model_validate_json(text) for run_id, text in self._by_id("result_json", run_ids)}

    def _by_id(self, column: str, run_ids: Iterable[int]) -> Iterable[tuple[int, str]]:
        wanted = [int(i) for i in run_ids]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            yield from self.conn.execute(f"SELECT id, {column} FROM runs WHERE id IN ({marks})", chunk)

    # overrides and extensions ----------------------------------------------------------------

    def add_override(self, team: str, assignment: str, points: float | None, reason: str, author: str) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO overrides (team, assignment, points, reason, author, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (team, assignment, points, reason, author, now_text()),
            )

    def add_extension(self, team: str, assignment: str, due: datetime, reason: str, author: str) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT INTO extensions (team, assignment, due, reason, author, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (team, assignment, utc_text(due), reason, author, now_text()),
            )

    def overrides_frame(self) -> pd.DataFrame:
        """The latest override per team and assignment (a cleared one has no points)."""
        return self._latest("overrides", "points, reason, author, created_at")

    def extensions_frame(self) -> pd.DataFrame:
        return self._latest("extensions", "due, reason, author, created_at")

    def _latest(self, table: str, columns: str) -> pd.DataFrame:
        import pandas as pd

        query = (
            f"SELECT team, assignment, {columns} FROM {table} WHERE id IN "
            f"(SELECT MAX(id) FROM {table} GROUP BY team, assignment) ORDER BY team, assignment"
        )
        return pd.read_sql_query(query, self.conn)

    def transaction(self) -> _Transaction:
        return _Transaction(self.conn)


class _Transaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
