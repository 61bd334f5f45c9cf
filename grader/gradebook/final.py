"""The final project's leaderboard: each team's best gated entry, ranked by the score formula.

Entries come from the results store. An entry counts only if every gate check passed (the
accuracy gate, as MLPerf does) and the leaderboard's ``ranked_if`` checks (the service track's
correct answers); a team with no such entry is listed but not ranked. Ties go to
the earlier submission, by GitHub's event time. The course reference (score of an entry equal to
it) and staff teams are shown as baseline rows and never ranked. The public view leaves out
held-out figures, members and links; the private view is for instructors.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from grader.config.assignment import Assignment
from grader.config.roster import Roster
from grader.contracts.figures import SCORE_FIGURE
from grader.contracts.result import CheckStatus, Result
from grader.gradebook.leaderboard import pareto_front
from grader.records.store import Store
from grader.report.escape import md, visible_html

VIEWS = ("public", "private")


@dataclass
class Entry:
    team: str
    score: float | None
    gated: bool
    event_time: datetime | None
    figures: dict[str, float | None] = field(default_factory=dict)
    pr_number: int | None = None
    run_url: str | None = None
    members: list[str] = field(default_factory=list)
    rank: int | None = None
    baseline: bool = False
    run_id: int | None = None


def entry_of(result: Result, assignment: Assignment) -> Entry:
    gate_ids = assignment.ranking_checks()  # the base branch's definition, not the result's
    statuses = {c.id: c.status for c in result.checks}
    passed = result.status == "graded" and all(statuses.get(i) is CheckStatus.PASS for i in gate_ids)
    wanted = [SCORE_FIGURE]
    if assignment.leaderboard:
        wanted += [assignment.leaderboard.x.metric, assignment.leaderboard.y.metric]
    wanted += [t.metric for t in assignment.score.terms] if assignment.score else []
    figures = {name: (result.metrics[name].value if name in result.metrics else None) for name in dict.fromkeys(wanted)}
    return Entry(
        team=result.submission.team,
        score=figures.get(SCORE_FIGURE),
        gated=passed,
        event_time=result.context.event_time or result.started_at,
        figures=figures,
        pr_number=result.context.pr_number,
        run_url=result.context.run_url,
        members=list(result.submission.members),
    )


def _key(entry: Entry) -> tuple:
    """Better first: gated, higher score, earlier submission."""
    when = entry.event_time.timestamp() if entry.event_time else float("inf")
    return (not entry.gated, -(entry.score if entry.score is not None else float("-inf")), when)


def best_per_team(entries: list[Entry]) -> list[Entry]:
    best: dict[str, Entry] = {}
    for entry in entries:
        if entry.team not in best or _key(entry) < _key(best[entry.team]):
            best[entry.team] = entry
    return list(best.values())


def rank(entries: list[Entry], roster: Roster | None, assignment: Assignment) -> list[Entry]:
    """Ranked gated teams, then unranked teams, then baseline rows (reference, staff).

    The one ranking rule: ``grader leaderboard`` and the gradebook's leaderboard tables both show
    this list. With a roster, a team not on it is left out (its runs are in the gradebook's warnings).
    """
    staff = {name for name, team in (roster.teams.items() if roster else []) if team.staff}
    if roster is not None:
        entries = [e for e in entries if e.team in roster.teams]
    teams = best_per_team(entries)
    for entry in teams:
        entry.baseline = entry.team in staff
    competing = sorted((e for e in teams if not e.baseline), key=_key)
    position = 0
    for entry in competing:
        if entry.gated and entry.score is not None:
            position += 1
            entry.rank = position
    reference = Entry(
        team="(course reference)",
        score=assignment.score.neutral() if assignment.score else None,
        gated=True,
        event_time=None,
        baseline=True,
    )
    return competing + sorted((e for e in teams if e.baseline), key=_key) + [reference]


def board_from_store(store: Store, assignment: Assignment, roster: Roster | None, run_ids: list[int]) -> list[Entry]:
    """The ranked board of the graded runs ``run_ids``: the ones the gradebook lets count
    (``grader.gradebook.load.board_run_ids``: the latest grading of a commit, nothing past the
    cutoff), already read from the store with the gradebook, so only their results are read here."""
    results = store.results(run_ids)
    entries = [replace(entry_of(r, assignment), run_id=run_id) for run_id, r in results.items()]
    return rank(entries, roster, assignment)


def columns(assignment: Assignment, view: str) -> list[tuple[str, str]]:
    """(key, header) pairs; held-out figures only in the private view."""
    cols = [("rank", "rank")] if assignment.score else []
    cols += [("team", "team"), ("score", "score"), ("gate", "gate")]
    for term in assignment.score.terms if assignment.score else []:
        if view == "private" or "heldout" not in term.metric:
            cols.append((term.metric, term.label or term.metric))
    cols.append(("submitted", "submitted (UTC)"))
    if view == "private":
        if assignment.leaderboard and assignment.leaderboard.y.metric not in dict(cols):
            cols.append((assignment.leaderboard.y.metric, assignment.leaderboard.y.label))
        cols += [("members", "members"), ("pr", "PR")]
    return cols


def cell(entry: Entry, key: str) -> str:
    if key == "rank":
        return str(entry.rank) if entry.rank else ("baseline" if entry.baseline else "—")
    if key == "team":
        return entry.team
    if key == "score":
        return "" if entry.score is None else f"{entry.score:.3f}"
    if key == "gate":
        return "pass" if entry.gated else "below gate"
    if key == "submitted":
        return entry.event_time.strftime("%Y-%m-%d %H:%M:%S") if entry.event_time else ""
    if key == "members":
        return " ".join(entry.members)
    if key == "pr":
        return f"#{entry.pr_number}" if entry.pr_number else ""
    value = entry.figures.get(key)
    return "" if value is None else f"{value:.4g}"


def to_markdown(entries: list[Entry], assignment: Assignment, view: str, source: str = "") -> str:
    cols = columns(assignment, view)
    lines = [f"## Leaderboard: {md(assignment.title)}", ""]
    if source and view == "private":
        lines += [f"From {md(source)}.", ""]
    if assignment.score:
        gates = ", ".join(c.title for c in assignment.checks if c.id in assignment.ranking_checks())
        lines += [
            f"Score: {md(assignment.score.describe())}. Ratios are against the course reference measured "
            f"in the same run; an entry is ranked only if it passes: {md(gates)}. Others are listed, "
            "not ranked.",
            "",
        ]
    lines.append("| " + " | ".join(md(h) for _, h in cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for entry in entries:
        lines.append("| " + " | ".join(md(cell(entry, k)) for k, _ in cols) + " |")
    return "\n".join(lines) + "\n"


def to_csv(entries: list[Entry], assignment: Assignment, view: str) -> str:
    cols = columns(assignment, view)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([h for _, h in cols])
    for entry in entries:
        writer.writerow([_no_formula(cell(entry, k)) for k, _ in cols])
    return buffer.getvalue()


def _no_formula(text: str) -> str:
    """A spreadsheet must not read a team's text as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") and not text[1:2].isdigit() else text


def scatter(entries: list[Entry], assignment: Assignment) -> str | None:
    """Accuracy-vs-speed scatter with the Pareto front, as a PNG data URI (None without axes)."""
    spec = assignment.leaderboard
    points = [
        e
        for e in entries
        if spec and e.figures.get(spec.x.metric) is not None and e.figures.get(spec.y.metric) is not None
    ]
    if spec is None or not points:
        return None
    import numpy as np

    from grader.gradebook.plots import _png, _pyplot

    x = np.array([e.figures[spec.x.metric] for e in points], dtype=float)
    y = np.array([e.figures[spec.y.metric] for e in points], dtype=float)
    front = pareto_front(x, y, spec.x.higher_is_better, spec.y.higher_is_better)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.12, top=0.93)
    ax.scatter(x[~front], y[~front], s=16, color="#999999", label="entries")
    order = np.argsort(x[front])
    ax.plot(x[front][order], y[front][order], "o-", color="#c44e52", markersize=5, label="Pareto front")
    for e, xi, yi in zip(points, x, y):
        ax.annotate(e.team, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(spec.x.label)
    ax.set_ylabel(spec.y.label)
    ax.set_title(f"{assignment.id}: best entry per team", fontsize=10)
    ax.legend(fontsize=7)
    return _png(fig)


def to_html(entries: list[Entry], assignment: Assignment, view: str, source: str = "") -> str:
    from jinja2 import Environment, select_autoescape

    template = Environment(autoescape=select_autoescape(default=True), finalize=visible_html).from_string(HTML)
    cols = columns(assignment, view)
    rows = [[cell(e, k) for k, _ in cols] for e in entries]
    plot = scatter(entries, assignment) if view == "private" else None
    gates = ", ".join(c.title for c in assignment.checks if c.id in assignment.ranking_checks())
    return template.render(
        a=assignment,
        headers=[h for _, h in cols],
        rows=rows,
        plot=plot,
        view=view,
        formula=assignment.score.describe() if assignment.score else "",
        gates=gates,
        source=source if view == "private" else "",
    )


HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Leaderboard: {{ a.title }}</title>
<style>body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #ddd;padding:.25rem .4rem;text-align:left}
th{font-size:90%;overflow-wrap:anywhere}td{overflow-wrap:anywhere}
td:nth-child(n+3){font-variant-numeric:tabular-nums}</style></head>
<body><h1>Leaderboard: {{ a.title }} ({{ view }} view)</h1>
{% if formula %}<p>{{ formula }}. Ratios are against the course reference measured in the same run; an entry is ranked
only if it passes: {{ gates }}. Others are listed, not ranked; ties go to the earlier submission.</p>
{% else %}<p>This assignment has no score formula: its entries are listed, not ranked.</p>{% endif %}
{% if source %}<p>From {{ source }}.</p>{% endif %}
<table><tr>{% for h in headers %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% if plot %}<h2>{{ a.leaderboard.y.label }} against {{ a.leaderboard.x.label }}</h2>
<img alt="best entry per team, Pareto front in red" src="{{ plot }}">{% endif %}
</body></html>
"""


def write(entries: list[Entry], assignment: Assignment, view: str, out: Path, source: str = "") -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"leaderboard-{assignment.id}-{view}"
    paths = {"md": out / f"{stem}.md", "csv": out / f"{stem}.csv", "html": out / f"{stem}.html"}
    paths["md"].write_text(to_markdown(entries, assignment, view, source), encoding="utf-8")
    paths["csv"].write_text(to_csv(entries, assignment, view), encoding="utf-8")
    paths["html"].write_text(to_html(entries, assignment, view, source), encoding="utf-8")
    return paths
