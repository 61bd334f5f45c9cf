"""The gradebook's HTML page, opened in headless Chromium (Selenium with the system's chromedriver):
the table renders, every plot decodes to a real image, student text stays text."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from grader.config.assignment import load_assignment
from grader.config.roster import Roster
from grader.gradebook.export import write_html
from grader.gradebook.table import build_gradebook
from grader.records.store import Store
from tests.results_builders import HW2, make_result

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")
HOSTILE_NAME = "<img src=x onerror=\"document.title='pwned'\">Eve"


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no headless Chromium here: apt-get install chromium chromium-driver (.ci/run does)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("html")
    deadline = load_assignment(HW2).policy.deadline_utc()
    teams = {
        f"team-{i:02d}": [{"github": f"student{i:02d}", "name": f"Student {i}", "student_id": f"S{i}"}]
        for i in range(12)
    }
    teams["team-eve"] = [{"github": "eve", "name": HOSTILE_NAME}]
    roster = Roster.model_validate({"teams": {t: {"members": m} for t, m in teams.items()}})
    results = []
    for i, team in enumerate(teams):
        for k in range(3):
            event = deadline - timedelta(hours=30 - 9 * k - i) if k < 2 else deadline + timedelta(hours=i + 1)
            results.append(
                make_result(
                    team,
                    score=50 + 3 * i + 5 * k,
                    event_time=event,
                    pr=i + 1,
                    metrics={
                        "candidate_vs_baseline.speedup_b64": 1.2 + 0.15 * i + 0.1 * k,
                        "candidate.accuracy": 0.99 - 0.004 * i,
                    },
                )
            )
    with Store(folder / "g.sqlite") as store:
        store.add_runs([(r, "test") for r in results])
        book = build_gradebook(
            store.runs_frame(with_metrics=True),
            [load_assignment(HW2)],
            roster,
            store.overrides_frame(),
            store.extensions_frame(),
        )
    return write_html(book, folder / "gradebook.html")


def test_page_is_self_contained(page: Path) -> None:
    html = page.read_text()
    assert "http://" not in html.replace("http-equiv", "")  # no outside resources (links to GitHub are https)
    assert html.count('src="data:image/png;base64,') == 3 and "<script" not in html


def test_chromium_renders_the_table_and_the_plots(browser, page: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    assert browser.title == "Gradebook"
    rows = browser.find_elements(By.CSS_SELECTOR, "table#grades tr")
    assert len(rows) == 1 + 13  # header + one per student
    assert "Student 3" in browser.find_element(By.ID, "grades").text
    images = browser.find_elements(By.CSS_SELECTOR, "figure img")
    assert len(images) == 3
    for image in images:
        width, height = browser.execute_script(
            "return arguments[0].complete ? [arguments[0].naturalWidth, arguments[0].naturalHeight] : [0, 0]", image
        )
        assert width > 300 and height > 150, image.get_attribute("alt")
        assert image.size["width"] > 300  # laid out, not collapsed
    captions = [f.text for f in browser.find_elements(By.TAG_NAME, "figcaption")]
    assert captions[:2] == ["Score distribution per assignment", "Submissions over time against the deadline"]
    assert "vs speedup at batch 64" in captions[2]
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.leaderboard tr")) == 1 + 13
    assert len(browser.find_elements(By.CSS_SELECTOR, "details[id^=team-]")) == 13
    browser.save_screenshot(str(page.with_suffix(".png")))


def test_student_text_stays_text(browser, page: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    assert browser.title == "Gradebook"  # the onerror handler never ran
    assert len(browser.find_elements(By.CSS_SELECTOR, "table#grades img")) == 0
    assert HOSTILE_NAME in browser.find_element(By.ID, "grades").text


def test_team_runs_link_to_their_prs(browser, page: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    team = browser.find_element(By.ID, "team-team-03")
    team.find_element(By.TAG_NAME, "summary").click()
    links = [a.get_attribute("href") for a in team.find_elements(By.CSS_SELECTOR, "a") if a.text.startswith("#")]
    assert links == ["https://github.com/course/compression-2026/pull/4"] * 3
    assert len(team.find_elements(By.CSS_SELECTOR, "tr.counted")) == 1
