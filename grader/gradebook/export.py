"""Writing the gradebook: CSV for the LMS, Markdown, an Excel workbook, a self-contained HTML page.

Team names, PR data and roster fields end up in cells and pages that staff open, so: Markdown
goes through the reports' escaping, HTML through Jinja's autoescape, and every spreadsheet text
cell that a program would read as a formula (=, +, -, @, tab, CR) is prefixed with a quote.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from grader import __version__
from grader.config.assignment import Assignment
from grader.gradebook.leaderboard import leaderboard
from grader.gradebook.table import Gradebook
from grader.report.escape import md, visible, visible_html

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
IDENTITY = ["student_id", "name", "github", "email", "team"]
FORMATS = ("csv", "md", "xlsx", "html")
RUN_EXPORT_COLUMNS = [
    "team",
    "assignment",
    "id",
    "status",
    "score",
    "days_late",
    "points_lost",
    "final",
    "counted",
    "current",
    "past_cutoff",
    "when",
    "time_source",
    "deadline",
    "head_sha",
    "pr_url",
    "run_url",
    "source",
]


def safe_cell(value: object) -> object:
    """A text cell that cannot run as a spreadsheet formula (CSV / formula injection)."""
    if isinstance(value, str):
        value = visible(value)
        return "'" + value if value.startswith(FORMULA_START) else value
    return value


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in frame.columns:
        if pd.api.types.is_datetime64_any_dtype(frame[column]):
            frame[column] = frame[column].dt.strftime("%Y-%m-%d %H:%M:%S UTC")
        elif not pd.api.types.is_numeric_dtype(frame[column]):  # object or pandas' string dtype
            frame[column] = frame[column].map(safe_cell)
    return frame


def lms_frame(book: Gradebook) -> pd.DataFrame:
    """The LMS table: identity, one numeric column per assignment, total, then one flags column each."""
    flags = book.flags.rename(columns={a: f"{a}_flags" for a in book.items}).drop(columns=["github"])
    return pd.concat([book.students, flags], axis=1)


def leaderboard_frame(book: Gradebook, assignment: Assignment) -> pd.DataFrame:
    """A leaderboard with its figures named by their metric, ready to publish."""
    spec = assignment.leaderboard
    return leaderboard(book, assignment).rename(columns={"x": spec.x.metric, "y": spec.y.metric})


def write_csv(book: Gradebook, path: Path) -> Path:
    """The LMS table; next to it every run (``runs.csv``, for pivoting) and each leaderboard."""
    spreadsheet_safe(lms_frame(book)).to_csv(path, index=False, float_format="%g")
    spreadsheet_safe(book.runs[RUN_EXPORT_COLUMNS]).to_csv(path.with_name("runs.csv"), index=False, float_format="%g")
    for assignment in book.assignments:
        if assignment.leaderboard is not None:
            spreadsheet_safe(leaderboard_frame(book, assignment)).to_csv(
                path.with_name(f"leaderboard-{assignment.id}.csv"), index=False
            )
    return path


def cell_text(score: object, flags: str) -> str:
    text = "—" if pd.isna(score) else f"{score:g}"
    return f"{text} ({flags})" if flags and flags != "missing" else text


def write_markdown(book: Gradebook, path: Path) -> Path:
    ids = book.items
    header = ["student", "student id", "team", *ids, "total"]
    lines = [
        "# Gradebook",
        "",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC by compression-grader "
        f"{__version__}. In brackets: why a grade is not simply the run's score.",
        "",
        f"From {md(book.provenance)}." if book.provenance else "",
        "",
    ]
    lines += ["| " + " | ".join(md(h) for h in header) + " |", "|" + "---|" * len(header)]
    for (_, student), (_, marks) in zip(book.students.iterrows(), book.flags.iterrows()):
        cells = [student["name"] or student["github"], student["student_id"], student["team"]]
        cells += [cell_text(student[a], marks[a]) for a in ids]
        cells.append("—" if pd.isna(student["total"]) else f"{student['total']:g}")
        lines.append("| " + " | ".join(md(c) for c in cells) + " |")
    if book.warnings:
        lines += ["", "## Warnings", ""] + [f"- {md(w)}" for w in book.warnings]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# The teams sheet: one final figure per team and assignment ("grade"), then how it came about.
TEAM_SHEET = {
    "team": "team",
    "assignment": "assignment",
    "score": "grade",
    "flags": "why not simply the run's score",
    "raw_score": "counted run's score",
    "points_lost": "late penalty",
    "override_points": "override",
    "override_reason": "override reason",
    "days_late": "days late",
    "when": "event time (UTC)",
    "deadline": "deadline (UTC)",
    "extension_due": "extension until (UTC)",
    "status": "status",
    "run_id": "run id",
    "pr_url": "PR",
    "runs": "runs",
    "error_runs": "error runs",
    "late_runs_ignored": "runs past the cutoff",
}


def team_sheet(grades: pd.DataFrame) -> pd.DataFrame:
    """``grades`` with one figure to read (``grade``: the override where there is one, else the run's
    score after the late penalty), and no second, competing total."""
    return grades[list(TEAM_SHEET)].rename(columns=TEAM_SHEET)


def write_excel(book: Gradebook, path: Path) -> Path:
    """Students, team grades (with the counted run) and leaderboards. Every run is in runs.csv and
    the HTML page instead: openpyxl needs ~15 s for a class's 28,000 runs."""
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        spreadsheet_safe(lms_frame(book)).to_excel(writer, sheet_name="students", index=False)
        spreadsheet_safe(team_sheet(book.grades)).to_excel(writer, sheet_name="teams", index=False)
        for assignment in book.assignments:
            if assignment.leaderboard is not None:
                spreadsheet_safe(leaderboard_frame(book, assignment)).to_excel(
                    writer, sheet_name=f"lb {assignment.id}"[:31], index=False
                )
    return path


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("grader.gradebook", "templates"),
        autoescape=select_autoescape(["j2"]),
        finalize=visible_html,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v: "—" if v is None or pd.isna(v) else f"{v:g}"
    return env


def policy_lines(book: Gradebook) -> list[dict[str, str]]:
    rows = []
    for a in book.assignments:
        p = a.policy
        late = p.late
        rule = (
            (
                f"-{late.per_day:.0%} of the {'score' if late.basis == 'score' else 'maximum'} per started day, "
                f"at most -{late.cap:.0%}"
            )
            if late.per_day
            else "no penalty"
        )
        if late.grace_minutes:
            rule += f", {late.grace_minutes:g} min grace"
        if late.cutoff_days:
            rule += f", nothing counts after {late.cutoff_days:g} days"
        deadline = f"{p.deadline:%Y-%m-%d %H:%M %Z} ({p.deadline_utc():%Y-%m-%d %H:%M} UTC)" if p.deadline else "none"
        rows.append(
            {
                "id": a.id,
                "title": a.title,
                "max": f"{a.max_score:g}",
                "deadline": deadline,
                "late": rule,
                "counts": "best score after penalties" if p.counts == "best" else "last run",
            }
        )
    return rows


def _numbers(values: pd.Series) -> pd.Series:
    return values.map(lambda v: "—" if pd.isna(v) else f"{v:g}")


def run_rows(runs: pd.DataFrame) -> dict[str, list[dict]]:
    """Every run as display-ready text per team, formatted column-wise (tens of thousands of rows)."""

    def text(column: str) -> pd.Series:
        return runs[column].where(runs[column].map(lambda v: isinstance(v, str)), "")

    late = ("-" + _numbers(runs["points_lost"])).where(runs["days_late"] > 0, "")
    late = (runs["days_late"].astype(str) + "d, " + late).where(runs["days_late"] > 0, "")
    view = pd.DataFrame(
        {
            "team": runs["team"],
            "assignment": runs["assignment"],
            "when": runs["when"].dt.strftime("%Y-%m-%d %H:%M:%S"),
            "graded_time": runs["time_source"] == "graded",
            "commit": text("head_sha").str[:10],
            "status": runs["status"],
            "score": _numbers(runs["score"]),
            "late": late.where(~runs["past_cutoff"].astype(bool), "past cutoff"),
            "final": _numbers(runs["final"]),
            "pr_url": text("pr_url"),
            "pr": runs["pr_number"].map(lambda n: "" if pd.isna(n) else f"#{int(n)}"),
            "run_url": text("run_url"),
            "css": np.where(runs["counted"], "counted", np.where(runs["current"], "", "superseded")),
        }
    )
    grouped: dict[str, list[dict]] = {}
    for row in view.sort_values(["team"], kind="stable").to_dict("records"):
        grouped.setdefault(row["team"], []).append(row)
    return grouped


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows for a template, pandas' missing values (NaN, NA) as None."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def write_html(book: Gradebook, path: Path) -> Path:
    from grader.gradebook.plots import all_plots

    team_runs = run_rows(book.runs)
    boards = [(a, records(leaderboard(book, a))) for a in book.assignments if a.leaderboard is not None]
    students = [(s, f) for s, f in zip(book.students.to_dict("records"), book.flags.to_dict("records"))]
    html = (
        _environment()
        .get_template("gradebook.html.j2")
        .render(
            book=book,
            students=students,
            plots=all_plots(book),
            policies=policy_lines(book),
            team_runs=team_runs,
            boards=boards,
            generated=datetime.now(timezone.utc),
            version=__version__,
            isna=pd.isna,
        )
    )
    path.write_text(html, encoding="utf-8")
    return path


WRITERS = {
    "csv": ("grades.csv", write_csv),
    "md": ("grades.md", write_markdown),
    "xlsx": ("grades.xlsx", write_excel),
    "html": ("gradebook.html", write_html),
}


def write_all(book: Gradebook, out_dir: Path, formats: tuple[str, ...] = FORMATS) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return {fmt: WRITERS[fmt][1](book, out_dir / WRITERS[fmt][0]) for fmt in formats}
