"""A compression search's trial log (hw5), read as hostile data.

Three forms are accepted: an Optuna study in SQLite, or Optuna's own ``study.trials_dataframe()``
exported with ``to_csv`` or ``to_json(orient="records")``. The log is the student's file, so it
is read inside the sandboxed worker, bounded (trials, objectives, parameters, name and string
lengths, SQLite work) and validated with pydantic before anything uses it.

The SQLite file is opened through the standard library, never through Optuna: ``mode=ro`` and
``immutable=1`` in the URI mean nothing is written, no journal is replayed and no lock is taken,
``trusted_schema`` is off so the file's own views and triggers cannot call functions, and a
progress handler stops any query that runs too long. Optuna itself would open the storage
read-write through SQLAlchemy and alembic to check (and possibly migrate) its schema, and would
be a heavy dependency for reading five documented tables.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import ValidationError

from grader.contracts.searchlog import (
    MAX_OBJECTIVES,
    MAX_PARAMS,
    MAX_TRIALS,
    ParamValue,
    SearchLog,
    SearchLogObservation,
    Trial,
    TrialState,
)

MAX_COLUMNS = 512
MAX_SQLITE_STEPS = 50_000_000  # VM instructions; a legitimate 10,000-trial study needs a fraction
SQLITE_PROGRESS_EVERY = 10_000


class SearchLogError(Exception):
    """The log cannot be read; the message says what to fix."""


def read_search_log(path: Path, fmt: str, study: str | None = None) -> SearchLog:
    """Read and validate a log already vetted by ``grader.intake.artifacts`` as ``fmt``."""
    readers = {
        "sqlite": lambda: _read_sqlite(path, study),
        "csv": lambda: _read_csv(path),
        "json": lambda: _read_json(path),
    }
    if fmt not in readers:
        raise SearchLogError(f"unknown search log format '{fmt}'")
    try:
        return readers[fmt]()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SearchLogError(f"the search log does not fit the expected shape at '{where}': {first['msg']}") from None
    except RecursionError:
        raise SearchLogError("the search log is nested too deeply to be a trial table") from None


def observe_search_log(path: Path, fmt: str, study: str | None = None) -> SearchLogObservation:
    try:
        return SearchLogObservation(log=read_search_log(path, fmt, study))
    except SearchLogError as exc:
        return SearchLogObservation(error=str(exc)[:2000])


# --------------------------------------------------------------------------- Optuna SQLite


def _connect_readonly(path: Path) -> sqlite3.Connection:
    uri = f"file:{quote(str(path.resolve()))}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True)
    conn.execute("PRAGMA trusted_schema = OFF")
    conn.execute("PRAGMA query_only = ON")
    steps = [0]

    def budget() -> int:
        steps[0] += SQLITE_PROGRESS_EVERY
        return 1 if steps[0] > MAX_SQLITE_STEPS else 0

    conn.set_progress_handler(budget, SQLITE_PROGRESS_EVERY)
    return conn


def _read_sqlite(path: Path, study: str | None) -> SearchLog:
    try:
        conn = _connect_readonly(path)
    except sqlite3.Error as exc:
        raise SearchLogError(f"the SQLite file cannot be opened: {exc}") from None
    try:
        return _read_optuna_tables(conn, study)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) or "no such column" in str(exc):
            raise SearchLogError(
                f"this SQLite file is not an Optuna (>= 3.0) study ({exc}); save the study with "
                "storage='sqlite:///study.db', or export study.trials_dataframe() to CSV"
            ) from None
        raise SearchLogError(f"the SQLite file cannot be read: {exc}") from None
    except sqlite3.Error as exc:
        raise SearchLogError(f"the SQLite file cannot be read: {exc}") from None
    finally:
        conn.close()


def _pick_study(conn: sqlite3.Connection, study: str | None) -> tuple[int, str]:
    rows = conn.execute("SELECT study_id, study_name FROM studies ORDER BY study_id LIMIT 101").fetchall()
    if study is not None:
        match = [r for r in rows if r[1] == study]
        if not match:
            raise SearchLogError(f"the SQLite file has no study named '{study[:64]}'; it has: {_names(rows)}")
        return int(match[0][0]), str(match[0][1])
    if len(rows) != 1:
        raise SearchLogError(
            f"the SQLite file holds {len(rows)} studies ({_names(rows)}); say which one "
            "with claims: {study: <name>} in submission.yaml"
            if rows
            else "the SQLite file holds no study"
        )
    return int(rows[0][0]), str(rows[0][1])


def _names(rows: list[tuple[Any, ...]]) -> str:
    return ", ".join(str(r[1])[:64] for r in rows[:10]) + (" ..." if len(rows) > 10 else "")


def _read_optuna_tables(conn: sqlite3.Connection, study: str | None) -> SearchLog:
    study_id, study_name = _pick_study(conn, study)
    directions = conn.execute(
        "SELECT objective, direction FROM study_directions WHERE study_id = ? ORDER BY objective LIMIT ?",
        (study_id, MAX_OBJECTIVES + 1),
    ).fetchall()
    if len(directions) > MAX_OBJECTIVES:
        raise SearchLogError(f"the study has more than {MAX_OBJECTIVES} objectives")
    names_row = conn.execute(
        "SELECT value_json FROM study_system_attributes WHERE study_id = ? AND key = 'study:metric_names'", (study_id,)
    ).fetchone()
    names = _metric_names(names_row[0] if names_row else None, len(directions))
    trials = conn.execute(
        "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials WHERE study_id = ? "
        "ORDER BY number LIMIT ?",
        (study_id, MAX_TRIALS + 1),
    ).fetchall()
    if len(trials) > MAX_TRIALS:
        raise SearchLogError(f"the study has more than {MAX_TRIALS:,} trials; submit a log of at most that many")
    values: dict[int, list[float | None]] = {int(t[0]): [None] * len(directions) for t in trials}
    for trial_id, objective, value, value_type in conn.execute(
        "SELECT v.trial_id, v.objective, v.value, v.value_type FROM trial_values v JOIN trials t "
        "ON v.trial_id = t.trial_id WHERE t.study_id = ?",
        (study_id,),
    ):
        if trial_id in values and isinstance(objective, int) and 0 <= objective < len(directions):
            values[trial_id][objective] = _finite(value) if value_type == "FINITE" else None
    params: dict[int, dict[str, ParamValue]] = {int(t[0]): {} for t in trials}
    for trial_id, name, value, distribution in conn.execute(
        "SELECT p.trial_id, p.param_name, p.param_value, p.distribution_json FROM trial_params p JOIN trials t "
        "ON p.trial_id = t.trial_id WHERE t.study_id = ?",
        (study_id,),
    ):
        if trial_id in params and len(params[trial_id]) < MAX_PARAMS:
            params[trial_id][str(name)[:64]] = _decode_param(value, distribution)
    return SearchLog(
        source="optuna-sqlite",
        study=study_name[:512],
        objectives=names,
        directions=[str(d).lower() if str(d).lower() in ("maximize", "minimize") else None for _, d in directions],
        trials=[
            Trial(
                number=int(number),
                state=_state(state),
                values=values[int(tid)],
                params=params[int(tid)],
                duration_s=_duration(start, complete, None),
            )
            for tid, number, state, start, complete in trials
        ],
    )


def _metric_names(value_json: str | None, count: int) -> list[str]:
    try:
        names = json.loads(value_json) if value_json else None
    except ValueError:
        names = None
    if isinstance(names, list) and len(names) == count and all(isinstance(n, str) for n in names):
        return [n[:64] for n in names]
    return [""] * count


def _decode_param(value: Any, distribution: Any) -> ParamValue:
    """Optuna stores categorical choices as an index into ``distribution_json``'s choices."""
    try:
        spec = json.loads(distribution) if isinstance(distribution, str) and len(distribution) < 100_000 else {}
    except ValueError:
        spec = {}
    kind = spec.get("name") if isinstance(spec, dict) else None
    attributes = spec.get("attributes", {}) if isinstance(spec, dict) else {}
    if kind == "CategoricalDistribution" and isinstance(attributes, dict):
        choices = attributes.get("choices")
        if isinstance(choices, list) and isinstance(value, (int, float)) and 0 <= int(value) < len(choices):
            return _scalar(choices[int(value)])
    if kind == "IntDistribution" and isinstance(value, (int, float)) and math.isfinite(value):
        return int(value)
    return _scalar(value)


def _state(value: Any) -> TrialState:
    text = str(value).upper()
    if text not in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING"):
        raise SearchLogError(f"unknown trial state '{text[:20]}'")
    return text  # type: ignore[return-value]


# --------------------------------------------------------------------------- CSV / JSON exports


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SearchLogError("the search log is not UTF-8 text") from None


def _read_csv(path: Path) -> SearchLog:
    try:
        reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
        header = reader.fieldnames or []
        if len(header) > MAX_COLUMNS:
            raise SearchLogError(f"the CSV has more than {MAX_COLUMNS} columns")
        rows = []
        for row in reader:
            if len(rows) >= MAX_TRIALS:
                raise SearchLogError(f"the log has more than {MAX_TRIALS:,} trials; submit at most that many")
            rows.append(row)
    except csv.Error as exc:
        raise SearchLogError(f"the CSV cannot be parsed: {exc}") from None
    return _from_records(rows, list(header), "csv")


def _read_json(path: Path) -> SearchLog:
    try:
        data = json.loads(_read_text(path))
    except ValueError as exc:
        raise SearchLogError(f"the JSON cannot be parsed: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("trials"), list):
        data = data["trials"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise SearchLogError(
            "the JSON must be a list of trial records, as study.trials_dataframe().to_json(orient='records') writes it"
        )
    if len(data) > MAX_TRIALS:
        raise SearchLogError(f"the log has more than {MAX_TRIALS:,} trials; submit at most that many")
    header: list[str] = []
    for record in data:
        header.extend(k for k in record if isinstance(k, str) and k not in header)
        if len(header) > MAX_COLUMNS:
            raise SearchLogError(f"the JSON records have more than {MAX_COLUMNS} distinct keys")
    return _from_records(data, header, "json")


def _objective_columns(header: list[str]) -> list[tuple[str, str]]:
    """(column, objective name) in column order: ``values_<name>``, ``values_<i>`` or ``value``."""
    columns = [(c, c.removeprefix("values_")) for c in header if c.startswith("values_")]
    if not columns and "value" in header:
        columns = [("value", "")]
    if not columns:
        raise SearchLogError(
            "the log has no objective columns: expected 'values_<name>' per objective "
            "(study.set_metric_names([...]) before study.trials_dataframe())"
        )
    if len(columns) > MAX_OBJECTIVES:
        raise SearchLogError(f"the log has more than {MAX_OBJECTIVES} objectives")
    return [(c, "" if n.isdigit() else n[:64]) for c, n in columns]


def _from_records(rows: list[dict[str, Any]], header: list[str], source: Literal["csv", "json"]) -> SearchLog:
    for needed in ("number", "state"):
        if needed not in header:
            raise SearchLogError(f"the log has no '{needed}' column (export it with study.trials_dataframe())")
    objectives = _objective_columns(header)
    param_columns = [c for c in header if c.startswith("params_")][:MAX_PARAMS]
    trials = []
    for index, row in enumerate(rows):
        number = _integer(row.get("number"))
        if number is None:
            raise SearchLogError(f"row {index + 1}: 'number' is not an integer")
        trials.append(
            Trial(
                number=number,
                state=_state(row.get("state")),
                values=[_finite(_number(row.get(c))) for c, _ in objectives],
                params={c.removeprefix("params_")[:64]: _scalar(row.get(c)) for c in param_columns},
                duration_s=_duration(row.get("datetime_start"), row.get("datetime_complete"), row.get("duration")),
            )
        )
    return SearchLog(
        source=source, objectives=[n for _, n in objectives], directions=[None] * len(objectives), trials=trials
    )


TIMEDELTA = re.compile(r"^(-?\d{1,9}) days? (\d{1,2}):(\d{2}):(\d{2}(?:\.\d{1,9})?)$")


def _duration(start: Any, complete: Any, duration: Any) -> float | None:
    """Seconds from start to completion, from the two timestamps where the log has both (SQLite
    text, pandas' CSV text, or epoch milliseconds in ``to_json``), else from a ``duration``
    column (pandas' ``0 days 00:00:01.5`` text, or milliseconds in JSON). None: no times."""
    began, ended = _instant(start), _instant(complete)
    if began is not None and ended is not None:
        return ended - began
    if isinstance(duration, (int, float)) and not isinstance(duration, bool) and math.isfinite(duration):
        return float(duration) / 1000  # to_json writes a timedelta as milliseconds
    match = TIMEDELTA.match(str(duration).strip()[:64]) if isinstance(duration, str) else None
    if match is None:
        return None
    days, hours, minutes, seconds = match.groups()
    return int(days) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _instant(value: Any) -> float | None:
    """A timestamp as seconds: ISO text (``2026-12-01 14:28:10.633000``) or epoch milliseconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) / 1000 if math.isfinite(value) else None
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        return None
    try:
        return datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _finite(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and math.isfinite(number) else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and math.isfinite(number) and number == int(number) else None


def _scalar(value: Any) -> ParamValue:
    """A parameter value as a bounded scalar: numbers stay numbers, anything else a short string."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    text = str(value)[:200]
    if text == "":
        return None
    number = _number(text)
    if number is not None and math.isfinite(number):
        return int(number) if text.lstrip("-").isdigit() else number
    return text
