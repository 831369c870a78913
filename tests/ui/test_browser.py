"""End to end in headless Chromium: log in, launch a tabular run from the form, watch its charts
grow live (served by a real Celery worker), and see it succeed. Screenshots of the launch form, the
run page, the runs list and the compare page go to /tmp/orlab-*.png."""

from __future__ import annotations

import re
import time

import pytest

from tests.conftest import wait_for

# A garnet MDP big enough that softmax PG takes several seconds in the worker (1-5 ms an iteration).
ITERATIONS = 40_000  # long enough (~10 s on a quiet box) for the page to see the run grow
STATES, ACTIONS = 100, 10


def points(page, key: str) -> int:
    return int(page.get_attribute(f'[data-testid="chart"][data-key="{key}"]', "data-points") or 0)


def status(page) -> str:
    return page.text_content('[data-testid="status-badge"]').strip()


def last_step_shown(page, key: str) -> int:
    return page.evaluate(
        """key => { const d = document.querySelector(`[data-testid="chart"][data-key="${key}"]`);
                    const x = d && d.data && d.data[0] ? d.data[0].x : [];
                    return x.length ? x[x.length - 1] : -1; }""",
        key,
    )


@pytest.mark.slow
def test_launch_and_watch_a_run_live(live_server, worker, alice, project, browser):
    # While Playwright runs, the test reads through the REST API (as alice, with the page's session)
    # rather than the ORM: an ORM call from inside Playwright's greenlet opens a second database
    # connection that outlives the test and blocks the test database's teardown.
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type in ("error", "warning") else None)
    page.set_default_timeout(20_000)

    # log in through the form
    page.goto(f"{live_server.url}/projects/{project.pk}/launch/")
    assert "/login/" in page.url
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click('[data-testid="login-submit"]')
    page.wait_for_url(re.compile(rf"/projects/{project.pk}/launch/"))

    # the tabular kind, a preset (JS fills the fields), then a bigger MDP and more iterations
    if page.input_value('[data-testid="kind-select"]') != "tabular":
        with page.expect_navigation():
            page.select_option('[data-testid="kind-select"]', "tabular")
    page.select_option('[data-testid="preset-select"]', "chain-softmax-pg")
    assert page.input_value('select[name="config.mdp:variant"]') == "named"
    page.select_option('[data-testid="preset-select"]', "softmax-pg-garnet")
    assert page.input_value('[name="config.method"]') == "softmax_pg"
    assert page.input_value('[name="config.iterations"]') == "5000"
    assert page.input_value('select[name="config.mdp:variant"]') == "garnet"
    assert page.is_visible('[name="config.mdp.states"]') and not page.is_visible('[name="config.mdp.P"]')
    assert "preset=softmax-pg-garnet" in page.url
    page.fill("#f-name", "browser-run")
    page.fill("#f-tags", "e2e, live")
    page.fill('[name="config.iterations"]', str(ITERATIONS))
    page.fill('[name="config.mdp.states"]', str(STATES))
    page.fill('[name="config.mdp.actions"]', str(ACTIONS))
    page.fill('[name="config.mdp.branching"]', "5")
    # a viewport screenshot: after a full-page one (the page is taller than the viewport since the
    # fleet panel lists every queue) Chromium dropped the next click on the submit button
    page.screenshot(path="/tmp/orlab-launch-form.png")
    page.click('[data-testid="launch-submit"]')
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    run_id = int(re.search(r"/runs/(\d+)/$", page.url).group(1))

    def api_run() -> dict:
        return page.request.get(f"{live_server.url}/api/runs/{run_id}/").json()

    run = api_run()
    assert run["name"] == "browser-run" and run["tags"] == ["e2e", "live"]
    assert run["config"]["mdp"]["states"] == STATES and run["config"]["iterations"] == ITERATIONS

    # the gap chart grows while the run is running, without a page reload
    page.evaluate("window.__no_reload = true")
    wait_for(
        lambda: points(page, "gap") > 0 and status(page) != "queued",
        timeout=60,
        message="the first points of gap",
    )
    n1 = points(page, "gap")
    assert status(page) == "running", "the run finished before the page saw it run; make it longer"
    time.sleep(1.5)
    n2 = points(page, "gap")
    assert n2 > n1, f"gap chart did not grow ({n1} -> {n2})"

    # latency: a point the worker has stored is on screen within 2 s
    stored = api_run()["last"]["gap"]["step"]
    t0 = time.monotonic()
    wait_for(
        lambda: last_step_shown(page, "gap") >= stored, timeout=10, interval=0.05, message="stored step shown"
    )
    latency = time.monotonic() - t0
    assert latency < 2.0, f"a stored point took {latency:.2f}s to reach the chart"

    page.screenshot(path="/tmp/orlab-run-page.png", full_page=True)

    # ... and finally succeeds: every step is on the chart, the buttons follow the status
    wait_for(lambda: status(page) == "succeeded", timeout=180, message="the run to succeed")
    wait_for(
        lambda: last_step_shown(page, "gap") == ITERATIONS, timeout=10, message="the last step on the chart"
    )
    assert page.evaluate("window.__no_reload") is True
    assert not page.is_visible('[data-testid="cancel-button"]')
    assert page.locator('[data-testid="chart-card"]').count() >= 4  # gap, value, entropy, ...
    wait_for(
        lambda: "checkpoint-" in page.inner_text('[data-testid="checkpoints-table"]'),
        timeout=10,
        message="checkpoints",
    )
    page.screenshot(path="/tmp/orlab-run-page-done.png", full_page=True)

    # the runs list shows it with its last values; compare it with itself
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    row = page.locator('[data-testid="run-row"]').first
    assert "succeeded" in row.inner_text().lower() and "browser-run" in row.inner_text()
    page.screenshot(path="/tmp/orlab-runs-list.png", full_page=True)
    page.check("input.run-select")
    page.click('[data-testid="compare-button"]')
    page.wait_for_url(re.compile(rf"/compare/\?runs={run_id}$"))
    wait_for(
        lambda: int(page.get_attribute('[data-testid="compare-chart"]', "data-points") or 0) > 0,
        timeout=20,
        message="the compare chart",
    )
    page.screenshot(path="/tmp/orlab-compare.png", full_page=True)
    assert not errors, errors


def login(page, base_url: str, next_path: str) -> None:
    page.goto(f"{base_url}{next_path}")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click('[data-testid="login-submit"]')
    page.wait_for_url(re.compile(re.escape(next_path.split("?")[0])))


@pytest.fixture
def external_runs(live_server, alice, project):
    """Three external runs (created running; no worker claims them), 50 points of "loss" each.
    Made in a fixture set up before the browser's: no ORM call while Playwright runs."""
    from webapp.runs import services
    from webapp.runs.metric_store import Columns, metrics_record

    runs = [
        services.run_create(user=alice, project=project, name=f"ext-{i}", kind="external", config={})
        for i in range(3)
    ]
    for i, run in enumerate(runs):
        metrics_record(
            run.id, {"loss": Columns.of(range(50), [1.0 / (k + 1 + i) for k in range(50)], [0.0] * 50)}
        )
    return runs


@pytest.mark.slow
def test_compare_updates_live_and_launch_errors_show_next_to_fields(
    live_server, project, external_runs, browser
):
    """External runs (fed through the API) make the compare page's live path testable without a
    worker; the launch form's server-side errors are checked in the browser."""
    runs = external_runs
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(20_000)
    ids = ",".join(str(r.id) for r in runs)
    login(page, live_server.url, f"/compare/?runs={ids}")

    chart = '[data-testid="compare-chart"]'
    wait_for(
        lambda: page.get_attribute(chart, "data-points") == "150", timeout=20, message="the compare chart"
    )
    assert page.input_value('[data-testid="key-select"]') == "loss"

    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    headers = {"X-CSRFToken": csrf, "Content-Type": "application/json"}
    points = [{"key": "loss", "step": 50 + k, "value": 0.01} for k in range(25)]
    response = page.request.post(
        f"{live_server.url}/api/runs/{runs[1].id}/metrics/", data=points, headers=headers
    )
    assert response.ok, response.text()
    wait_for(
        lambda: page.get_attribute(chart, "data-points") == "175",
        timeout=10,
        message="live points on compare",
    )
    page.screenshot(path="/tmp/orlab-compare-live.png", full_page=True)

    # the run finishes: its badge follows
    finish = page.request.post(
        f"{live_server.url}/api/runs/{runs[1].id}/finish/", data={"status": "succeeded"}, headers=headers
    )
    assert finish.ok, finish.text()
    badge = f'[data-run-status="{runs[1].id}"]'
    wait_for(lambda: page.text_content(badge).strip() == "succeeded", timeout=10, message="the compare badge")

    # the launch form: invalid values come back next to their fields, nothing is launched
    page.goto(f"{live_server.url}/projects/{project.pk}/launch/?kind=tabular&preset=npg-garnet")
    page.fill('[name="config.step_size"]', "-1")
    page.fill('fieldset[data-variant="garnet"] [name="config.mdp.gamma"]', "1.5")
    page.click('[data-testid="launch-submit"]')
    page.wait_for_selector('[data-testid="error-summary"]')
    step_error = page.text_content('[data-field="config.step_size"] .error')
    assert step_error == "Input should be greater than 0"
    gamma_error = page.locator('fieldset[data-variant="garnet"] [data-field="config.mdp.gamma"] .error')
    assert gamma_error.text_content() == "Input should be less than 1" and gamma_error.is_visible()
    page.screenshot(path="/tmp/orlab-launch-errors.png", full_page=True)
    # switching the variant shows the other fields; the JSON box gets the fields' config
    page.select_option('select[name="config.mdp:variant"]', "named")
    assert page.is_visible('select[name="config.mdp.name"]') and not page.is_visible(
        '[name="config.mdp.states"]'
    )
    page.click("#advanced summary")
    page.click("#copy-to-json")
    copied = page.input_value('[data-testid="config-json"]')
    assert '"kind": "named"' in copied and '"step_size": -1' in copied
    assert not errors, errors
