"""In headless Chromium: the alerts page lists a fired event and acknowledges it, creates a rule
from its form and applies a preset; the run page's events card lists the run's events and
acknowledges one. The events come from real ingest (metric_store.metrics_record on PostgreSQL)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from webapp.alerts import engine, services
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def fired(project, alice):
    """Made before the browser starts (no ORM calls while Playwright runs): two runs with an event each."""
    engine.forget()
    services.rule_save(
        project=project, user=alice,
        data={"name": "loss high", "kind": "threshold", "key": "loss", "params": {"op": ">", "value": 1}},
    )  # fmt: skip
    runs = []
    for name in ("first", "second"):
        run = Run.objects.create(
            project=project, name=name, kind="external", status="running", created_by=alice
        )
        metrics_record(run.id, {"loss": Columns.of([0, 1, 2], [0.5, 2.5, 3.0], np.zeros(3))})
        runs.append(run)
    return runs


def test_alerts_page_and_run_events_card(live_server, fast_passwords, alice, project, fired, browser):
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 950})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(15_000)
    url = live_server.url
    page.goto(f"{url}/login/?next=/projects/{project.pk}/alerts/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click('[data-testid="login-submit"]')
    page.wait_for_url(re.compile(rf"/projects/{project.pk}/alerts/$"))

    rows = page.locator('[data-testid="alerts-event"]')
    assert rows.count() == 2
    assert "loss = 2.5 > 1" in rows.first.text_content()
    rows.first.locator('[data-testid="alerts-event-ack"]').click()  # the open list loses it
    page.wait_for_function("document.querySelectorAll('[data-testid=alerts-event]').length === 1")
    page.click('[data-testid="show-all-events"]')
    page.wait_for_selector('[data-testid="alerts-event"].acked')

    # a rule from the form, then a preset
    page.fill("#id_name", "grad spike")
    page.select_option("#id_kind", "zscore")
    page.fill("#id_key", "@grad_norm")
    page.fill("#id_params", '{"z": 5}')
    page.click('[data-testid="rule-save"]')
    page.wait_for_selector('[data-testid="alerts-rule"]:has-text("grad spike")')
    page.click('[data-testid="preset-length_clipping"]')
    page.wait_for_selector('[data-testid="alerts-rule"]:has-text("length clipping")')
    assert page.locator('[data-testid="alerts-rule"]').count() == 3
    page.screenshot(path="/tmp/orlab-alerts-page.png", full_page=True)

    # the first run's page (the page above acknowledged the newest event: the second run's): its
    # card, acknowledge there
    second = fired[0]
    page.goto(f"{url}/runs/{second.pk}/")
    card = page.locator('[data-testid="run-events"]')
    card.wait_for()
    assert card.locator('[data-testid="run-event"]').count() == 1
    card.locator('[data-testid="event-ack"]').click()
    page.wait_for_url(re.compile(rf"/runs/{second.pk}/$"))
    page.wait_for_selector('[data-testid="event-acked"]')
    page.screenshot(path="/tmp/orlab-alerts-run.png", full_page=True)
    assert not errors, errors
