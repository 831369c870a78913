"""Alert events on the compare page, in headless Chromium (issues 15 and 16): each event is a mark at
its step in its run's colour on the chart of its key (every chart when it has no key), its message
on hover, hidden with its run; the PNG export of a chart holds the canvas's lines and marks.
Screenshot: /tmp/orlab-cmp-events.png."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import wait_for
from tests.ui.test_compare_browser import chart, login, new_page, wait_drawn

STEPS = 100


@pytest.fixture
def two_runs_with_events(live_server, alice, project):
    from webapp.alerts.models import Event
    from webapp.runs import services
    from webapp.runs.metric_store import Columns, metrics_record
    from webapp.runs.models import Run

    steps = np.arange(STEPS)
    runs = []
    for i in range(2):
        run = services.run_create(
            user=alice, project=project, name=f"ev-{i}", kind="external", config={"lr": i}
        )
        metrics_record(run.id, {
            "train/loss": Columns.of(steps, np.exp(-steps / (30 + 20 * i)), 1.7e9 + steps),
            "policy/entropy": Columns.of(steps, 1.0 - steps / (200 + 100 * i), 1.7e9 + steps),
        })  # fmt: skip
        runs.append(run)
    Run.objects.filter(pk__in=[r.pk for r in runs]).update(status="succeeded")
    common = {"project": project, "severity": "warning", "rule_name": "loss spike"}
    Event.objects.create(
        run=runs[0], key="train/loss", step=40, value=2.0, message="loss jumped to 2.0", **common
    )
    Event.objects.create(run=runs[1], key="", step=70, message="no point for <b>10 min</b>", **common)
    return runs


MARKS = """sel => (document.querySelector(sel).orlabMarks || []).filter(m => m.event)
  .map(m => ({ x: m.x, color: m.color, visible: m.visible !== false, hover: m.hover }))"""
MARK_AT = """([sel, x]) => { const p = document.querySelector(sel); const xa = p._fullLayout.xaxis, ya = p._fullLayout.yaxis;
  const r = p.getBoundingClientRect(); return [r.left + xa._offset + xa.l2p(x), r.top + ya._offset + ya._length / 2]; }"""


@pytest.mark.slow
def test_events_are_marks_with_their_message(live_server, project, two_runs_with_events, browser):
    runs = two_runs_with_events
    errors: list[str] = []
    page = new_page(browser, errors)
    ids = ",".join(str(r.id) for r in runs)
    login(page, live_server.url, f"/compare/?runs={ids}&key=train/loss&key=policy/entropy")
    wait_drawn(page, "train/loss", 2 * STEPS)
    wait_drawn(page, "policy/entropy", 2 * STEPS)
    wait_for(lambda: len(page.evaluate(MARKS, chart("train/loss"))) == 2, timeout=10, message="two marks")

    colour = page.evaluate(
        """([sel, id]) => document.querySelector(sel).orlabLines.find(t => t.meta.runs[0] === id).line.color""",
        [chart("train/loss"), runs[0].id],
    )
    loss_marks = sorted(page.evaluate(MARKS, chart("train/loss")), key=lambda m: m["x"])
    assert [m["x"] for m in loss_marks] == [40, 70] and loss_marks[0]["color"] == colour
    # the keyless event is on every chart; the loss event only on its key's
    assert [m["x"] for m in page.evaluate(MARKS, chart("policy/entropy"))] == [70]

    # its message on hover, as text (the markup in a message is not rendered)
    x, y = page.evaluate(MARK_AT, [chart("train/loss"), 40])
    page.mouse.move(x, y)
    tip = f'{chart("train/loss")} [data-testid="chart-hover"]'
    wait_for(lambda: page.is_visible(tip), timeout=5, message="the event's tooltip")
    assert "loss jumped to 2.0" in page.inner_text(tip) and "ev-0" in page.inner_text(tip)
    x, y = page.evaluate(MARK_AT, [chart("policy/entropy"), 70])
    page.mouse.move(x, y)
    tip = f'{chart("policy/entropy")} [data-testid="chart-hover"]'
    wait_for(lambda: "no point for <b>10 min</b>" in page.inner_text(tip), timeout=5, message="the text")
    page.screenshot(path="/tmp/orlab-cmp-events.png")

    # hiding a run hides its marks too
    page.locator('[data-testid="legend-item"]').nth(0).click()
    wait_for(
        lambda: (
            [m["visible"] for m in sorted(page.evaluate(MARKS, chart("train/loss")), key=lambda m: m["x"])]
            == [False, True]
        ),
        timeout=10,
        message="the hidden run's mark",
    )
    assert not errors, errors
