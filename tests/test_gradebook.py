"""The grade table: which run counts, late marks, error runs, regraded commits, overrides,
extensions, the student table and its files (CSV, Markdown, Excel), Gradescope, leaderboard."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from grader.config.assignment import Assignment, load_assignment
from grader.config.policy import LateRule, Policy
from grader.config.roster import Roster
from grader.gradebook.export import write_csv, write_excel, write_markdown
from grader.gradebook.gradescope import export_gradescope
from grader.gradebook.leaderboard import leaderboard, pareto_front
from grader.gradebook.table import Gradebook, build_gradebook
from grader.records.store import Store
from tests.results_builders import HW2, make_result, sha_for

DEADLINE = datetime(2026, 12, 11, 22, 59, tzinfo=timezone.utc)
ROSTER = Roster.model_validate(
    {
        "teams": {
            "team-alpha": {
                "members": [
                    {"github": "ann", "name": "Ann Lee", "student_id": "S1", "email": "ann@uni.example"},
                    {"github": "bo", "name": "Bo Chen", "student_id": "S2"},
                ]
            },
            "team-beta": {"members": [{"github": "cy", "name": "Cy Diaz", "student_id": "S3"}]},
            "team-gamma": {"members": [{"github": "dee", "name": '=HYPERLINK("http://x")', "student_id": "S4"}]},
            "course-staff": {"staff": True, "members": [{"github": "prof"}]},
        }
    }
)


def hw2(counts: str = "best", **late: float) -> Assignment:
    rule = LateRule(**({"per_day": 0.1, "cap": 0.5, "cutoff_days": 7} | late))
    return load_assignment(HW2).model_copy(update={"policy": Policy(deadline=DEADLINE, late=rule, counts=counts)})


TERM_OVER = DEADLINE + timedelta(days=30)  # "now" for the books below: every deadline has passed


def book_of(
    tmp_path: Path, results, assignment: Assignment | None = None, overrides=(), extensions=(), now=TERM_OVER
) -> Gradebook:
    with Store(tmp_path / "g.sqlite") as store:
        store.add_runs([(r, "test") for r in results])
        for team, points, reason in overrides:
            store.add_override(team, HW2, points, reason, "prof")
        for team, due in extensions:
            store.add_extension(team, HW2, due, "medical", "prof")
        return build_gradebook(
            store.runs_frame(with_metrics=True),
            [assignment or hw2()],
            ROSTER,
            store.overrides_frame(),
            store.extensions_frame(),
            now=now,
        )


def grade(book: Gradebook, team: str) -> dict:
    return book.grades.set_index("team").loc[team].to_dict()


def at(delta: timedelta) -> datetime:
    return DEADLINE + delta


def test_best_counts_the_highest_score_after_penalty(tmp_path: Path) -> None:
    book = book_of(
        tmp_path,
        [
            make_result(score=70, event_time=at(-timedelta(hours=5))),
            make_result(score=90, event_time=at(timedelta(hours=1))),  # 1 day late: 90 - 9 = 81 > 70
            make_result(score=60, event_time=at(-timedelta(hours=9))),
        ],
    )
    g = grade(book, "team-alpha")
    assert (g["raw_score"], g["days_late"], g["points_lost"], g["score"]) == (90, 1, 9, 81)
    assert "late 1d -9" in g["flags"]


def test_best_prefers_an_on_time_run_when_the_penalty_eats_the_gain(tmp_path: Path) -> None:
    book = book_of(
        tmp_path,
        [
            make_result(score=85, event_time=at(-timedelta(hours=5))),
            make_result(score=90, event_time=at(timedelta(days=1, hours=1))),
        ],
    )  # 90 - 18 = 72
    g = grade(book, "team-alpha")
    assert (g["score"], g["days_late"], g["flags"]) == (85, 0, "")


def test_last_counts_the_latest_run_even_if_worse(tmp_path: Path) -> None:
    results = [
        make_result(score=95, event_time=at(-timedelta(hours=5))),
        make_result(score=40, event_time=at(-timedelta(hours=1))),
    ]
    assert grade(book_of(tmp_path, results, hw2(counts="last")), "team-alpha")["score"] == 40
    assert grade(book_of(tmp_path / "best", results, hw2(counts="best")), "team-alpha")["score"] == 95


def test_last_is_by_github_event_time_not_by_grading_order(tmp_path: Path) -> None:
    """The runner may grade an older push last; the later push still counts."""
    older = make_result(score=50, event_time=at(-timedelta(hours=5)), graded_at=at(-timedelta(hours=1)))
    newer = make_result(score=70, event_time=at(-timedelta(hours=3)), graded_at=at(-timedelta(hours=2)))
    assert grade(book_of(tmp_path, [older, newer], hw2(counts="last")), "team-alpha")["score"] == 70


def test_error_runs_never_count_against_a_student(tmp_path: Path) -> None:
    book = book_of(
        tmp_path,
        [
            make_result(score=80, event_time=at(-timedelta(hours=5))),
            make_result(status="error", event_time=at(-timedelta(hours=1))),  # last, but the grader's fault
            make_result("team-beta", status="error", event_time=at(-timedelta(hours=1))),
        ],
        hw2(counts="last"),
    )
    alpha, beta = grade(book, "team-alpha"), grade(book, "team-beta")
    assert alpha["score"] == 80 and "1 error run(s)" in alpha["flags"]
    assert np.isnan(beta["score"]) and "no counted run" in beta["flags"]


def test_a_commit_graded_again_replaces_its_earlier_grading(tmp_path: Path) -> None:
    """A regrade (or workflow re-run) of the same push replaces it, lateness unchanged; an error
    regrade never replaces a real grade."""
    event = at(timedelta(hours=2))  # one day late
    first = make_result(score=60, event_time=event, graded_at=event + timedelta(minutes=3))
    regraded = make_result(score=90, event_time=event, graded_at=event + timedelta(days=20))
    broken = make_result(status="error", event_time=event, graded_at=event + timedelta(days=30))
    book = book_of(tmp_path, [first, regraded, broken])
    g = grade(book, "team-alpha")
    assert (g["raw_score"], g["days_late"], g["score"]) == (90, 1, 81)
    assert g["error_runs"] == 0 and book.runs["current"].sum() == 1


def test_runs_past_the_cutoff_do_not_count(tmp_path: Path) -> None:
    book = book_of(
        tmp_path,
        [
            make_result(score=50, event_time=at(-timedelta(hours=1))),
            make_result(score=100, event_time=at(timedelta(days=8))),
        ],
    )
    g = grade(book, "team-alpha")
    assert g["score"] == 50 and "1 run(s) past cutoff" in g["flags"]


def test_override_replaces_the_points_and_is_flagged(tmp_path: Path) -> None:
    book = book_of(
        tmp_path,
        [make_result(score=40, event_time=at(-timedelta(hours=1)))],
        overrides=[("team-alpha", 75, "hidden test was wrong"), ("team-gamma", 10, "emailed a model")],
    )
    alpha, gamma = grade(book, "team-alpha"), grade(book, "team-gamma")
    assert (alpha["score"], alpha["raw_score"], alpha["override_reason"]) == (75, 40, "hidden test was wrong")
    assert alpha["flags"].startswith("override")
    assert gamma["score"] == 10 and "missing" not in gamma["flags"]  # an override without any run


def test_cleared_override_restores_the_run(tmp_path: Path) -> None:
    book = book_of(
        tmp_path,
        [make_result(score=40, event_time=at(-timedelta(hours=1)))],
        overrides=[("team-alpha", 75, "oops"), ("team-alpha", None, "undo")],
    )
    assert grade(book, "team-alpha")["score"] == 40


def test_extension_moves_the_teams_deadline_only(tmp_path: Path) -> None:
    late_push = at(timedelta(days=2))
    results = [
        make_result("team-alpha", score=90, event_time=late_push),
        make_result("team-beta", score=90, event_time=late_push),
    ]
    book = book_of(tmp_path, results, extensions=[("team-alpha", at(timedelta(days=3)))])
    alpha, beta = grade(book, "team-alpha"), grade(book, "team-beta")
    assert (alpha["score"], alpha["days_late"]) == (90, 0) and "extension" in alpha["flags"]
    assert (beta["score"], beta["days_late"]) == (72, 2)


def test_extension_also_moves_the_cutoff(tmp_path: Path) -> None:
    push = at(timedelta(days=9))
    book = book_of(
        tmp_path, [make_result(score=90, event_time=push)], extensions=[("team-alpha", at(timedelta(days=4)))]
    )
    g = grade(book, "team-alpha")
    assert (g["days_late"], g["score"]) == (5, 45)  # 5 days past the new deadline, capped at 50%


def test_a_run_without_github_time_is_timed_by_grading_and_flagged(tmp_path: Path) -> None:
    local = make_result(score=70, pr=None, head_sha="", event_time=at(-timedelta(hours=1)))
    local.context.event_time = None
    local.context.head_sha = None
    book = book_of(tmp_path, [local])
    assert "no GitHub event time" in grade(book, "team-alpha")["flags"]


def test_student_table_rows_flags_and_total(tmp_path: Path) -> None:
    book = book_of(
        tmp_path,
        [
            make_result("team-alpha", score=88, event_time=at(-timedelta(hours=1))),
            make_result("team-stray", score=50, event_time=at(-timedelta(hours=1))),
        ],
    )
    students = book.students.set_index("github")
    assert list(students.index) == ["ann", "bo", "cy", "dee"]  # staff left out
    assert students.loc["ann", HW2] == students.loc["bo", HW2] == students.loc["ann", "total"] == 88
    assert np.isnan(students.loc["cy", HW2]) and book.flags.set_index("github").loc["cy", HW2] == "missing"
    assert any("team-stray" in w for w in book.warnings)


def test_a_student_on_two_teams_gets_the_better_grade(tmp_path: Path) -> None:
    roster = Roster.model_validate(
        {
            "teams": {
                "team-a": {"members": [{"github": "ann"}]},
                "team-b": {"members": [{"github": "ann"}, {"github": "bo"}]},
            }
        }
    )
    results = [
        make_result("team-a", score=60, event_time=at(-timedelta(hours=1))),
        make_result("team-b", score=85, event_time=at(-timedelta(hours=1))),
    ]
    with Store(tmp_path / "g.sqlite") as store:
        store.add_runs([(r, "t") for r in results])
        book = build_gradebook(store.runs_frame(), [hw2()], roster)
    ann = book.students.set_index("github").loc["ann"]
    assert ann[HW2] == 85 and ann["team"] == "team-a, team-b"


def test_csv_columns_for_the_lms(tmp_path: Path) -> None:
    book = book_of(tmp_path, [make_result(score=81.5, event_time=at(timedelta(hours=1)))])
    path = write_csv(book, tmp_path / "grades.csv")
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["student_id", "name", "github", "email", "team", HW2, "total", f"{HW2}_flags"]
    ann = next(r for r in rows if r["github"] == "ann")
    assert (ann["student_id"], ann["email"], ann[HW2], ann["total"]) == ("S1", "ann@uni.example", "73.35", "73.35")
    assert ann[f"{HW2}_flags"] == "late 1d -8.15"
    cy = next(r for r in rows if r["github"] == "cy")
    assert cy[HW2] == "" and cy[f"{HW2}_flags"] == "missing"


def test_spreadsheet_cells_cannot_become_formulas(tmp_path: Path) -> None:
    book = book_of(tmp_path, [make_result("team-gamma", score=70, event_time=at(-timedelta(hours=1)))])
    rows = list(csv.DictReader(write_csv(book, tmp_path / "grades.csv").open()))
    assert next(r for r in rows if r["github"] == "dee")["name"] == '\'=HYPERLINK("http://x")'
    sheet = openpyxl.load_workbook(write_excel(book, tmp_path / "grades.xlsx"))["students"]
    names = [c.value for c in sheet["B"]]
    assert '\'=HYPERLINK("http://x")' in names and all(c.data_type != "f" for row in sheet.iter_rows() for c in row)


def test_every_run_goes_to_runs_csv(tmp_path: Path) -> None:
    book = book_of(
        tmp_path,
        [
            make_result(score=70, event_time=at(-timedelta(hours=5))),
            make_result(score=90, event_time=at(timedelta(hours=1))),
        ],
    )
    write_csv(book, tmp_path / "grades.csv")
    runs = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert [(r["score"], r["final"], r["days_late"], r["counted"]) for r in runs] == [
        ("70", "70", "0", "False"),
        ("90", "81", "1", "True"),
    ]
    assert runs[0]["pr_url"] == "https://github.com/course/compression-2026/pull/7"


def test_excel_workbook_has_students_teams_and_leaderboard(tmp_path: Path) -> None:
    metrics = {"candidate_vs_baseline.speedup_b64": 1.9, "candidate.accuracy": 0.97}
    book = book_of(tmp_path, [make_result(score=88, event_time=at(-timedelta(hours=1)), metrics=metrics)])
    workbook = openpyxl.load_workbook(write_excel(book, tmp_path / "grades.xlsx"))
    assert workbook.sheetnames == ["students", "teams", f"lb {HW2}"[:31]]
    board = workbook[f"lb {HW2}"[:31]]
    assert [c.value for c in board[1]][:3] == ["team", "candidate_vs_baseline.speedup_b64", "candidate.accuracy"]
    assert [c.value for c in board[2]][:4] == ["team-alpha", 1.9, 0.97, True]
    header = [c.value for c in workbook["students"][1]]
    assert header[:7] == ["student_id", "name", "github", "email", "team", HW2, "total"]
    teams = [c.value for c in workbook["teams"][1]]
    assert teams[:3] == ["team", "assignment", "grade"] and "final" not in teams and "score" not in teams
    assert [c.value for c in workbook["teams"][2]][:3] == ["team-alpha", HW2, 88]
    assert workbook["students"]["F2"].value == 88


def test_an_override_is_the_grade_and_the_late_penalty_it_replaces_says_superseded(tmp_path: Path) -> None:
    book = book_of(
        tmp_path,
        [make_result(score=90, event_time=at(timedelta(hours=2)))],  # a day late: 90 less 9
        overrides=[("team-alpha", 95, "the late push was our outage")],
    )
    alpha = grade(book, "team-alpha")
    assert alpha["score"] == 95 and alpha["final"] == 81
    assert "override" in alpha["flags"] and "late 1d -9, superseded by the override" in alpha["flags"]
    workbook = openpyxl.load_workbook(write_excel(book, tmp_path / "grades.xlsx"))
    rows = [[c.value for c in row] for row in workbook["teams"].iter_rows()]
    assert rows[1][:3] == ["team-alpha", HW2, 95]  # one figure to read; the 81 is not a column of its own


def test_markdown_escapes_names(tmp_path: Path) -> None:
    roster = Roster.model_validate(
        {"teams": {"team-alpha": {"members": [{"github": "ann", "name": "<b>Ann</b> | @prof"}]}}}
    )
    with Store(tmp_path / "g.sqlite") as store:
        store.add_runs([(make_result(score=88, event_time=at(-timedelta(hours=1))), "t")])
        book = build_gradebook(store.runs_frame(), [hw2()], roster)
    text = write_markdown(book, tmp_path / "grades.md").read_text()
    assert "<b>" not in text and "&lt;b&gt;Ann&lt;/b&gt; \\| @\u200bprof" in text
    assert "| 88 | 88 |" in text


def test_pareto_front() -> None:
    x = np.array([1.0, 2.0, 3.0, 2.0, 1.5, 3.0])
    y = np.array([0.99, 0.98, 0.90, 0.95, 0.97, 0.90])
    assert pareto_front(x, y).tolist() == [True, True, True, False, False, True]  # the duplicate stays on it
    assert pareto_front(x, y, x_higher=False).tolist() == [True, False, False, False, False, False]


def test_a_board_without_a_score_formula_lists_counted_runs_of_rostered_teams_and_ranks_nothing(
    tmp_path: Path,
) -> None:
    """hw2 names two figures but no score formula: there is nothing to rank by, so no rank column,
    the teams in name order, and a team missing from the roster is not on the board."""

    def run(team: str, score: float, speed: float, acc: float, hours: int) -> object:
        return make_result(
            team,
            score=score,
            event_time=at(-timedelta(hours=hours)),
            metrics={"candidate_vs_baseline.speedup_b64": speed, "candidate.accuracy": acc},
        )

    book = book_of(
        tmp_path,
        [
            run("team-gamma", 70, 1.5, 0.99, 2),
            run("team-alpha", 90, 2.0, 0.98, 3),
            run("team-alpha", 60, 5.0, 0.99, 2),
            run("team-beta", 80, 3.0, 0.97, 2),
            run("team-stray", 95, 9.0, 0.999, 2),  # not on the roster
        ],
    )
    board = leaderboard(book, hw2())
    assert "rank" not in board.columns and board["team"].tolist() == ["team-alpha", "team-beta", "team-gamma"]
    indexed = board.set_index("team")
    assert indexed.loc["team-alpha", "x"] == 2.0  # its counted (best) run, not its fastest
    assert indexed["on_front"].to_dict() == {"team-alpha": True, "team-beta": True, "team-gamma": True}
    write_csv(book, tmp_path / "grades.csv")
    published = list(csv.DictReader((tmp_path / f"leaderboard-{HW2}.csv").open()))
    assert [r["team"] for r in published] == ["team-alpha", "team-beta", "team-gamma"] and "rank" not in published[0]
    assert published[1]["candidate_vs_baseline.speedup_b64"] == "3.0"


def test_gradescope_results_json(tmp_path: Path) -> None:
    result = make_result(
        score=90,
        event_time=at(timedelta(hours=1)),
        metrics={"candidate_vs_baseline.speedup_b64": 1.9, "candidate.accuracy": 0.97},
    )
    book = book_of(tmp_path, [result], overrides=[("team-beta", 55, "manual grading")])
    with Store(tmp_path / "g.sqlite") as store:
        results = store.results(book.grades["run_id"].dropna().astype(int))
    paths = export_gradescope(book, results, tmp_path / "gs")
    assert sorted(p.relative_to(tmp_path / "gs").as_posix() for p in paths) == [
        f"{HW2}/team-alpha/results.json",
        f"{HW2}/team-beta/results.json",
    ]
    alpha = json.loads((tmp_path / "gs" / HW2 / "team-alpha" / "results.json").read_text())
    assert alpha["score"] == 81 and alpha["visibility"] == "visible"
    names = [t["name"] for t in alpha["tests"]]
    assert names == ["Loads", "Everything else", "Late penalty"]
    for test in alpha["tests"]:
        assert set(test) >= {"name", "score", "max_score", "status", "output", "visibility"}
        assert test["status"] in ("passed", "failed")
    assert alpha["tests"][2]["score"] == -9
    assert {e["name"] for e in alpha["leaderboard"]} == {"speedup at batch 64 (x)", "accuracy on the labelled inputs"}
    beta = json.loads((tmp_path / "gs" / HW2 / "team-beta" / "results.json").read_text())
    assert beta["score"] == 55 and beta["tests"][-1]["name"] == "Instructor override"


@pytest.mark.parametrize("counts", ["best", "last"])
def test_no_runs_at_all_is_an_empty_but_valid_book(tmp_path: Path, counts: str) -> None:
    book = book_of(tmp_path, [], hw2(counts=counts))
    assert len(book.grades) == 0 and len(book.students) == 4
    assert set(book.flags[HW2]) == {"missing"}


def test_a_gap_is_missing_only_once_it_is_due(tmp_path: Path) -> None:
    """Before the deadline an empty cell is "not due yet", not "missing"; an assignment without a
    deadline is due when the course ends (course.yaml's ``ends``), and never before."""
    early = book_of(tmp_path, [], now=DEADLINE - timedelta(days=3))
    assert set(early.flags[HW2]) == {"not due yet"}
    late = book_of(tmp_path, [], now=DEADLINE + timedelta(minutes=1))
    assert set(late.flags[HW2]) == {"missing"}
    open_ended = hw2().model_copy(update={"policy": Policy(deadline=None)})
    ends = DEADLINE + timedelta(days=10)
    with Store(tmp_path / "g.sqlite") as store:
        runs = store.runs_frame()
    during = build_gradebook(runs, [open_ended], ROSTER, now=ends - timedelta(days=1), course_ends=ends)
    after = build_gradebook(runs, [open_ended], ROSTER, now=ends, course_ends=ends)
    never = build_gradebook(runs, [open_ended], ROSTER, now=ends + timedelta(days=365))
    assert set(during.flags[HW2]) == {"not due yet"} and set(after.flags[HW2]) == {"missing"}
    assert set(never.flags[HW2]) == {"not due yet"}  # no deadline and no course end: nothing is ever missing


def test_the_final_projects_two_tracks_are_one_course_item_counted_once(tmp_path: Path) -> None:
    """A team does one track: the student table has one final-project column, holding the team's
    better track, and the total counts it once; a team with neither is missing it once."""
    final, service = load_assignment("final-project"), load_assignment("final-service")
    assert service.item == final.item == "final-project"
    results = [
        make_result("team-alpha", assignment="final-project", score=70, event_time=at(-timedelta(hours=1))),
        make_result("team-alpha", assignment="final-service", score=90, event_time=at(-timedelta(hours=1))),
        make_result("team-beta", assignment="final-service", score=65, event_time=at(-timedelta(hours=1))),
    ]
    with Store(tmp_path / "g.sqlite") as store:
        store.add_runs([(r, "t") for r in results])
        book = build_gradebook(
            store.runs_frame(), [hw2(), final, service], ROSTER, now=TERM_OVER, course_ends=TERM_OVER
        )  # the final project has no deadline: it is due when the course ends
    assert book.items == [HW2, "final-project"] and list(book.students.columns).count("final-project") == 1
    students, flags = book.students.set_index("github"), book.flags.set_index("github")
    assert students.loc["ann", "final-project"] == 90 and students.loc["ann", "total"] == 90  # hw2 missing
    assert flags.loc["ann", "final-project"].startswith("final-service")  # which track counted
    assert students.loc["cy", "final-project"] == 65
    assert np.isnan(students.loc["dee", "final-project"]) and flags.loc["dee", "final-project"] == "missing"
    write_csv(book, tmp_path / "grades.csv")
    header = next(csv.reader((tmp_path / "grades.csv").open()))
    assert header.count("final-project") == 1 and "final-service" not in header


def test_a_different_sha_for_each_push_in_the_builders() -> None:
    assert sha_for("a") != sha_for("b") and len(sha_for("a")) == 40


def test_plots_of_a_book_without_runs_say_so_instead_of_drawing_empty_axes(tmp_path: Path) -> None:
    from grader.gradebook.plots import NO_RUNS, all_plots

    plots = {p.id: p for p in all_plots(book_of(tmp_path, []))}
    assert NO_RUNS in plots["timeline"].alt and NO_RUNS in plots[f"leaderboard-{HW2}"].title
    assert all(p.data_uri.startswith("data:image/png;base64,") for p in plots.values())


def test_a_teams_extension_moves_when_its_gap_becomes_missing(tmp_path: Path) -> None:
    extended = [("team-beta", DEADLINE + timedelta(days=3))]
    between = book_of(tmp_path / "a", [], extensions=extended, now=DEADLINE + timedelta(days=1))
    flags = between.flags.set_index("github")
    assert flags.loc["cy", HW2] == "extension; not due yet" and flags.loc["ann", HW2] == "missing"
    after = book_of(tmp_path / "b", [], extensions=extended, now=DEADLINE + timedelta(days=4))
    assert after.flags.set_index("github").loc["cy", HW2] == "extension; missing"


def test_a_grading_with_points_pending_says_so_in_the_grade_cell(tmp_path: Path) -> None:
    """A runner without the hardware leaves a check pending (its points out of the run's maximum):
    the grade table must show it, so staff know to regrade, instead of a silent shortfall."""
    book = book_of(tmp_path, [make_result(score=70, max_score=85, event_time=at(-timedelta(hours=1)))])
    assert "15 points pending" in grade(book, "team-alpha")["flags"]
    full = book_of(tmp_path / "b", [make_result(score=70, event_time=at(-timedelta(hours=1)))])
    assert "pending" not in grade(full, "team-alpha")["flags"]


def test_alternatives_of_one_course_item_must_be_worth_the_same() -> None:
    from grader.commands.info import course_item_problems

    final, service = load_assignment("final-project"), load_assignment("final-service")
    assert course_item_problems([final, service]) == []
    checks = [c.model_copy(update={"points": c.points / 2}) for c in service.checks]
    halved = service.model_copy(update={"checks": checks})
    [problem] = course_item_problems([final, halved])
    assert "course item final-project" in problem and "must be worth the same" in problem
