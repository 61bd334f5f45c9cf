"""The grade table: stored runs + policy + overrides + extensions + roster -> one grade per team
and assignment, then one row per student.

Rules, in order:
1. A commit graded again (a workflow re-run or a regrade: same team, assignment, PR, head SHA and
   event time) replaces its earlier grading, unless the new one is an ``error``; the history stays
   in the store.
2. A run is late by its GitHub event time (the push / PR event), never a commit date. A run with
   no event time (imported from a local ``grader check``) is timed by when it was graded, and
   flagged.
3. ``status: error`` runs (the grader's own faults) never count, for or against anyone.
4. Runs after the cutoff do not count; of the rest, ``best`` counts the highest score after late
   penalties (on-time runs first on ties), ``last`` the latest.
5. An override replaces the points; an extension moves the team's deadline (and its cutoff).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from grader.config.assignment import Assignment
from grader.config.roster import Roster
from grader.gradebook.late import assess

GRADE_COLUMNS = [
    "team",
    "assignment",
    "run_id",
    "status",
    "raw_score",
    "days_late",
    "points_lost",
    "score",
    "final",
    "when",
    "time_source",
    "deadline",
    "pr_url",
    "override_points",
    "override_reason",
    "extension_due",
    "error_runs",
    "late_runs_ignored",
    "runs",
    "flags",
]


@dataclass
class Gradebook:
    assignments: list[Assignment]
    runs: pd.DataFrame  # every stored run with derived columns (current, late, counted ...)
    grades: pd.DataFrame  # one row per team and assignment that has runs, override or extension
    students: pd.DataFrame  # one row per rostered student: identity, one column per assignment, total
    flags: pd.DataFrame  # same rows as students: one flags column per assignment
    warnings: list[str] = field(default_factory=list)
    # assignment id -> its ranked board (grader.gradebook.final.Entry list), for assignments with a
    # score formula: the one ranking every leaderboard table shows (filled by open_gradebook)
    boards: dict[str, list[Any]] = field(default_factory=dict)
    rostered: list[str] = field(default_factory=list)  # the roster's teams
    staff: list[str] = field(default_factory=list)  # the roster's staff teams: baseline rows, never ranked
    provenance: str = ""  # which store, roster and assignments it was built from: every table says so

    @property
    def assignment_ids(self) -> list[str]:
        return [a.id for a in self.assignments]

    @property
    def items(self) -> list[str]:
        """The student table's columns: one per course item (alternatives such as the final project's
        two tracks share one), in the order the assignments come."""
        return list(dict.fromkeys(a.item for a in self.assignments))

    def item_max(self, item: str) -> float:
        return max(a.max_score for a in self.assignments if a.item == item)


def pr_urls(runs: pd.DataFrame, web_url: str) -> pd.Series:
    """The PR page of each run (None where the repository or PR is unknown), built column-wise."""
    known = runs["repository"].notna() & runs["pr_number"].notna()
    numbers = runs["pr_number"].where(known, 0).astype("int64").astype(str)
    urls = web_url.rstrip("/") + "/" + runs["repository"].where(known, "").astype(str) + "/pull/" + numbers
    return urls.astype(object).where(known, None)


def build_gradebook(
    runs: pd.DataFrame,
    assignments: list[Assignment],
    roster: Roster,
    overrides: pd.DataFrame | None = None,
    extensions: pd.DataFrame | None = None,
    web_url: str = "https://github.com",
    now: datetime | None = None,
    course_ends: datetime | None = None,
) -> Gradebook:
    """Everything the tables, plots and exports show, computed once; ``now`` and ``course_ends``
    decide what is already due (a grade cell is "missing" only then)."""
    warnings: list[str] = []
    known = {a.id: a for a in assignments}
    overrides = overrides if overrides is not None else pd.DataFrame(columns=["team", "assignment", "points", "reason"])
    extensions = extensions if extensions is not None else pd.DataFrame(columns=["team", "assignment", "due", "reason"])
    runs = prepare_runs(runs, known, extensions, warnings, web_url)
    moment = now or datetime.now(timezone.utc)
    grades = grade_teams(runs, known, overrides, extensions, moment, course_ends)
    stray = sorted(set(grades["team"]) - set(roster.teams))
    if stray:
        warnings.append(f"teams with runs but not in roster.yaml (not in the student table): {', '.join(stray)}")
    due = {a.id: is_due(a, moment, course_ends) for a in assignments}
    students, flags = student_table(grades, assignments, roster, due)
    staff = [name for name, team in roster.teams.items() if team.staff]
    return Gradebook(assignments, runs, grades, students, flags, warnings, rostered=list(roster.teams), staff=staff)


def prepare_runs(
    runs: pd.DataFrame, known: dict[str, Assignment], extensions: pd.DataFrame, warnings: list[str], web_url: str
) -> pd.DataFrame:
    """Parse times, mark superseded gradings, apply each assignment's late rule."""
    unknown = runs.loc[~runs["assignment"].isin(list(known)), "assignment"].value_counts()
    for assignment_id, count in unknown.items():
        warnings.append(f"{count} run(s) of '{assignment_id}', which has no assignment.yaml, were left out")
    runs = runs[runs["assignment"].isin(list(known))].copy()
    runs["event"] = pd.to_datetime(runs["event_time"], utc=True, format="ISO8601")
    runs["graded"] = pd.to_datetime(runs["graded_at"], utc=True, format="ISO8601")
    runs["when"] = runs["event"].fillna(runs["graded"])
    runs["time_source"] = np.where(runs["event"].notna(), "github", "graded")
    # the latest grading of a commit replaces earlier ones, but an error never replaces a real grade
    runs = runs.assign(ok=runs["status"] != "error").sort_values(["ok", "graded", "id"], kind="stable")
    same_commit = ["team", "assignment", "repository", "pr_number", "head_sha", "event_time"]
    regraded = runs["head_sha"].notna() & runs.duplicated(subset=same_commit, keep="last")
    runs["current"] = ~regraded
    runs["deadline"] = team_deadlines(runs, known, extensions)
    for column in ("seconds_late", "days_late", "points_lost", "final"):
        runs[column] = np.nan
    runs["past_cutoff"] = False
    for assignment_id, group in runs.groupby("assignment", sort=False):
        late = assess(
            group["when"], group["deadline"], group["score"], group["max_score"], known[assignment_id].policy.late
        )
        runs.loc[group.index, "seconds_late"] = late.seconds_late
        runs.loc[group.index, "days_late"] = late.days_late
        runs.loc[group.index, "past_cutoff"] = late.past_cutoff
        runs.loc[group.index, "points_lost"] = late.points_lost
        runs.loc[group.index, "final"] = late.final
    runs["days_late"] = runs["days_late"].astype(int)
    runs["countable"] = runs["current"] & (runs["status"] != "error") & ~runs["past_cutoff"].astype(bool)
    runs["pr_url"] = pr_urls(runs, web_url)
    runs["counted"] = False
    return runs.sort_values(["team", "assignment", "when", "id"], kind="stable")


def team_deadlines(runs: pd.DataFrame, known: dict[str, Assignment], extensions: pd.DataFrame) -> pd.Series:
    """Each run's deadline: the team's extension if it has one, else the assignment's."""
    default = {a: (pd.Timestamp(x.policy.deadline_utc()) if x.policy.deadline else pd.NaT) for a, x in known.items()}
    deadline = runs["assignment"].map(default)
    deadline = pd.to_datetime(deadline, utc=True)
    if len(extensions):
        due = extensions.assign(due=pd.to_datetime(extensions["due"], utc=True, format="ISO8601"))
        keyed = due.set_index(["team", "assignment"])["due"]
        index = pd.MultiIndex.from_arrays([runs["team"], runs["assignment"]])
        extended = pd.Series(keyed.reindex(index).to_numpy(), index=runs.index)
        deadline = extended.where(extended.notna(), deadline)
    return pd.to_datetime(deadline, utc=True)


def pick_counted(runs: pd.DataFrame, known: dict[str, Assignment]) -> pd.Series:
    """Index labels of the run that counts for each team and assignment."""
    countable = runs[runs["countable"]]
    picked = []
    for assignment_id, group in countable.groupby("assignment", sort=False):
        if known[assignment_id].policy.counts == "last":
            ordered = group.sort_values(["when", "graded", "id"], kind="stable")
            picked.append(ordered.groupby("team", sort=False).tail(1).index)
        else:
            ordered = group.sort_values(["final", "when", "id"], ascending=[False, True, True], kind="stable")
            picked.append(ordered.groupby("team", sort=False).head(1).index)
    return pd.Series(np.concatenate(picked) if picked else [], dtype=object)


def grade_teams(
    runs: pd.DataFrame,
    known: dict[str, Assignment],
    overrides: pd.DataFrame,
    extensions: pd.DataFrame,
    now: datetime | None = None,
    course_ends: datetime | None = None,
) -> pd.DataFrame:
    counted = pick_counted(runs, known)
    runs.loc[counted.tolist(), "counted"] = True
    chosen = runs.loc[counted.tolist()]
    current = runs[runs["current"]].assign(error=lambda f: f["status"] == "error")
    per_team = (
        current.groupby(["team", "assignment"])
        .agg(
            runs=("id", "size"),
            error_runs=("error", "sum"),
            late_runs_ignored=("past_cutoff", "sum"),
        )
        .reset_index()
    )
    grades = per_team.merge(
        chosen[
            [
                "team",
                "assignment",
                "id",
                "status",
                "score",
                "days_late",
                "points_lost",
                "final",
                "when",
                "time_source",
                "deadline",
                "pr_url",
                "max_score",
            ]
        ].rename(columns={"id": "run_id", "score": "raw_score", "max_score": "run_max"}),
        on=["team", "assignment"],
        how="left",
    )
    keys = ["team", "assignment"]
    live = overrides[overrides["points"].notna()] if len(overrides) else overrides
    grades = grades.merge(
        live[keys + ["points", "reason"]].rename(columns={"points": "override_points", "reason": "override_reason"}),
        on=keys,
        how="outer",
    )
    grades = grades.merge(extensions[keys + ["due"]].rename(columns={"due": "extension_due"}), on=keys, how="outer")
    grades = grades[grades["assignment"].isin(list(known))]
    for column in ("runs", "error_runs", "late_runs_ignored"):
        grades[column] = grades[column].fillna(0).astype(int)
    for column in ("run_id", "raw_score", "days_late", "points_lost", "final", "override_points"):
        grades[column] = pd.to_numeric(grades[column], errors="coerce").astype(float)  # empty merges give objects
    grades["score"] = grades["override_points"].where(grades["override_points"].notna(), grades["final"])
    full = grades["assignment"].map(lambda a: known[a].max_score)
    run_max = pd.to_numeric(grades["run_max"], errors="coerce")
    # a grading on a runner without the hardware (hw6's TensorRT) left points pending: say so, to regrade
    grades["pending_points"] = (full - run_max).where((grades["status"] == "graded") & (full - run_max > 0.01))
    moment = now or datetime.now(timezone.utc)
    extended = pd.to_datetime(grades["extension_due"], utc=True, format="ISO8601")
    grades["due"] = [
        moment >= until.to_pydatetime() if pd.notna(until) else is_due(known[assignment], moment, course_ends)
        for assignment, until in zip(grades["assignment"], extended)
    ]  # a team's own extension moves when its gap becomes "missing"
    grades["flags"] = [grade_flags(row) for row in grades.itertuples(index=False)]
    return grades[GRADE_COLUMNS].sort_values(keys, kind="stable").reset_index(drop=True)


def grade_flags(row: object) -> str:
    """Short marks for a grade cell: why it is not simply the run's score."""
    marks = []
    if pd.notna(row.override_points):
        marks.append("override")
    if pd.notna(row.days_late) and row.days_late > 0:
        late = f"late {int(row.days_late)}d -{row.points_lost:g}"
        marks.append(f"{late}, superseded by the override" if pd.notna(row.override_points) else late)
    if pd.notna(row.extension_due):
        marks.append("extension")
    if pd.notna(row.pending_points):
        marks.append(f"{row.pending_points:g} points pending (needs hardware the runner lacked; regrade)")
    if row.error_runs:
        marks.append(f"{row.error_runs} error run(s)")
    if row.late_runs_ignored:
        marks.append(f"{row.late_runs_ignored} run(s) past cutoff")
    if pd.isna(row.run_id) and pd.isna(row.override_points):
        marks.append("no counted run" if row.runs else ("missing" if row.due else NOT_DUE))
    if row.time_source == "graded":
        marks.append("no GitHub event time")
    return "; ".join(marks)


def member_frame(roster: Roster) -> pd.DataFrame:
    rows = [
        {"student_id": m.student_id, "name": m.name, "github": m.github, "email": m.email, "team": team}
        for team, entry in roster.teams.items()
        if not entry.staff
        for m in entry.members
    ]
    return pd.DataFrame(rows, columns=["student_id", "name", "github", "email", "team"])


def is_due(assignment: Assignment, now: datetime, course_ends: datetime | None) -> bool:
    """Past its deadline, or, without one, past the course's end: only then is a gap "missing"."""
    deadline = assignment.policy.deadline
    if deadline is not None:
        return now >= deadline
    return course_ends is not None and now >= course_ends


def student_table(
    grades: pd.DataFrame, assignments: list[Assignment], roster: Roster, due: dict[str, bool] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Students x course items (+ total), and a matching frame of flags.

    A student on several teams gets the best of their teams' grades; a course item with
    alternatives (the final project's tracks) takes the team's best of them, counted once. An empty
    cell is flagged "missing" only when the item is due, else "not due yet"."""
    ids = [a.id for a in assignments]
    items = list(dict.fromkeys(a.item for a in assignments))
    members = member_frame(roster)
    scores = grades.pivot_table(index="team", columns="assignment", values="score", aggfunc="first").reindex(
        columns=ids
    )
    marks = grades.pivot_table(index="team", columns="assignment", values="flags", aggfunc="first").reindex(columns=ids)
    scores, marks = _by_item(scores, marks, assignments, items)
    joined = members.merge(scores, left_on="team", right_index=True, how="left")
    flag_rows = members.merge(marks, left_on="team", right_index=True, how="left")
    identity = ["student_id", "name", "github", "email"]
    if joined["github"].duplicated().any():
        joined = (
            joined.groupby("github", sort=False)
            .agg({**{c: "first" for c in identity if c != "github"}, "team": ", ".join, **{a: "max" for a in items}})
            .reset_index()
        )
        flag_rows = (
            flag_rows.groupby("github", sort=False)
            .agg(
                {"team": ", ".join, **{a: lambda s: "; ".join(x for x in s if isinstance(x, str) and x) for a in items}}
            )
            .reset_index()
        )
    students = joined[identity + ["team"] + items].copy()
    students["total"] = students[items].sum(axis=1, min_count=1).round(2) if items else np.nan
    flags = flag_rows[["github"] + items].astype(object).fillna("")
    due = due or {}
    for item in items:
        item_due = any(due.get(a.id, True) for a in assignments if a.item == item)
        flags.loc[students[item].isna() & (flags[item] == ""), item] = "missing" if item_due else NOT_DUE
    return students.reset_index(drop=True), flags.reset_index(drop=True)


NOT_DUE = "not due yet"


def _by_item(
    scores: pd.DataFrame, marks: pd.DataFrame, assignments: list[Assignment], items: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Team x item: an item's score is the best of its assignments', and its flags those of that one."""
    teams = scores.index.union(marks.index)  # a team with only error runs has flags and no score
    scores, marks = scores.reindex(teams), marks.reindex(teams)
    out_scores = pd.DataFrame(index=teams, columns=items, dtype=float)
    out_marks = pd.DataFrame(index=teams, columns=items, dtype=object)
    for item in items:
        members = [a.id for a in assignments if a.item == item]
        best = scores[members].astype(float)
        out_scores[item] = best.max(axis=1, skipna=True)
        chosen = best.fillna(-np.inf).idxmax(axis=1)
        picked = [marks.at[team, column] if column in marks.columns else "" for team, column in chosen.items()]
        if len(members) == 1:
            labelled = picked
        else:  # say which alternative counted
            labelled = [
                f"{column}" + (f"; {flag}" if isinstance(flag, str) and flag else "") if pd.notna(score) else flag
                for column, flag, score in zip(chosen, picked, out_scores[item])
            ]
        out_marks[item] = labelled
    return out_scores, out_marks


def metrics_of(runs: pd.DataFrame) -> pd.Series:
    """Parsed ``metrics_json`` per run (only where the frame was loaded with metrics)."""
    if "metrics_json" not in runs:
        return pd.Series([{}] * len(runs), index=runs.index)
    return runs["metrics_json"].map(json.loads)
