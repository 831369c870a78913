"""The compare page with many runs, in headless Chromium: 30 runs in 3 groups over 10 metric keys.

Colours by group (one hue per group, a shade per run), the raw layer off above 10 runs, grouping
offered first, the legend in a bounded box with the first chart above the fold, charts below the
fold drawn only once scrolled into view, a smoothing step and a legend click restyling the drawn
plots in place (same traces, no new plot), and the grouped view drawing each group's mean and band
from the server's aggregate (GET /api/compare/groups/). Screenshot: /tmp/orlab-cmp-many.png."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.conftest import wait_for
from tests.ui.test_compare_browser import login, new_page

RUNS = 30
GROUPS = ("alpha", "beta", "gamma")
KEYS = [f"m/k{i}" for i in range(10)]
STEPS = 120


@pytest.fixture
def many(alice, project):
    from webapp.runs import services
    from webapp.runs.metric_store import Columns, metrics_record
    from webapp.runs.models import Run

    rng = np.random.default_rng(3)
    runs, loss = [], {}
    steps = np.arange(STEPS)
    for i in range(RUNS):
        group = GROUPS[i % 3]
        run = services.run_create(
            user=alice, project=project, name=f"run-{i}", kind="external",
            config={"lr": 10.0 ** -(4 + i % 3), "seed": i // 3}, group=group,
        )  # fmt: skip
        values = {k: np.exp(-steps / (40 + 10 * (i % 3))) + 0.05 * rng.standard_normal(STEPS) for k in KEYS}
        metrics_record(run.id, {k: Columns.of(steps, v, 1.7e9 + steps) for k, v in values.items()})
        loss[run.id] = values[KEYS[0]]
        runs.append(run)
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(status="succeeded")
    return runs, loss


def plot(key: str) -> str:
    return f'[data-testid="compare-chart"][data-key="{key}"]'


def traces(page, key: str) -> list[dict]:
    return page.evaluate(
        """sel => (document.querySelector(sel).data || []).map(t => ({
               kind: (t.meta || {}).kind, runs: (t.meta || {}).runs, color: t.line && t.line.color,
               visible: t.visible !== false, y: Array.from(t.y || []).map(v => v === null ? null : Number(v)) }))""",
        plot(key),
    )


def hsl(color: str) -> tuple[float, float, float]:
    h, s, lightness = (float(x) for x in re.findall(r"[\d.]+", color)[:3])
    return h, s, lightness


# The SVG path plotly (or the fast path) drew for trace i of a chart.
PATH_D = """([sel, i]) => { const g = [...document.querySelectorAll(sel + ' .scatterlayer .trace')]
  .find(g => g.__data__[0].trace.index === i); return g ? g.querySelector('path.js-line').getAttribute('d') : null; }"""
# Every drawn point of every visible line: plotly's calcdata (what hover reads) holds the data's y.
CALC_MATCHES = """sel => { const p = document.querySelector(sel); return p.data.every((t, i) => t.visible === false ||
  p.calcdata[i].every((pt, j) => pt.y === undefined || Math.abs(pt.y - t.y[j]) < 1e-9)); }"""
HIDDEN_STATE = """([sel, i]) => { const p = document.querySelector(sel); const g = [...p.querySelectorAll('.scatterlayer .trace')]
  .find(g => g.__data__[0].trace.index === i); return { display: g.style.display, full: p._fullData[i].visible }; }"""


def draws(page, key: str) -> int:
    return int(page.get_attribute(plot(key), "data-draws") or 0)


@pytest.mark.slow
def test_thirty_runs_in_three_groups(live_server, project, many, browser):
    runs, loss = many
    errors: list[str] = []
    page = new_page(browser, errors)
    page.set_viewport_size({"width": 1400, "height": 900})
    group_requests: list[str] = []
    page.on("request", lambda r: group_requests.append(r.url) if "/api/compare/groups/" in r.url else None)
    series_requests: list[str] = []
    page.on("request", lambda r: series_requests.append(r.url) if "/api/compare/series/" in r.url else None)
    keys = "".join(f"&key={k}" for k in KEYS)
    login(page, live_server.url, f"/compare/?runs={','.join(str(r.id) for r in runs)}{keys}")
    first, last = KEYS[0], KEYS[-1]
    wait_for(lambda: draws(page, first) == 1, timeout=60, message="the first chart")

    # grouping is offered first, the legend scrolls in its box, the first chart is above the fold
    assert page.is_visible('[data-testid="group-hint"]')
    assert page.locator("#group-by").bounding_box()["y"] < page.locator("#key-select").bounding_box()["y"]
    legend = page.evaluate(
        "(() => { const l = document.getElementById('legend'); return [l.clientHeight, l.scrollHeight]; })()"
    )
    assert legend[0] < legend[1] and page.locator('[data-testid="legend-item"]').count() == RUNS
    assert page.locator(plot(first)).bounding_box()["y"] < 900

    # above 10 runs the raw layer is off: one smoothed curve per run
    drawn = traces(page, first)
    assert [t["kind"] for t in drawn] == ["smoothed"] * RUNS
    assert not page.is_checked('[data-testid="raw-toggle"]')

    # colours by group: one hue per group, a different shade for every run
    hue_of = {}
    for t in drawn:
        run = runs[[r.id for r in runs].index(t["runs"][0])]
        hue_of.setdefault(run.group, set()).add(hsl(t["color"])[0])
    assert all(len(h) == 1 for h in hue_of.values()) and len({h.pop() for h in hue_of.values()}) == 3
    assert len({t["color"] for t in drawn}) == RUNS

    # a smoothing step restyles the drawn curves in place: same traces, no new plot, no new request;
    # the fast path writes y into plotly's data, full data and calcdata (hover reads those) and
    # redraws only the lines' SVG paths
    page.evaluate(f"document.querySelector('{plot(first)} .main-svg').dataset.mark = 'kept'")
    before = draws(page, first)
    path_before = page.evaluate(PATH_D, [plot(first), 0])
    series_requests.clear()
    page.evaluate("""() => { const s = document.getElementById('smooth'); s.value = '0.9';
                             s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }""")
    wait_for(lambda: traces(page, first)[0]["y"] != drawn[0]["y"], timeout=15, message="smoother curves")
    after = traces(page, first)
    assert len(after) == len(drawn) and [t["kind"] for t in after] == ["smoothed"] * RUNS
    assert draws(page, first) == before
    assert page.evaluate(f"document.querySelector('{plot(first)} .main-svg').dataset.mark") == "kept"
    assert int(page.get_attribute(plot(first), "data-fast-restyles") or 0) >= 1
    assert page.evaluate(PATH_D, [plot(first), 0]) != path_before
    assert page.evaluate(CALC_MATCHES, plot(first))
    # the smoothed values are the debiased EMA (weight 0.9) of the run's logged points
    raw, ema, acc = loss[after[0]["runs"][0]], [], 0.0
    for n, v in enumerate(raw, start=1):
        acc = 0.9 * acc + 0.1 * v
        ema.append(acc / (1 - 0.9**n))
    assert np.allclose(after[0]["y"], ema, rtol=1e-9) and not series_requests

    # a legend click hides that run's curve everywhere, again in place (its line is not displayed
    # and its full trace is not visible, so hover skips it)
    page.locator('[data-testid="legend-item"]').nth(1).click()
    wait_for(lambda: not traces(page, first)[1]["visible"], timeout=15, message="the hidden run")
    assert len(traces(page, first)) == RUNS and draws(page, first) == before
    assert "hide=" in page.url
    assert page.evaluate(HIDDEN_STATE, [plot(first), 1]) == {"display": "none", "full": False}
    # smoothing while hidden, then shown again: the line is at the current smoothing
    page.evaluate("""() => { const s = document.getElementById('smooth'); s.value = '0.8';
                             s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }""")
    wait_for(
        lambda: page.get_attribute(plot(first), "data-smooth") == "0.8", timeout=15, message="smoothing 0.8"
    )
    page.locator('[data-testid="legend-item"]').nth(1).click()
    wait_for(lambda: traces(page, first)[1]["visible"], timeout=15, message="the run shown again")
    assert page.evaluate(HIDDEN_STATE, [plot(first), 1]) == {"display": "", "full": True}
    assert page.evaluate(CALC_MATCHES, plot(first)) and draws(page, first) == before
    # plotly's own redraw (a zoom) draws from the same state: the paths stay at the new smoothing
    smoothed_path = page.evaluate(PATH_D, [plot(first), 0])
    page.evaluate(
        f"Plotly.relayout(document.querySelector('{plot(first)}'), {{'xaxis.range': [0, {STEPS - 1}]}})"
    )
    assert page.evaluate(CALC_MATCHES, plot(first))
    assert page.evaluate(PATH_D, [plot(first), 0]).count("L") >= smoothed_path.count("L") // 2
    page.locator('[data-testid="legend-item"]').nth(1).click()
    wait_for(lambda: not traces(page, first)[1]["visible"], timeout=15, message="hidden again")
    assert not series_requests

    # the charts below the fold are drawn only once scrolled into view
    assert draws(page, last) == 0 and page.get_attribute(plot(last), "data-points") == "0"
    page.locator(plot(last)).scroll_into_view_if_needed()
    wait_for(lambda: draws(page, last) == 1, timeout=20, message="the last chart, scrolled into view")
    assert int(page.get_attribute(plot(last), "data-points")) == RUNS * STEPS
    page.evaluate("window.scrollTo(0, 0)")
    wait_for(
        lambda: page.locator(plot(first)).bounding_box()["y"] < 900, timeout=15, message="back at the top"
    )

    # grouped by the runs' group: each group's mean and min-max band, from the server
    page.select_option('[data-testid="group-by"]', "@group")
    wait_for(lambda: [t["kind"] for t in traces(page, first)] == ["min", "max", "mean"] * 3, timeout=30,
             message="three means with bands")  # fmt: skip
    assert group_requests and "groups=" in group_requests[-1]
    page.evaluate("""() => { const s = document.getElementById('smooth'); s.value = '0';
                             s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }""")
    wait_for(lambda: traces(page, first)[2]["y"][0] is not None and "smooth=0" in page.url, timeout=15,
             message="unsmoothed")  # fmt: skip

    def means_match() -> bool:
        got = traces(page, first)
        for gi, name in enumerate(GROUPS):
            expected = np.mean([loss[r.id] for r in runs if r.group == name], axis=0)
            t = got[3 * gi + 2]
            if len(t["y"]) != STEPS or not np.allclose(t["y"], expected, rtol=1e-6):
                return False
            if not all(
                lo <= m <= hi
                for lo, m, hi in zip(got[3 * gi]["y"], t["y"], got[3 * gi + 1]["y"], strict=True)
            ):
                return False
        return True

    wait_for(means_match, timeout=15, message="the group means as numpy computes them")
    group_hues = {hsl(t["color"])[0] for t in traces(page, first) if t["kind"] == "mean"}
    assert len(group_hues) == 3
    assert page.locator('[data-testid="legend-item"]').count() == 3
    page.screenshot(path="/tmp/orlab-cmp-many.png")
    assert not errors, errors
