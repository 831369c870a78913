"""The compare page with many runs, in headless Chromium: 30 runs in 3 groups over 10 metric keys.

Colours by group (one hue per group, a shade per run), the raw layer off above 10 runs, grouping
offered first, the legend in a bounded box with the first chart above the fold, charts below the
fold drawn only once scrolled into view, a smoothing step and a legend click restyling the drawn
lines in place (same lines, no new plot: the canvas layer repaints), hover naming the run under
the cursor, and the grouped view drawing each group's mean and band
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
        """sel => (document.querySelector(sel).orlabLines || []).map(t => ({
               kind: (t.meta || {}).kind, runs: (t.meta || {}).runs, color: t.line && t.line.color,
               visible: t.visible !== false, y: Array.from(t.y || []).map(v => v === null ? null : Number(v)) }))""",
        plot(key),
    )


def hsl(color: str) -> tuple[float, float, float]:
    h, s, lightness = (float(x) for x in re.findall(r"[\d.]+", color)[:3])
    return h, s, lightness


# Where point j of line i of a chart is on the page (client pixels), on the axes as plotly drew them.
POINT_AT = """([sel, i, j]) => { const p = document.querySelector(sel); const t = p.orlabLines[i];
  const xa = p._fullLayout.xaxis, ya = p._fullLayout.yaxis, r = p.getBoundingClientRect();
  return [r.left + xa._offset + xa.l2p(t.x[j]), r.top + ya._offset + ya.l2p(t.y[j])]; }"""


def paints(page, key: str) -> int:
    return int(page.get_attribute(plot(key), "data-paints") or 0)


# The point of line i (between steps lo and hi) farthest in pixels from every other visible line's
# points: where the mouse names line i and no neighbour 1 px away.
ISOLATED = """([sel, i, lo, hi]) => { const p = document.querySelector(sel); const ls = p.orlabLines;
  const xa = p._fullLayout.xaxis, ya = p._fullLayout.yaxis;
  const px = (t, j) => [xa.l2p(t.x[j]), ya.l2p(t.y[j])];
  let best = lo, gap = -1;
  for (let j = lo; j < hi; j++) {
    const [x, y] = px(ls[i], j);
    let d = Infinity;
    ls.forEach((t, k) => { if (k === i || t.visible === false) return;
      for (let m = Math.max(0, j - 3); m < Math.min(t.x.length, j + 4); m++) {
        const [u, v] = px(t, m); d = Math.min(d, Math.hypot(u - x, v - y)); } });
    if (d > gap) { gap = d; best = j; }
  }
  return best; }"""


def hover_title(page, key: str, line: int, lo: int, hi: int) -> str | None:
    """The tooltip's first line with the mouse on line `line`'s most isolated point between steps lo
    and hi (None: no tooltip)."""
    point = page.evaluate(ISOLATED, [plot(key), line, lo, hi])
    x, y = page.evaluate(POINT_AT, [plot(key), line, point])
    page.mouse.move(x, y)
    tip = f'{plot(key)} [data-testid="chart-hover"]'
    page.wait_for_timeout(100)
    return page.inner_text(tip).split("\n")[0] if page.is_visible(tip) else None


def ema_of(values, weight: float) -> list[float]:
    out, acc = [], 0.0
    for n, v in enumerate(values, start=1):
        acc = weight * acc + (1 - weight) * v
        out.append(acc / (1 - weight**n))
    return out


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

    # a smoothing step changes the drawn lines in place: same lines, no new plot (plotly does
    # nothing), no new request; only the canvas is painted again
    page.evaluate(f"document.querySelector('{plot(first)} [data-testid=chart-canvas]').dataset.mark = 'kept'")
    before, painted = draws(page, first), paints(page, first)
    series_requests.clear()
    page.evaluate("""() => { const s = document.getElementById('smooth'); s.value = '0.9';
                             s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }""")
    wait_for(lambda: traces(page, first)[0]["y"] != drawn[0]["y"], timeout=15, message="smoother curves")
    after = traces(page, first)
    assert len(after) == len(drawn) and [t["kind"] for t in after] == ["smoothed"] * RUNS
    assert draws(page, first) == before and paints(page, first) > painted
    assert (
        page.evaluate(f"document.querySelector('{plot(first)} [data-testid=chart-canvas]').dataset.mark")
        == "kept"
    )
    assert int(page.get_attribute(plot(first), "data-fast-restyles") or 0) >= 1
    # the smoothed values are the debiased EMA (weight 0.9) of the run's logged points
    assert (
        np.allclose(after[0]["y"], ema_of(loss[after[0]["runs"][0]], 0.9), rtol=1e-9) and not series_requests
    )
    # hover names the run under the cursor
    names = {r.id: r.name for r in runs}
    assert hover_title(page, first, 1, 10, 110) == names[after[1]["runs"][0]]

    # a legend click hides that run's line everywhere, again in place; hover skips it
    page.locator('[data-testid="legend-item"]').nth(1).click()
    wait_for(lambda: not traces(page, first)[1]["visible"], timeout=15, message="the hidden run")
    assert len(traces(page, first)) == RUNS and draws(page, first) == before
    assert "hide=" in page.url
    assert hover_title(page, first, 1, 10, 110) != names[after[1]["runs"][0]]
    # smoothing while hidden, then shown again: the line is at the current smoothing
    page.evaluate("""() => { const s = document.getElementById('smooth'); s.value = '0.8';
                             s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }""")
    wait_for(
        lambda: page.get_attribute(plot(first), "data-smooth") == "0.8", timeout=15, message="smoothing 0.8"
    )
    page.locator('[data-testid="legend-item"]').nth(1).click()
    wait_for(lambda: traces(page, first)[1]["visible"], timeout=15, message="the run shown again")
    shown = traces(page, first)[1]
    assert np.allclose(shown["y"], ema_of(loss[shown["runs"][0]], 0.8), rtol=1e-9)
    assert draws(page, first) == before
    # plotly's own redraw (a zoom) paints the canvas again on the new axes
    painted = paints(page, first)
    page.evaluate(f"Plotly.relayout(document.querySelector('{plot(first)}'), {{'xaxis.range': [0, 30]}})")
    wait_for(lambda: paints(page, first) > painted, timeout=10, message="a paint after the zoom")
    assert hover_title(page, first, 1, 2, 28) == names[shown["runs"][0]]
    # a pan drag: the canvas follows plotly's axes while the mouse moves, before the button is up
    page.evaluate(f"Plotly.relayout(document.querySelector('{plot(first)}'), {{dragmode: 'pan'}})")
    x, y = page.evaluate(POINT_AT, [plot(first), 1, 15])
    page.wait_for_timeout(300)
    painted = paints(page, first)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 60, y, steps=4)
    lo = f"document.querySelector('{plot(first)}')._fullLayout.xaxis.range[0]"
    wait_for(lambda: page.evaluate(lo) > 0 and paints(page, first) > painted, timeout=10,
             message="the axis panned and the canvas painted, the button still down")  # fmt: skip
    page.mouse.up()
    page.evaluate(f"Plotly.relayout(document.querySelector('{plot(first)}'), {{'xaxis.autorange': true}})")
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
