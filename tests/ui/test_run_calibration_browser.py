"""The run page's reliability diagram: an evaluation holding calibration bins (DAPO's critic on
held-out step values) is drawn as predicted-vs-observed with its ECE, and its bins stay out of the
accuracy chart and the evaluations table."""

from __future__ import annotations

import re

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def calibrated(alice, project):
    from webapp.runs import services

    run = services.run_create(user=alice, project=project, name="dapo", kind="external", config={})
    bins = {}
    for b, (pred, true, count) in enumerate([(0.1, 0.15, 40), (0.5, 0.4, 10), (0.9, 0.85, 50)]):
        bins |= {f"bin_{b:02d}_pred": pred, f"bin_{b:02d}_true": true, f"bin_{b:02d}_count": count}
    services.evaluation_record(
        run.id, 30, "critic-calibration", {"ece": 0.055, "auc": 0.8, **bins}, {"bins": 3}
    )
    services.evaluation_record(run.id, 30, "held-out", {"accuracy": 0.4}, {"k": 1})
    return run


def test_reliability_diagram_is_drawn_and_bins_stay_off_the_accuracy_chart(live_server, browser, calibrated):
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server.url}/runs/{calibrated.pk}/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click('[data-testid="login-submit"]')
    page.wait_for_url(re.compile(rf"/runs/{calibrated.pk}/"))
    page.wait_for_selector("[data-testid=calibration-chart][data-bins='3']")
    assert page.is_visible("[data-testid=calibration-section]")
    assert page.inner_text("[data-testid=calibration-ece]") == "ECE 0.055"
    # the accuracy chart has the metrics (ece, auc, accuracy) but no bin_* lines
    names = page.evaluate("() => document.getElementById('eval-chart').data.map((t) => t.name)")
    assert names and not any("bin_" in n for n in names), names
    assert any("ece" in n for n in names) and any("accuracy" in n for n in names)
    assert "bin_00" not in page.inner_text("[data-testid=evaluations-table]")
    assert not errors, errors
