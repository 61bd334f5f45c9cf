"""The gradebook in the terminal (rich): the students x assignments table and a team's runs."""

from __future__ import annotations

import pandas as pd
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Table

from grader.gradebook.table import Gradebook
from grader.report.escape import visible


def escape(text: str) -> str:
    """Roster and run text for the terminal: no rich markup, no bidi or invisible characters."""
    return rich_escape(visible(text))


def _text(value: object) -> str:
    return visible(value) if isinstance(value, str) else ""


def _num(value: object) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:g}"


def print_gradebook(book: Gradebook, console: Console | None = None, limit: int | None = None) -> None:
    """Students x assignments + total; a flagged cell shows its marks underneath."""
    console = console or Console(highlight=False)
    table = Table(
        title=f"gradebook · {len(book.students)} students · {len(book.items)} course items",
        caption=f"from {book.provenance}" if book.provenance else None,
    )
    for column in ("student", "team"):
        table.add_column(column, overflow="fold")
    for item in book.items:
        table.add_column(f"{item}\n/{book.item_max(item):g}", justify="right", overflow="fold")
    table.add_column("total", justify="right")
    rows = list(zip(book.students.to_dict("records"), book.flags.to_dict("records")))
    for student, flags in rows[:limit]:
        cells = [escape(student["name"] or student["github"]), escape(student["team"])]
        for a in book.items:
            text = _num(student[a])
            if flags[a]:
                text += f"\n[yellow]{escape(flags[a])}[/]"
            cells.append(text)
        cells.append(f"[bold]{_num(student['total'])}[/]")
        table.add_row(*cells)
    console.print(table)
    if limit is not None and len(rows) > limit:
        console.print(f"... {len(rows) - limit} more students in the written files")
    for warning in book.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")


def print_team_runs(book: Gradebook, team: str, assignment: str | None = None, console: Console | None = None) -> None:
    """Every stored run of a team: the counted one marked, superseded ones dimmed, PR links."""
    console = console or Console(highlight=False)
    runs = book.runs[book.runs["team"] == team]
    if assignment:
        runs = runs[runs["assignment"] == assignment]
    table = Table(title=f"runs of {escape(team)}")
    for column in ("", "assignment", "event time (UTC)", "commit", "status", "score", "late", "final", "PR"):
        table.add_column(column, overflow="fold")
    for r in runs.to_dict("records"):
        mark = "[green]✔ counted[/]" if r["counted"] else ("[dim]replaced[/]" if not r["current"] else "")
        late = (
            "past cutoff"
            if r["past_cutoff"]
            else (f"{r['days_late']}d -{r['points_lost']:g}" if r["days_late"] else "")
        )
        when = r["when"].strftime("%Y-%m-%d %H:%M:%S") + (" (graded time)" if r["time_source"] == "graded" else "")
        table.add_row(
            mark,
            escape(r["assignment"]),
            when,
            _text(r["head_sha"])[:10],
            r["status"],
            _num(r["score"]),
            late,
            _num(r["final"]),
            escape(_text(r["pr_url"])),
            style="dim" if not r["current"] else None,
        )
    console.print(table)
    grades = book.grades[book.grades["team"] == team]
    for g in grades.to_dict("records"):
        if assignment and g["assignment"] != assignment:
            continue
        note = f" ({escape(g['flags'])})" if g["flags"] else ""
        console.print(f"{escape(g['assignment'])}: [bold]{_num(g['score'])}[/]{note}")


def print_regrade_changes(outcomes: list, console: Console | None = None) -> None:
    """Old score -> new score for every regraded run that changed, then a one-line summary."""
    console = console or Console(highlight=False)
    table = Table(title="regrade: what would change")
    for column in ("run", "team", "assignment", "commit", "old", "new", "change"):
        table.add_column(column, overflow="fold")
    unchanged = failed = 0
    for outcome in outcomes:
        task, result = outcome.task, outcome.result
        old = f"{task.old_score:g} ({task.old_status})"
        if result is None:
            failed += 1
            table.add_row(
                str(task.run_id),
                escape(task.team),
                escape(task.assignment),
                task.head_sha[:10],
                old,
                "[red]not regraded[/]",
                escape(outcome.problem),
            )
            continue
        if result.status == "error":
            failed += 1
            table.add_row(
                str(task.run_id),
                escape(task.team),
                escape(task.assignment),
                task.head_sha[:10],
                old,
                "[magenta]grader error[/]",
                "not stored",
            )
            continue
        if result.score == task.old_score and result.status == task.old_status:
            unchanged += 1
            continue
        delta = result.score - task.old_score
        colour = "green" if delta > 0 else ("red" if delta < 0 else "yellow")
        table.add_row(
            str(task.run_id),
            escape(task.team),
            escape(task.assignment),
            task.head_sha[:10],
            old,
            f"{result.score:g} ({result.status})",
            f"[{colour}]{old} → {result.score:g} ({delta:+g})[/]",
        )
    if table.row_count:
        console.print(table)
    console.print(
        f"{len(outcomes)} submission(s): {table.row_count - failed} changed, {unchanged} unchanged, "
        f"{failed} not regraded"
    )
