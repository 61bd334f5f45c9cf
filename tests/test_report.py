"""Reports: escaped student text everywhere, verdict first, a marker nobody can fake or break."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pytest

from grader.contracts.observations import Estimate
from grader.contracts.result import (
    AssignmentRef,
    CheckResult,
    CheckStatus,
    GraderRef,
    Problem,
    Result,
    SubmissionRef,
    json_schema,
)
from grader.report import machine
from grader.report.escape import md
from grader.report.render import COMMENT_LIMIT, marker, render_html, render_markdown, write_reports

HOSTILE = "<script>alert(1)</script> @octocat [click](https://evil.example) --> **bold** | pipe `tick`\n# heading"


def make_result(**overrides) -> Result:
    fields = dict(
        status="graded",
        assignment=AssignmentRef(id="hw2-quantization-pruning", version=1),
        submission=SubmissionRef(
            team="team-alpha",
            members=["octocat"],
            path="submissions/team-alpha/hw2",
            files={"evil<b>.onnx": "0" * 64},
            claims={"sparsity": HOSTILE},
            notes=HOSTILE,
        ),
        score=35.0,
        max_score=100.0,
        checks=[
            CheckResult(id="loads", title="Loads", status=CheckStatus.PASS, points=10, max_points=10, message="ok"),
            CheckResult(
                id="quantized",
                title="Quantized",
                status=CheckStatus.FAIL,
                points=0,
                max_points=25,
                message=f"Still float: {HOSTILE}",
                evidence={"largest_float_weights": [HOSTILE]},
            ),
        ],
        metrics={
            "baseline.size_mb": Estimate(value=3.3, unit="MiB"),
            "candidate.size_mb": Estimate(value=0.9, unit="MiB"),
            "candidate_vs_baseline.size_ratio": Estimate(value=3.6, unit="x"),
            "candidate_vs_baseline.speedup_b64": Estimate(value=2.1, low=1.9, high=2.3, unit="x"),
        },
        grader=GraderRef(version="0.1.0"),
        started_at=datetime(2026, 11, 29, tzinfo=timezone.utc),
        duration_s=12.5,
    )
    fields.update(overrides)
    return Result(**fields)


def test_markdown_neutralises_student_text() -> None:
    body = render_markdown(make_result())
    assert "<script>" not in body and "&lt;script&gt;" in body
    assert "@octocat" not in body and "@\u200boctocat" in body
    assert "](https://evil" not in body and "[click]" not in body
    assert "**bold**" not in body
    assert "\n# heading" not in body
    # the only '-->' close the grader's own hidden marker (first line) and result block (last line)
    lines = body.strip().splitlines()
    assert body.count("-->") == 2 and lines[0].endswith("-->") and lines[-1].endswith("-->")


def test_markdown_puts_verdict_and_score_first() -> None:
    lines = render_markdown(make_result()).splitlines()
    assert lines[0].startswith("<!-- compression-grader:v1 team=team-alpha assignment=hw2-quantization-pruning")
    assert "35 / 100" in lines[1]
    assert lines[1].startswith("## ")


def test_markdown_has_side_by_side_measurements_with_ratio() -> None:
    body = render_markdown(make_result())
    row = next(line for line in body.splitlines() if line.startswith("| file size"))
    assert "3.3 MiB" in row and "0.9 MiB" in row and "3.6x" in row


def test_report_tables_name_figures_for_people_not_by_their_keys() -> None:
    """The tables a student reads say "peak memory" and "latency, batch 1", never the JSON keys."""
    import re as regex

    from grader.report.labels import label

    body = render_markdown(make_result())
    table = [line for line in body.splitlines() if line.startswith("| ") and ("MiB" in line or " ms" in line)]
    assert table and not any(regex.search(r"\b[a-z]+_[a-z0-9_]+\b", line.split("|")[1]) for line in table)
    assert label("peak_rss_mb") == "peak memory" and label("latency_ms_b64") == "latency, batch 64"


def test_marker_cannot_be_broken_by_a_hostile_result() -> None:
    # A result file arriving in the privileged workflow is hostile input: team is not validated there.
    result = make_result(submission=SubmissionRef(team="x --> <img src=x>", path="p"))
    line = marker(result)
    assert re.fullmatch(r"<!-- compression-grader:v1 team=[a-z0-9-]* assignment=[a-z0-9-]* -->", line)


def test_html_escapes_student_text() -> None:
    page = render_html(make_result())
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "evil&lt;b&gt;.onnx" in page


def test_long_reports_drop_details_not_the_verdict() -> None:
    huge = {"blob": "x" * (COMMENT_LIMIT + 1000)}
    result = make_result(
        checks=[
            CheckResult(
                id="loads",
                title="Loads",
                status=CheckStatus.PASS,
                points=10,
                max_points=10,
                message="ok",
                evidence=huge,
            )
        ]
    )
    body = render_markdown(result)
    assert len(body) <= COMMENT_LIMIT
    assert "35 / 100" in body and "<details><summary>Evidence" not in body
    assert machine.decode(body)["score"] == 35.0


def test_machine_block_round_trips_without_evidence() -> None:
    result = make_result()
    data = machine.decode(render_markdown(result))
    assert data is not None and Result.model_validate(data).score == result.score
    assert all(check["evidence"] == {} for check in data["checks"])
    assert data["submission"]["notes"] == HOSTILE  # data, not markup: the collector validates it


def test_machine_block_rejects_garbage() -> None:
    assert machine.decode("no block here") is None
    assert machine.decode("<!-- compression-grader:result:v1 AAAA -->") is None
    assert machine.decode("<!-- compression-grader:result:v1 " + "A" * 40 + "== -->") is None


def test_rejected_report_lists_what_to_fix() -> None:
    result = make_result(
        status="rejected",
        score=0,
        checks=[],
        problems=[Problem(kind="missing", message="model 'candidate' file 'x.onnx' does not exist", hint="git add it")],
    )
    body = render_markdown(result)
    assert "### What to fix" in body and "x.onnx" in body and "git add it" in body


@pytest.mark.parametrize("text", ["- list", "1. numbered", "# heading", "a|b", "`code`", "_x_", "@someone"])
def test_md_escape_leaves_no_markup(text: str) -> None:
    escaped = md(text)
    assert escaped != text


def test_written_result_matches_the_committed_schema(tmp_path: Path) -> None:
    committed = Path(__file__).resolve().parent.parent / "schemas" / "result.schema.json"
    assert committed.read_text() == json_schema(), "run: grader schema --write schemas/result.schema.json"
    paths = write_reports(make_result(), tmp_path)
    jsonschema.validate(json.loads(paths["result"].read_text()), json.loads(committed.read_text()))
    assert Result.load(paths["result"]).score == 35.0


def _pending_bonus_chart_result() -> Result:
    from grader.contracts.result import Chart, ChartPoint, ChartSeries

    chart = Chart(
        title="Pareto front",
        x_label="gzip_mb (minimize)",
        y_label="accuracy (maximize)",
        series=[
            ChartSeries(
                name="logged trials", table=False, points=[ChartPoint(x=0.02, y=0.97), ChartPoint(x=0.01, y=0.5)]
            ),
            ChartSeries(name="Pareto front", points=[ChartPoint(x=0.02, y=0.97, label="#0")]),
            ChartSeries(name=HOSTILE[:60], points=[ChartPoint(x=0.0065, y=0.96, label="#3")]),
        ],
    )
    checks = [
        CheckResult(
            id="parity", title="Parity", status=CheckStatus.PASS, points=70, max_points=70, message="ok", chart=chart
        ),
        CheckResult(
            id="tensorrt",
            title="TensorRT",
            status=CheckStatus.SKIPPED,
            points=0,
            max_points=15,
            message="Pending: no CUDA device on this machine.",
            pending=True,
        ),
        CheckResult(
            id="beats_scratch",
            title="Bonus",
            status=CheckStatus.PASS,
            points=10,
            max_points=10,
            message="beats it",
            bonus=True,
        ),
    ]
    return make_result(checks=checks, score=80.0, max_score=70.0, bonus_points=10.0, pending_points=15.0)


def test_pending_and_bonus_points_are_explained_in_both_reports() -> None:
    result = _pending_bonus_chart_result()
    body = render_markdown(result)
    assert "15 point(s) pending" in body and "| ⏳ |" in body and "pending / 15" in body
    assert "Includes 10 bonus point(s)" in body and "· bonus" in body
    html = render_html(result)
    assert "⏳ pending" in html and "including 10 bonus" in html


def test_a_chart_is_a_table_in_the_comment_and_an_inert_image_in_the_html() -> None:
    result = _pending_bonus_chart_result()
    body = render_markdown(result)
    assert "| 0.02 | 0.97 | Pareto front: \\#0 |" in body
    assert "0.5 |" not in body  # the 'logged trials' series stays out of the comment's table
    assert "<script>" not in body
    html = render_html(result)
    match = re.search(r'<img alt="Pareto front" src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)">', html)
    assert match, "the chart is embedded as an <img> data URI (an SVG in <img> cannot run scripts)"
    import base64

    svg = base64.b64decode(match.group(1)).decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "<script" not in svg
    assert machine.decode(body)["checks"][0]["chart"] is None  # the hidden block stays small


def test_points_never_wrap_and_times_have_no_microseconds() -> None:
    from grader.report.render import render_html

    result = make_result()
    markdown = render_markdown(result)
    assert any("\u00a0/\u00a0" in line for line in markdown.splitlines() if line.startswith("| "))
    html = render_html(result)
    assert "white-space: nowrap" in html
    started = result.started_at.strftime("%Y-%m-%d %H:%M:%S")
    assert f"started {started}" in html and result.started_at.isoformat() not in html
