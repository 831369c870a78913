"""The run page at 40+ charts (issue 16 points 2, 6, 7) in headless Chromium: sections by key prefix
that collapse (remembered), a chart search, pins that survive a reload (stored per user per project),
a one-point series shown as a value, ECE/Brier/AUC on a calibration chart of their own, a learning
rate on a log axis (with its linear/log toggle), charts drawn only when scrolled into view, attempt
boundaries of a resumed run, PNG exports with a title and legend, and a CSV with the run's name.

Data is made in the fixture through the services before the browser starts; while Playwright runs,
the test reads through the pages and the API only."""

from __future__ import annotations

import csv
import io
import struct

import numpy as np
import pytest

from tests.conftest import wait_for
from tests.ui.test_run_page_browser import login, new_page
from webapp.runs.attempts import attempt_begin, attempt_end
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Checkpoint, Run

pytestmark = pytest.mark.django_db(transaction=True)

STEPS = 40
FILLER = [f"policy/k{i:02d}" for i in range(36)]  # with the named keys below: 45 charts' worth of keys


@pytest.fixture
def big_run(alice, project):
    run = Run.objects.create(
        project=project, name="dapo big", kind="synthetic", status="succeeded", attempt=1, created_by=alice
    )
    # attempt 1, a checkpoint at step 24, attempt 2 resumed from it: through the attempts service
    attempt_begin(run.id, 1, None, "host-a")
    attempt_end(run.id, 1, "lost")
    Checkpoint.objects.create(run=run, step=24, path="/artifacts/ckpt-24", attempt=1)
    attempt_begin(run.id, 2, "/artifacts/ckpt-24", "host-b")
    attempt_end(run.id, 2, "succeeded")
    Run.objects.filter(pk=run.pk).update(attempt=2)

    steps = np.arange(STEPS)
    zeros = steps * 0.0

    def cols(values, at=steps):
        return Columns.of(at, np.asarray(values, dtype=float), at * 0.0)

    series = {
        "train/loss": cols(1.0 / (steps + 1)),
        "actor/lr": cols(np.full(STEPS, 5e-5) * (1 - steps / 80)),
        "actor/loss": cols(np.cos(steps / 5)),
        "critic/ece": cols(0.2 / (steps + 1)),
        "critic/brier": cols(0.25 - steps / 400),
        "critic/auc": cols(0.5 + steps / 100),
        "critic/loss": cols(1.0 / (steps + 2)),
        "val/accuracy": cols(0.3 + steps / 100),
        "eval/final_score": Columns.of(np.array([39]), np.array([0.8125]), np.array([0.0])),
    }
    for i, key in enumerate(FILLER):
        series[key] = cols(np.sin(steps / (i + 3)) + zeros)
    metrics_record(run.id, series)
    return run


def open_run(browser, live_server, run, errors):
    page = new_page(browser, errors)
    login(page, live_server.url, f"/runs/{run.pk}/")
    try:
        page.wait_for_selector("[data-testid=chart-section]")
    except Exception as exc:
        page.screenshot(path="/tmp/orlab-run-charts-failed.png")
        raise AssertionError(f"no chart section on {page.url}; page errors: {errors}") from exc
    return page


def section_of(page, chart_id: str) -> str:
    return page.evaluate(
        "id => document.querySelector(`[data-testid=chart-card][data-key='${id}']`).closest('[data-testid=chart-section]').dataset.section",
        chart_id,
    )


def drawn(page, chart_id: str) -> bool:
    return page.evaluate(
        "id => { const p = document.querySelector(`[data-testid=chart][data-key='${id}']`);"
        " return !!(p && p.data && p.layout); }",
        chart_id,
    )


def test_sections_search_pins_values_calibration_lr_and_attempts(live_server, big_run, browser):
    errors: list[str] = []
    page = open_run(browser, live_server, big_run, errors)
    sections = page.eval_on_selector_all(
        "[data-testid=chart-section]", "els => els.map(e => e.dataset.section)"
    )
    assert {"actor", "critic calibration", "critic", "eval", "policy", "train", "val"} <= set(sections), (
        sections
    )
    assert "(pinned)" not in [s for s in sections if page.is_visible(f"[data-section='{s}']")]
    # 36 filler + 8 single charts + one calibration chart holding three keys
    assert page.locator("[data-testid=chart-card]").count() == 36 + 6 + 1

    # lazy: the charts far down the page are not read until scrolled into view
    wait_for(lambda: drawn(page, "actor/lr"), timeout=20, message="the first charts")
    last = "policy/k35"
    assert not drawn(page, last)
    # ... and says so rather than showing an empty box
    placeholder = "el => getComputedStyle(el, '::before').content"
    assert (
        page.eval_on_selector(f"[data-testid=chart][data-key='{last}']", placeholder)
        == '"drawn when in view"'
    )
    page.locator(f"[data-testid=chart-card][data-key='{last}']").scroll_into_view_if_needed()
    wait_for(lambda: drawn(page, last), timeout=20, message="a chart drawn once scrolled to")

    # calibration: ECE, Brier and AUC on one chart, in its own section, away from accuracy
    cal = "critic calibration"
    page.locator(f"[data-testid=chart-card][data-key='{cal}']").scroll_into_view_if_needed()
    wait_for(lambda: drawn(page, cal), timeout=20, message="the calibration chart")
    names = page.evaluate(
        f"() => document.querySelector(`[data-testid=chart][data-key='{cal}']`).data.map(t => t.name)"
    )
    assert names == ["critic/auc", "critic/brier", "critic/ece"]
    assert section_of(page, cal) == cal and section_of(page, "val/accuracy") == "val"
    assert page.locator("[data-testid=chart][data-key='critic/ece']").count() == 0  # not a chart of its own

    # a learning rate starts on a log axis; the toggle makes it linear
    lr = "[data-testid=chart][data-key='actor/lr']"
    assert page.evaluate(f"() => document.querySelector(`{lr}`).layout.yaxis.type") == "log"
    assert page.evaluate(f"() => document.querySelector(`{lr}`).layout.yaxis.type") == "log"
    page.locator("[data-testid=chart-card][data-key='actor/lr'] [data-testid=log-toggle]").uncheck()
    assert page.evaluate(f"() => document.querySelector(`{lr}`).layout.yaxis.type") == "linear"
    assert (
        page.evaluate(
            "() => document.querySelector(`[data-testid=chart][data-key='actor/loss']`).layout.yaxis.type"
        )
        == "linear"
    )

    # a resumed run: every drawn chart marks where attempt 2 began (the step after its checkpoint)
    marks = page.evaluate(
        "() => { const l = document.querySelector(`[data-testid=chart][data-key='train/loss']`).layout;"
        " return [l.shapes.map(s => [s.x0, s.line.dash]), l.annotations.map(a => a.text)]; }"
    )
    assert marks == [[[25, "dot"]], ["attempt 2"]]
    assert (
        page.evaluate(
            f"() => document.querySelector(`[data-testid=chart][data-key='{cal}']`).layout.shapes.length"
        )
        == 1
    )

    # a series of one point is a value, not an empty -1..1 axis
    card = "[data-testid=chart-card][data-key='eval/final_score']"
    page.locator(card).scroll_into_view_if_needed()
    page.wait_for_selector(f"{card} [data-testid=value-number]")
    assert page.inner_text(f"{card} [data-testid=value-number]") == "0.8125"
    assert "step 39" in page.inner_text(f"{card} [data-testid=value-card]")
    assert not page.is_visible(f"{card} [data-testid=chart]")
    assert page.is_disabled(f"{card} [data-testid=png-button]")  # a number: nothing to draw

    # search: instant, by key substring; sections without a match hide
    page.fill("[data-testid=chart-search]", "brier")
    visible = page.eval_on_selector_all(
        "[data-testid=chart-card]", "els => els.filter(e => !e.hidden).map(e => e.dataset.key)"
    )
    assert visible == [cal]
    assert page.inner_text("[data-testid=chart-search-count]") == "1 of 43 charts"
    assert not page.is_visible("[data-section='policy']")
    page.fill("[data-testid=chart-search]", "k0")
    visible = page.eval_on_selector_all(
        "[data-testid=chart-card]", "els => els.filter(e => !e.hidden).map(e => e.dataset.key)"
    )
    assert visible == [f"policy/k0{i}" for i in range(10)]
    page.fill("[data-testid=chart-search]", "")

    # collapse a section and pin a chart; both are remembered across a reload
    saved = lambda: int(page.get_attribute("#charts", "data-prefs-saved") or 0)  # noqa: E731
    page.click("[data-section='policy'] [data-testid=section-toggle]")
    assert not page.is_visible("[data-testid=chart-card][data-key='policy/k00']")
    wait_for(lambda: saved() == 1, timeout=10, message="the collapse saved")
    page.click("[data-testid=chart-card][data-key='actor/lr'] [data-testid=pin-button]")
    assert section_of(page, "actor/lr") == "(pinned)"
    wait_for(lambda: saved() == 2, timeout=10, message="the pin saved")
    # while a search runs, a collapsed section shows its matches
    page.fill("[data-testid=chart-search]", "k01")
    assert page.is_visible("[data-testid=chart-card][data-key='policy/k01']")
    page.fill("[data-testid=chart-search]", "")

    page.reload()
    page.wait_for_selector("[data-testid=chart-section]")
    first = page.eval_on_selector_all(
        "[data-testid=chart-section]", "els => els.filter(e => !e.hidden).map(e => e.dataset.section)"
    )[0]
    assert first == "(pinned)" and section_of(page, "actor/lr") == "(pinned)"
    assert not page.is_visible("[data-testid=chart-card][data-key='policy/k00']")
    assert page.get_attribute("[data-section='policy']", "class").split().count("collapsed") == 1
    # unpin: back to its section
    page.click("[data-testid=chart-card][data-key='actor/lr'] [data-testid=pin-button]")
    assert section_of(page, "actor/lr") == "actor"
    wait_for(lambda: saved() == 1, timeout=10, message="the unpin saved")
    prefs = page.request.get(f"{live_server.url}/api/projects/{big_run.project_id}/chart-prefs/").json()
    assert prefs["pinned"] == [] and prefs["collapsed"] == ["policy"]
    page.screenshot(path="/tmp/orlab-run-charts.png", full_page=True)
    assert not errors, errors


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def test_png_has_a_title_and_legend_and_the_csv_the_run_name(live_server, big_run, browser):
    errors: list[str] = []
    page = open_run(browser, live_server, big_run, errors)
    cal = "critic calibration"
    card = f"[data-testid=chart-card][data-key='{cal}']"
    page.locator(card).scroll_into_view_if_needed()
    wait_for(lambda: drawn(page, cal), timeout=20, message="the calibration chart")

    with page.expect_download() as info:
        page.click(f"{card} [data-testid=png-button]")
    download = info.value
    assert download.suggested_filename == f"orlab-run-{big_run.pk}-critic_calibration.png"
    with open(download.path(), "rb") as f:
        data = f.read()
    width, height = png_size(data)
    plot_h = page.evaluate(f"() => document.querySelector(`{card} [data-testid=chart]`).clientHeight")
    plot_w = page.evaluate(f"() => document.querySelector(`{card} [data-testid=chart]`).clientWidth")
    assert width == 2 * plot_w and height > 2 * plot_h + 60  # taller than the plot: title and legend rows

    # the composed canvas: a title band with ink in it, the plot, a legend naming each line by run
    composed = page.evaluate(
        """async (sel) => {
          const plot = document.querySelector(sel);
          const c = await window.orlabChartExport.compose(plot, {title: "dapo big — calibration",
            legend: [{name: "dapo big · critic/auc", color: "#2563eb"}, {name: "dapo big · critic/ece", color: "#dc2626"}],
            yLabel: "ECE · Brier · AUC"});
          const ctx = c.getContext("2d");
          const band = (y0, h) => { const d = ctx.getImageData(0, y0, c.width, h).data; let ink = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] < 128 && d[i + 1] < 128 && d[i + 2] < 128) ink++; return ink; };
          const legendRed = (() => { const y0 = Number(c.dataset.titleHeight) + Number(c.dataset.plotHeight);
            const d = ctx.getImageData(0, y0, c.width, Number(c.dataset.legendHeight)).data; let red = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] > 180 && d[i + 1] < 80 && d[i + 2] < 80) red++; return red; })();
          return {title: Number(c.dataset.titleHeight), legend: Number(c.dataset.legendHeight),
                  titleInk: band(0, Number(c.dataset.titleHeight)), legendRed,
                  yTitle: plot.layout.yaxis.title && plot.layout.yaxis.title.text};
        }""",
        f"{card} [data-testid=chart]",
    )
    assert composed["title"] > 0 and composed["legend"] > 0
    assert composed["titleInk"] > 50, "no title drawn"
    assert composed["legendRed"] > 10, "no legend swatch for the second line"

    # the CSV: every point with the run's name
    href = page.get_attribute("[data-testid=metrics-csv]", "href")
    response = page.request.get(f"{live_server.url}{href}")
    assert response.ok and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text())))
    assert {r["run"] for r in rows} == {"dapo big"}
    assert sum(1 for r in rows if r["key"] == "train/loss") == STEPS
    assert [r for r in rows if r["key"] == "eval/final_score"] == [
        {
            "run_id": str(big_run.pk),
            "run": "dapo big",
            "key": "eval/final_score",
            "step": "39",
            "value": "0.8125",
        }
    ]
    assert not errors, errors


@pytest.fixture
def alerted(alice, project):
    from webapp.alerts.models import Event

    run = Run.objects.create(
        project=project, name="alerted", kind="synthetic", status="succeeded", attempt=1, created_by=alice
    )
    steps = np.arange(STEPS)
    metrics_record(
        run.id,
        {
            "train/loss": Columns.of(steps, 1.0 / (steps + 1), steps * 0.0),
            "policy/entropy": Columns.of(steps, np.exp(-steps / 10), steps * 0.0),
        },
    )
    common = {"run": run, "project": project, "rule_name": "r"}
    Event.objects.create(
        **common, key="policy/entropy", step=30, message="entropy < 0.05", severity="critical"
    )
    Event.objects.create(**common, key="", step=12, message="no progress", severity="warning")
    return run


def test_health_rule_events_are_markers_on_their_charts(live_server, alerted, browser):
    errors: list[str] = []
    page = open_run(browser, live_server, alerted, errors)

    def marks(key):
        return page.evaluate(
            "key => { const l = document.querySelector(`[data-testid=chart][data-key='${key}']`).layout;"
            " return [l.shapes.map(s => [s.x0, s.line.color]), l.annotations.map(a => a.hovertext)]; }",
            key,
        )

    wait_for(
        lambda: drawn(page, "policy/entropy") and drawn(page, "train/loss"), timeout=20, message="charts"
    )
    # an event of a key on that key's chart; one without a key on every chart
    # oldest first; the label is the event's message, escaped for plotly
    assert marks("policy/entropy") == [
        [[30, "#dc2626"], [12, "#d97706"]],
        ["entropy &lt; 0.05", "no progress"],
    ]
    assert marks("train/loss") == [[[12, "#d97706"]], ["no progress"]]
    assert not errors, errors
