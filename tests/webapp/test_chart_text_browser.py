"""Issue 11 (item 9): metric keys and run names are plain text in the Plotly charts. Plotly renders a
little HTML in trace names, titles and axis labels; a key ``<a href=...>`` became a link on the compare
page. Headless Chromium draws the compare and run charts of such a run; no link, the text verbatim."""

from __future__ import annotations

import re

import pytest

from tests.ui.conftest import browser  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow

KEY = '<a href="https://evil.example/">click</a>'
NAME = "<b>bold</b> run"


@pytest.fixture
def hostile_run(live_server, alice, project):
    from webapp.runs import services
    from webapp.runs.metric_store import Columns, metrics_record

    run = services.run_create(user=alice, project=project, name=NAME, kind="external", config={})
    steps = list(range(20))
    metrics_record(run.id, {KEY: Columns.of(steps, [s / 10 for s in steps], [1.7e9 + s for s in steps])})
    return run


def test_metric_keys_and_run_names_are_text_in_charts(live_server, hostile_run, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(20_000)
    path = f"/compare/?runs={hostile_run.id}&key=" + re.sub(
        "[^A-Za-z0-9]", lambda m: f"%{ord(m[0]):02X}", KEY
    )
    page.goto(f"{live_server.url}{path}")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click('[data-testid="login-submit"]')
    page.wait_for_url(re.compile(r"/compare/"))
    chart = page.locator('[data-testid="compare-chart"] .main-svg').first
    chart.wait_for()
    page.wait_for_function("document.querySelector('[data-testid=compare-chart] .ytitle') !== null")
    assert page.locator('[data-testid="compare-chart"] .ytitle').first.text_content() == KEY
    assert page.locator('[data-testid="compare-chart"] a').count() == 0

    page.goto(f"{live_server.url}/runs/{hostile_run.id}/")
    page.wait_for_function("document.querySelector('.js-plotly-plot .scatterlayer .trace') !== null")
    names = page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot')].flatMap((p) => (p.data || []).map((t) => t.name))"
    )
    assert names and all("<" not in n for n in names if n), names
    assert page.locator(".js-plotly-plot a[href*='evil']").count() == 0
    assert not errors, errors
