"""The run page's DAPO views: an evaluation holding calibration bins (the critic on held-out step
values) is drawn as a reliability diagram with its ECE, its bins staying out of the accuracy chart and
the evaluations table; samples carrying value curves are drawn as MC vs critic V(s_t)."""

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
    curves = [
        {"step": 30, "prompt": "1+2+3=", "completion": "1+2=3\n3+3=6\n\\boxed{6}", "verdict": "correct",
         "reward": 1.0, "extra": {"values_mc": [0.5, 0.75, 1.0, 1.0], "values_critic": [0.45, 0.7, 0.9, 1.0]}},
        {"step": 30, "prompt": "4+5=", "completion": "4+5=9\n\\boxed{10}", "verdict": "wrong", "reward": 0.0,
         "extra": {"values_mc": [0.5, 0.5, 0.0], "values_critic": [0.55, 0.4, 0.0]}},
        {"step": 40, "prompt": "p", "completion": "c", "verdict": "wrong"},
    ]  # fmt: skip
    services.samples_record(run, curves)
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
    # the accuracy chart has the accuracies, but no bin_* and no calibration (ece, auc) lines
    names = page.evaluate("() => document.getElementById('eval-chart').data.map((t) => t.name)")
    assert names and not any("bin_" in n for n in names), names
    assert any("accuracy" in n for n in names) and not any(n.endswith(("ece", "auc", "brier")) for n in names)
    assert "bin_00" not in page.inner_text("[data-testid=evaluations-table]")
    # the critic's per-step value curves of the samples that carry them (two solutions: MC + critic each)
    page.wait_for_selector("[data-testid=value-curves-chart][data-curves='2']")
    traces = page.evaluate(
        "() => document.getElementById('value-curves-chart').data.map((t) => [t.name, t.y])"
    )
    assert len(traces) == 4 and traces[1][1] == [0.45, 0.7, 0.9, 1.0] and "critic" in traces[1][0]
    assert not errors, errors
