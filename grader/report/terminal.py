"""Terminal output with rich: the summary a student reads after ``grader check``."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from grader.config.assignment import Assignment
from grader.contracts.result import CheckStatus, Result
from grader.report.escape import visible
from grader.report.render import fmt

STYLE = {
    CheckStatus.PASS: "green",
    CheckStatus.PARTIAL: "yellow",
    CheckStatus.FAIL: "red",
    CheckStatus.SKIPPED: "dim",
    CheckStatus.ERROR: "magenta",
}
KEY_FIGURES = ("size_ratio", "speedup_b1", "speedup_b64", "top1_agreement", "accuracy_drop_pts", "effective_sparsity")


def key_figures(result: Result) -> list[tuple[str, object]]:
    """The figures this assignment's checks judged (named in their evidence), else the common ratios."""
    judged = [k for c in result.checks for k in c.evidence if k in result.metrics]
    names = list(dict.fromkeys(judged)) or [k for k in result.metrics if k.partition(".")[2] in KEY_FIGURES]
    return [(k, result.metrics[k]) for k in names]


def print_summary(result: Result, paths: dict[str, Path], console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    title = f"{result.assignment.id} · team {result.submission.team} · {result.status}"
    table = Table(title=title, show_lines=False)
    for column in ("check", "status", "points"):
        table.add_column(column, no_wrap=True)
    table.add_column("message", overflow="fold")
    for check in result.checks:
        status = "[cyan]pending[/]" if check.pending else f"[{STYLE[check.status]}]{check.status.value}[/]"
        points = f"–/{check.max_points:g}" if check.pending else f"{check.points:g}/{check.max_points:g}"
        table.add_row(check.id + (" (bonus)" if check.bonus else ""), status, points, _escape(check.message))
    console.print(table)
    for problem in result.problems:
        console.print(f"[red]problem[/] ({problem.kind}): {_escape(problem.message)} {_escape(problem.hint)}")
    for flag in result.flags:
        console.print(f"[yellow]flagged for staff[/]: {_escape(flag)}")
    figures = key_figures(result)
    if figures:
        console.print("  ".join(f"{k}: [bold]{fmt(v)}[/]" for k, v in figures))
    extras = []
    if result.bonus_points:
        extras.append(f"including {result.bonus_points:g} bonus")
    if result.pending_points:
        extras.append(f"{result.pending_points:g} pending: need hardware this machine lacks")
    extra = f" ({'; '.join(extras)})" if extras else ""
    console.print(f"score [bold]{result.score:g} / {result.max_score:g}[/]{extra} in {result.duration_s:.1f} s")
    console.print("wrote " + ", ".join(str(p) for p in paths.values()))


def _escape(text: str) -> str:
    """Student text for the terminal: no rich markup, no bidi or invisible characters."""
    from rich.markup import escape

    return escape(visible(text))


def print_assignments(assignments: list[Assignment], console: Console | None = None) -> None:
    console = console or Console(highlight=False)
    table = Table(title="assignments")
    table.add_column("id", no_wrap=True)
    for column in ("title", "models", "checks (points)", "max"):
        table.add_column(column, overflow="fold")
    for a in assignments:
        checks = ", ".join(f"{c.id} ({c.points:g}{' bonus' if c.bonus else ''})" for c in a.checks)
        table.add_row(a.id, a.title, ", ".join(a.models), checks, f"{a.max_score:g}")
    console.print(table)
