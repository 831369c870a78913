"""The runs table in headless Chromium at 1280 px (issue 16 point 3): 21 columns stay inside the
table's box (no sideways page scroll) with the name column sticky; long names and sweep groups are
cut with their full text in a title; the column chooser hides and reorders columns, a saved view
keeps that and restores it; the sweep view draws plotly parcoords of the group's differing config
keys against a metric; the best run per group is marked, or shown alone. Screenshots:
/tmp/orlab-runs-table-wide.png, /tmp/orlab-runs-parcoords.png, /tmp/orlab-runs-best.png."""

from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
import pytest

from tests.ui.test_browser import login
from tests.ui.test_runs_table import log, make

LONG_NAME = "ppo-qwen-0.5b-gsm8k-entropy-adaptive-target-0.2-lr-3e-6-kl-0.001-seed-0-" + "x" * 60
LONG_GROUP = "sweep-entropy-targets-and-learning-rates-on-gsm8k-with-qwen-0.5b-" + "y" * 40
METRICS = [f"eval/m{i}" for i in range(8)]
# 14 columns of values + the 7 base columns (name, status, kind, group, tags, started, duration) = 21
COLS = [
    "config:lr",
    "config:entropy.target",
    "metric:train/reward:last",
    "metric:train/reward:best_max",
    "metric:train/reward:mean_last_10",
    "config:seed",
    *[f"metric:{m}:last" for m in METRICS],
]


@pytest.fixture
def sweep_runs(live_server, alice, project):
    """A sweep of 6 runs over lr x entropy.target (group LONG_GROUP) and 2 runs of group "baseline";
    train/reward ends at a value set per run. Made before the browser starts."""
    grid = [(1e-6, 0.0), (1e-6, 0.2), (3e-6, 0.0), (3e-6, 0.2), (1e-5, 0.0), (1e-5, 0.2)]
    finals = [0.40, 0.55, 0.61, 0.72, 0.35, 0.50]  # best of the sweep: index 3 (0.72); lowest: 4
    runs = []
    for i, ((lr, target), final) in enumerate(zip(grid, finals, strict=True)):
        name = LONG_NAME if i == 0 else f"sweep-{i}"
        run = make(
            project, alice, name, {"lr": lr, "entropy": {"target": target}, "seed": 0, "model": "tiny"},
            group=LONG_GROUP, status="succeeded",
        )  # fmt: skip
        log(run, "train/reward", np.linspace(0.1, final, 30))
        for m in METRICS:
            log(run, m, np.linspace(0.0, final / 2, 5))
        runs.append(run)
    for i, final in enumerate((0.3, 0.45)):
        run = make(project, alice, f"base-{i}", {"lr": 1e-6, "seed": i}, group="baseline", status="succeeded")
        log(run, "train/reward", np.linspace(0.1, final, 30))
        runs.append(run)
    return runs


def _page(browser):
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(30_000)
    return page, errors


def _head_ids(page) -> list[str]:
    """The header's column ids after the checkbox and the name (base names and column specs)."""
    return page.eval_on_selector_all("table.runs thead th[data-col]", "els => els.map(e => e.dataset.col)")


@pytest.mark.slow
def test_wide_table_stays_in_its_box_with_a_sticky_name_and_titles(live_server, project, sweep_runs, browser):
    page, errors = _page(browser)
    query = urlencode([("col", c) for c in COLS])
    login(page, live_server.url, f"/projects/{project.pk}/?{query}")
    assert page.locator("table.runs thead th").count() == 1 + 21  # the checkbox, then 21 columns
    # the page never scrolls sideways; the table scrolls inside its box
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    box = page.locator(".table-card .table-scroll")
    assert box.evaluate("el => el.scrollWidth > el.clientWidth")
    page.screenshot(path="/tmp/orlab-runs-table-wide.png", full_page=True)

    # scrolled to its right end: the name column stays where it was, the status column moved away
    first = 'tr[data-testid="run-row"]'
    name_left = page.locator(f"{first} td.name").first.evaluate("el => el.getBoundingClientRect().left")
    status_left = page.locator(f"{first} td:nth-child(3)").first.evaluate(
        "el => el.getBoundingClientRect().left"
    )
    box.evaluate("el => { el.scrollLeft = el.scrollWidth; }")
    page.wait_for_timeout(100)
    name_after = page.locator(f"{first} td.name").first.evaluate("el => el.getBoundingClientRect().left")
    status_after = page.locator(f"{first} td:nth-child(3)").first.evaluate(
        "el => el.getBoundingClientRect().left"
    )
    assert abs(name_after - name_left) < 1 and status_after < status_left - 100
    assert page.locator(f"{first} td.name").first.evaluate("el => getComputedStyle(el).position") == "sticky"

    # a long name and a long group: cut to one line, the full text in the title
    link = page.locator(f'a[data-testid="run-link"][title="{LONG_NAME}"]')
    assert link.text_content() == LONG_NAME
    assert link.evaluate("el => el.scrollWidth > el.clientWidth")  # shown with an ellipsis
    group = page.locator(f'a[data-testid="run-group"][title="{LONG_GROUP}"]').first
    assert group.evaluate("el => el.scrollWidth > el.clientWidth && el.getClientRects().length === 1")
    assert not errors, errors


@pytest.mark.slow
def test_the_column_chooser_is_saved_in_a_view_and_restored(live_server, project, sweep_runs, browser):
    page, errors = _page(browser)
    query = urlencode([("col", c) for c in COLS[:3]])
    login(page, live_server.url, f"/projects/{project.pk}/?{query}")
    default = ["status", "kind", "group", "tags", "started", "duration", *COLS[:3]]
    assert _head_ids(page) == default

    page.click('[data-testid="column-chooser"] summary')
    item = lambda col: f'[data-testid="chooser-item"][data-col="{col}"]'  # noqa: E731
    page.uncheck(f"{item('kind')} input[type=checkbox]")
    page.uncheck(f"{item('tags')} input[type=checkbox]")
    for _ in range(3):  # config:lr up past duration, started and tags
        page.click(f'{item("config:lr")} button[data-move="-1"]')
    for _ in range(2):  # status below kind and group
        page.click(f'{item("status")} button[data-move="1"]')
    page.click('[data-testid="chooser-apply"]')
    page.wait_for_url("**show=**")
    wanted = ["group", "status", "config:lr", "started", "duration", *COLS[1:3]]
    assert _head_ids(page) == wanted
    # the rows follow the header: the lr cell sits under its heading
    heads = page.eval_on_selector_all("table.runs thead th", "els => els.map(e => e.textContent.trim())")
    lr_index = next(i for i, h in enumerate(heads) if h.startswith("lr"))
    row = page.locator(f'tr[data-run-id="{sweep_runs[2].id}"] td').nth(lr_index)
    assert row.text_content() == "3e-06"

    page.fill('[data-testid="view-name"]', "compact")
    page.click('[data-testid="save-view"]')
    page.wait_for_selector('.chip.active [data-testid="saved-view"]')
    page.goto(f"{live_server.url}/projects/{project.pk}/")  # the plain page: every column again
    assert "kind" in _head_ids(page)
    page.click('[data-testid="saved-view"]:text("compact")')
    page.wait_for_url("**show=**")
    assert _head_ids(page) == wanted
    # the chooser lists the hidden ones, unticked, after the shown ones
    ticked = page.eval_on_selector_all(
        '[data-testid="chooser-item"]',
        "els => els.map(e => [e.dataset.col, e.querySelector('input').checked])",
    )
    assert ticked == [[c, True] for c in wanted] + [["kind", False], ["tags", False]]
    assert not errors, errors


@pytest.mark.slow
def test_parcoords_of_a_sweep_and_the_best_run_per_group(live_server, project, sweep_runs, browser):
    page, errors = _page(browser)
    login(page, live_server.url, f"/projects/{project.pk}/?{urlencode({'group': LONG_GROUP})}")
    page.click('[data-testid="parcoords-panel"] summary')
    page.fill('[data-testid="pc-metric"]', "train/reward")
    page.click('[data-testid="pc-draw"]')
    page.wait_for_selector("#pc-plot .parcoords")
    axes = page.get_attribute('[data-testid="pc-plot"]', "data-axes").split("\n")
    # seed and model are the same in every run; lr spans a factor of 10: a log axis at its values
    assert axes == ["entropy.target", "lr (log)", "train/reward · last"]
    titles = page.eval_on_selector_all("#pc-plot .axis-title", "els => els.map(e => e.textContent)")
    assert sorted(titles) == sorted(axes)
    ticks = page.eval_on_selector_all("#pc-plot .tick text", "els => els.map(e => e.textContent)")
    assert {"1e-6", "3e-6", "1e-5"} <= set(ticks)
    assert "6 runs, 6 with train/reward" in page.text_content('[data-testid="pc-status"]')
    page.locator("#parcoords").scroll_into_view_if_needed()
    page.screenshot(path="/tmp/orlab-runs-parcoords.png", full_page=True)

    # best per group by the last reward, highest: one mark per group
    page.goto(f"{live_server.url}/projects/{project.pk}/?col=metric%3Atrain%2Freward%3Alast")
    page.select_option('[data-testid="best-col"]', "metric:train/reward:last")
    page.select_option('[data-testid="best-dir"]', "max")
    page.click('[data-testid="filter-submit"]')
    page.wait_for_url("**best=**")
    marked = page.eval_on_selector_all('tr[data-best="1"]', "els => els.map(e => +e.dataset.runId)")
    assert sorted(marked) == sorted([sweep_runs[3].id, sweep_runs[7].id])
    assert page.locator('[data-testid="run-row"]').count() == 8
    assert page.locator(f'tr[data-run-id="{sweep_runs[3].id}"] [data-testid="best-mark"]').is_visible()
    # lowest, and only the best runs
    page.select_option('[data-testid="best-dir"]', "min")
    page.check('[data-testid="best-only"]')
    page.click('[data-testid="filter-submit"]')
    page.wait_for_url("**best_only=true**")
    shown = page.eval_on_selector_all('[data-testid="run-row"]', "els => els.map(e => +e.dataset.runId)")
    assert sorted(shown) == sorted([sweep_runs[4].id, sweep_runs[6].id])
    page.screenshot(path="/tmp/orlab-runs-best.png", full_page=True)
    assert not errors, errors
