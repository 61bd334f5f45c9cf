"""Every kind of report as a person sees it: the PR comment rendered as GitHub renders Markdown (a
CommonMark renderer with GFM tables, raw HTML such as <details> passed through as GitHub's
sanitiser keeps it), and report.html, both opened in headless Chromium at a comment's width, for a
full-marks, a partial, a rejected and an error run. What is asserted is what a person sees: the
verdict and its points, no element wider than the page, no raw figure key in a table meant for
people, no block of nulls. Screenshots are written to ``$REPORT_SCREENSHOTS`` where it is set (to
look at them)."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from grader.ci.artifact import Expected
from grader.ci.event import PullRequestEvent, RunInfo
from grader.ci.flows import unavailable_result
from grader.config.assignment import load_assignment
from grader.contracts.result import Result
from grader.report.render import render_html, render_markdown
from tests import builders
from tests.grading import grade
from tests.test_gradebook_html import browser  # noqa: F401  (the headless Chromium fixture)

ROOT = Path(__file__).resolve().parent.parent
HW2 = "hw2-quantization-pruning"
WIDTH = 900  # about the width GitHub gives a PR comment
# a figure's or evidence's key (peak_rss_mb, speedup_b64, size_ratio), not an API name in a hint that
# shows how to call it (weight_type=QuantType.QInt8, quantize_static(...))
SNAKE_KEY = re.compile(r"\b[a-z]+(?:_[a-z0-9]+)+\b(?![=(])")


@pytest.fixture(scope="module")
def results(tiny_models, fast_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Result]:
    work = tmp_path_factory.mktemp("reports")
    full = grade(ROOT / "reference" / "solutions" / HW2, fast_root).result
    partial_folder = builders.submission(
        work / "partial",
        {"baseline": tiny_models["baseline"], "candidate": tiny_models["pruned30"]},
        tiny_models["inputs"],
        claims={"quantization": "int8", "sparsity": 0.6},
    )
    partial = grade(partial_folder, fast_root).result
    rejected_folder = work / "submissions" / "team-alpha" / HW2  # where a student's folder lies
    rejected_folder.mkdir(parents=True)
    (rejected_folder / "submission.yaml").write_text(f"schema: 1\nassignment: {HW2}\nteam: team-alpha\nmodels: [oops\n")
    rejected = grade(rejected_folder, fast_root).result
    event = PullRequestEvent(
        name="pull_request_target",
        action="synchronize",
        repository="course/grading",
        pr_number=4,
        head_sha="d" * 40,
        head_repository="octocat/grading",
        author="octocat",
        author_association="CONTRIBUTOR",
        event_time=datetime(2026, 12, 1, 12, tzinfo=timezone.utc),
    )
    expected = Expected("course/grading", 4, "d" * 40, 9, "team-alpha", HW2)
    error = unavailable_result(
        event, RunInfo(run_id=9), expected, load_assignment(HW2), "the grading job uploaded no result.json", "failure"
    )
    found = {"full": full, "partial": partial, "rejected": rejected, "error": error}
    assert (full.status, full.score) == ("graded", full.max_score), full.problems
    assert partial.status == "graded" and 0 < partial.score < partial.max_score
    assert rejected.status == "rejected" and error.status == "error"
    return found


def github_markdown(text: str) -> str:
    """The comment as GitHub shows it: CommonMark + GFM tables and strikethrough, raw HTML kept."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(text)
    style = "body{font:14px -apple-system,Segoe UI,sans-serif;margin:16px}table{border-collapse:collapse}"
    style += "td,th{border:1px solid #d0d7de;padding:6px 13px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>{body}</body></html>"


def open_page(driver, path: Path) -> dict:
    driver.set_window_size(WIDTH, 1600)
    driver.get(path.as_uri())
    return driver.execute_script(
        """
        const cells = [...document.querySelectorAll('table')]
          .filter(t => !t.closest('details'))
          .map(t => [...t.querySelectorAll('tr')].map(r => {
            let seen = r.innerText;  // what shows; code in a fix hint (weight_type=...) is code, not a key
            r.querySelectorAll('code').forEach(c => { seen = seen.replace(c.innerText, ''); });
            return seen;
          }));
        const wide = [...document.body.querySelectorAll('*')]
          .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
          .map(e => e.tagName + ': ' + e.innerText.slice(0, 60));
        return {text: document.body.innerText, tables: cells, wide: wide,
                pageWidth: document.documentElement.scrollWidth, viewWidth: document.documentElement.clientWidth};
        """
    )


@pytest.mark.parametrize("kind", ["full", "partial", "rejected", "error"])
@pytest.mark.parametrize("form", ["comment", "html"])
def test_a_person_reads_every_report_kind_in_a_browser(browser, results, kind: str, form: str, tmp_path) -> None:  # noqa: F811
    result = results[kind]
    page = tmp_path / f"{kind}-{form}.html"
    page.write_text(github_markdown(render_markdown(result)) if form == "comment" else render_html(result))
    seen = open_page(browser, page)
    shots = os.environ.get("REPORT_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(shots) / f"{kind}-{form}.png"))
    text = seen["text"]
    assert seen["pageWidth"] <= seen["viewWidth"] + 1 and not seen["wide"], seen["wide"][:5]
    assert "null" not in text.split() and "None" not in text.split()
    raw = sorted({k for table in seen["tables"] for row in table for k in SNAKE_KEY.findall(row)})
    assert not raw, f"raw keys in the tables people read: {raw}"
    if kind in ("full", "partial"):
        assert f"{result.score:g}\N{NO-BREAK SPACE}/\N{NO-BREAK SPACE}{result.max_score:g}" in text or (
            f"{result.score:g} / {result.max_score:g}" in text
        )
    if kind == "rejected":
        assert "submission.yaml" in text and "fix" in text.lower()
        assert HW2 in text and "team-alpha" in text and "unknown" not in text  # the heading names what it meant
        assert "/\N{NO-BREAK SPACE}100" in text or "/ 100" in text  # out of the assignment's points, not 0 / 0
        assert text.count(result.problems[0].message[:40]) == 1  # said once, not in every check row
    if kind == "error":
        assert "not charged to you" in text
