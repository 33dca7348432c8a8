"""The monitor in a real browser: Debian's chromium, headless, driven by Playwright.

Each test fails on a console error or an uncaught page error, and on any dialog (an alert
would mean text from the database ran as script). Screenshots of every page go to the
artifacts folder printed at the end of the session; with PIPETRACK_TEST_UPDATE_SCREENSHOT=1 the
Now page's also replaces docs/monitor-now.png, the README's screenshot.
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.monitor_support import (
    BROWSER_ARGS,
    CRITICAL,
    FAILED,
    HOSTILE,
    HOSTILE_RUN,
    RUNNING,
    artifacts_dir,
    chromium_or_skip,
    seed_pipeline,
    served_monitor,
)
from tests.tracker_support import child_env, start_script

pytestmark = pytest.mark.browser

README_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "monitor-now.png"
DEADLINE_MS = 20_000  # generous: a busy 2-core machine; the design bound is 1.5 s


@pytest.fixture(scope="module")
def browser():
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser):
    """A fresh page that records console errors, page errors and dialogs."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    problems: list[str] = []
    opened.on(
        "console",
        lambda m: (
            problems.append(f"console {m.type}: {m.text}")
            if m.type in ("error", "warning")
            else None
        ),
    )
    opened.on("pageerror", lambda e: problems.append(f"page error: {e}"))

    def refuse(dialog):
        problems.append(f"dialog {dialog.type}: {dialog.message}")
        dialog.dismiss()

    opened.on("dialog", refuse)
    opened.problems = problems
    try:
        yield opened
    finally:
        context.close()
    assert problems == []


def shoot(page, name):
    folder = artifacts_dir()
    path = folder / f"monitor-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def seeded_base(db, db_dsn):
    seed_pipeline(db)
    with served_monitor(db_dsn, jaeger="http://127.0.0.1:16686") as base:
        yield base


def test_each_page_draws_the_seeded_pipeline_and_is_captured(page, seeded_base):
    page.goto(seeded_base + "/now")
    row = page.locator("tr[data-task='DAILY_01_extract']")
    row.wait_for(timeout=DEADLINE_MS)
    assert "RUNNING" in row.inner_text()
    assert "1/2 load (4/10)" in row.inner_text()
    assert "LOST" in page.locator("tr[data-task='PERIODIC_02_silent']").inner_text()
    assert "OVERDUE" in page.locator("tr[data-task='ANNUAL_DEC_01_report']").inner_text()
    assert page.locator("section.stage h2").all_inner_texts()[:3] == ["STATIC", "PREREQ", "DAILY"]
    now = shoot(page, "now")
    if os.environ.get("PIPETRACK_TEST_UPDATE_SCREENSHOT") == "1":
        shutil.copyfile(now, README_SCREENSHOT)

    page.goto(f"{seeded_base}/run/{RUNNING}")
    page.locator("#gantt table").wait_for(timeout=DEADLINE_MS)
    assert page.locator("#gantt .span").count() == 1
    assert page.locator("#related a", has_text="in Jaeger").get_attribute("href") == (
        "http://127.0.0.1:16686/trace/0123456789abcdef0123456789abcdef"
    )
    assert "****" in page.locator("#environment").inner_text()
    assert "hunter2" not in page.content()
    shoot(page, "run")

    page.goto(f"{seeded_base}/run/{FAILED}")
    page.locator("#error-detail").wait_for(timeout=DEADLINE_MS)
    assert "Traceback (most recent call last):" in page.locator("#error-detail").inner_text()
    shoot(page, "run-failed")

    page.goto(f"{seeded_base}/task/DAILY_01_extract")
    page.locator("#runs table").wait_for(timeout=DEADLINE_MS)
    assert page.locator("#runs tbody tr").count() == 3
    assert page.locator("#durations-chart canvas").count() == 1  # uPlot drew the chart
    assert page.locator("#bottlenecks tbody tr").first.inner_text().startswith("load")
    shoot(page, "task")

    page.goto(f"{seeded_base}/failures")
    page.locator("#groups table").wait_for(timeout=DEADLINE_MS)
    assert "disk full after N rows" in page.locator("#groups").inner_text()
    shoot(page, "failures")


def test_the_dependencies_page_draws_the_graph_and_marks_the_critical_path(page, seeded_base):
    page.goto(seeded_base + "/dependencies")
    page.locator("#graph svg").wait_for(timeout=DEADLINE_MS)
    drawn = page.locator("#graph g.node").evaluate_all("nodes => nodes.map(n => n.dataset.task)")
    assert set(drawn) >= set(CRITICAL)
    marked = page.locator("#graph g.node.critical").evaluate_all(
        "nodes => nodes.map(n => n.dataset.task)"
    )
    assert sorted(marked) == sorted(CRITICAL)
    edges = page.locator("#graph path.edge.critical").evaluate_all(
        "paths => paths.map(p => [p.dataset.source, p.dataset.target])"
    )
    assert sorted(map(tuple, edges)) == sorted(itertools.pairwise(CRITICAL))
    assert page.locator("#graph path.edge").count() == 4
    assert "DAILY_04_publish" in page.locator("#summary").inner_text()
    shoot(page, "dependencies")


def test_hostile_text_renders_as_text_on_every_page(page, seeded_base):
    task = "DAILY_09_" + HOSTILE
    for path in (
        "/now",
        f"/run/{HOSTILE_RUN}",
        "/task/" + quote(task, safe=""),
        "/failures",
        "/now?task=" + quote(HOSTILE, safe=""),
    ):
        page.goto(seeded_base + path)
        page.wait_for_load_state("load")
        page.locator("main").wait_for()
        page.wait_for_timeout(300)  # the first draw is synchronous; let any stray script run
        assert page.locator("img").count() == 0
        assert page.evaluate("document.querySelectorAll('main script').length") == 0
    page.goto(seeded_base + "/now")
    assert page.locator(f"tr[data-task='DAILY_09_{HOSTILE[:8]}']").count() == 0  # no such key
    assert page.get_by_text(task, exact=True).count() == 1  # the name, shown as written
    page.goto(f"{seeded_base}/run/{HOSTILE_RUN}")
    page.locator("#error-detail").wait_for(timeout=DEADLINE_MS)
    assert page.locator("#error-detail").inner_text() == "Traceback " + HOSTILE
    assert page.locator("#run-title").inner_text() == "Run of " + task
    shoot(page, "hostile")


def test_empty_database_pages_draw_without_errors(page, db_dsn):
    with served_monitor(db_dsn) as base:
        for path in ("/now", "/dependencies", "/failures", "/task/NOTHING"):
            page.goto(base + path)
            page.locator("p.empty").first.wait_for(timeout=DEADLINE_MS)


def test_a_tracked_scripts_progress_shows_live_and_its_final_state_without_reload(
    page, db_dsn, tmp_path
):
    with served_monitor(db_dsn) as base:
        page.goto(base + "/now")
        page.locator("p.empty").wait_for(timeout=DEADLINE_MS)
        page.evaluate("window.__notReloaded = true")
        child = start_script(
            "monitor_live.py",
            child_env(db_dsn, tmp_path / "data", PIPETRACK_FLUSH_INTERVAL="0.5"),
            str(tmp_path),
        )
        try:
            row = page.locator("tr[data-task='DAILY_77_live']")
            row.filter(has_text="(3/10)").wait_for(timeout=DEADLINE_MS)
            seen = time.time()
            called = float((tmp_path / "advanced").read_text())
            print(f"progress shown {seen - called:.2f} s after the call")
            assert "RUNNING" in row.inner_text()
            assert "loading files" in row.inner_text()
            (tmp_path / "go").touch()
            row.filter(has_text="FINISHED").wait_for(timeout=DEADLINE_MS)
            assert child.wait(timeout=60) == 0
            assert "100.0%" in row.inner_text()
            assert page.evaluate("window.__notReloaded") is True
            shoot(page, "now-live")
        finally:
            # The page polls every second: it leaves before the server stops, or its next poll
            # meets a closed port (a console error) on a machine slow to tear the test down.
            page.goto("about:blank")
            if child.poll() is None:
                child.kill()
                child.wait(timeout=60)
            child.stdout.close()
            child.stderr.close()
