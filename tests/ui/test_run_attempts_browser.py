"""The run page draws each resumed attempt's boundary (a dotted line labelled "attempt N" at its first
step) on every metric chart, in headless Chromium, from the run API's attempts."""

from __future__ import annotations

import numpy as np
import pytest
from django.utils import timezone

from tests.ui.test_run_page_browser import login, new_page
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Run, RunAttempt

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def resumed(alice, project):
    run = Run.objects.create(
        project=project, name="resumed", kind="synthetic", status="succeeded", attempt=2, created_by=alice
    )
    steps = np.arange(40)
    metrics_record(run.id, {"train/loss": Columns.of(steps, 1.0 / (steps + 1), steps * 0.0)})
    now = timezone.now()
    RunAttempt.objects.create(run=run, attempt=1, first_step=0, started_at=now, ended_at=now, status="lost")
    RunAttempt.objects.create(
        run=run,
        attempt=2,
        first_step=25,
        resumed_from_step=24,
        started_at=now,
        ended_at=now,
        status="succeeded",
    )
    return run


def test_the_charts_mark_where_a_resumed_attempt_starts(live_server, resumed, browser):
    errors: list[str] = []
    page = new_page(browser, errors)
    login(page, live_server.url, f"/runs/{resumed.pk}/")
    page.wait_for_function(
        "() => { const p = document.querySelector('[data-testid=chart]');"
        " return p && p.layout && (p.layout.shapes || []).length > 0; }"
    )
    layout = page.evaluate(
        "() => { const l = document.querySelector('[data-testid=chart]').layout;"
        " return {shapes: l.shapes.map(s => [s.x0, s.x1, s.line.dash]),"
        " labels: (l.annotations || []).map(a => [a.x, a.text])}; }"
    )
    assert layout == {"shapes": [[25, 25, "dot"]], "labels": [[25, "attempt 2"]]}
    assert not errors, errors
