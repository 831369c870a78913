"""The alerts page and the run page's events card through Django's test client: listing, rule
forms (a bad one is a 400 naming the field), presets, acknowledge, mute; other teams get 404."""

from __future__ import annotations

import numpy as np
import pytest

from webapp.alerts import engine, services
from webapp.alerts.models import Event, Mute, Rule
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    engine.forget()
    yield
    engine.forget()


@pytest.fixture
def run(project, alice):
    return Run.objects.create(
        project=project, name="ext", kind="external", status="running", created_by=alice
    )


@pytest.fixture
def fired(project, alice, run):
    rule = services.rule_save(
        project=project, user=alice,
        data={"name": "loss high", "kind": "threshold", "key": "loss", "params": {"op": ">", "value": 1}},
    )  # fmt: skip
    metrics_record(run.id, {"loss": Columns.of([0, 1], [0.5, 2.5], np.zeros(2))})
    return rule, Event.objects.get()


def test_run_page_hides_the_card_without_events(client_alice, run):
    html = client_alice.get(f"/runs/{run.pk}/").content.decode()
    assert 'data-testid="run-events"' not in html


def test_run_page_lists_events_and_acknowledges(client_alice, run, fired):
    rule, event = fired
    html = client_alice.get(f"/runs/{run.pk}/").content.decode()
    assert 'data-testid="run-events"' in html and "loss = 2.5 &gt; 1" in html
    resp = client_alice.post(f"/alerts/events/{event.pk}/ack/", {"next": f"/runs/{run.pk}/"})
    assert resp.status_code == 302 and resp["Location"] == f"/runs/{run.pk}/"
    event.refresh_from_db()
    assert event.acknowledged and event.acknowledged_by.username == "alice"
    resp = client_alice.post(
        f"/alerts/rules/{rule.pk}/mute/", {"run": run.pk, "next": "https://evil.example/"}
    )
    assert resp["Location"] == f"/projects/{run.project_id}/alerts/"  # no open redirect
    assert Mute.objects.get().run_id == run.pk


def test_alerts_page_rules_forms_and_presets(client_alice, project, run, fired):
    rule, _ = fired
    html = client_alice.get(f"/projects/{project.pk}/alerts/").content.decode()
    assert 'data-testid="alerts-event"' in html and "loss high" in html and "preset-kl_blowup" in html
    bad = client_alice.post(
        f"/projects/{project.pk}/alerts/", {"name": "x", "kind": "threshold", "key": "m", "params": '{"op": "~"}',
                                            "severity": "warning", "enabled": "on"},
    )  # fmt: skip
    assert bad.status_code == 400 and "params.op" in bad.content.decode()
    ok = client_alice.post(
        f"/projects/{project.pk}/alerts/", {"name": "spike", "kind": "zscore", "key": "@grad_norm", "params": "",
                                            "severity": "info", "enabled": "on"},
    )  # fmt: skip
    assert ok.status_code == 302 and Rule.objects.get(name="spike").params["z"] == 4.0
    edit = client_alice.post(
        f"/alerts/rules/{rule.pk}/edit/", {"name": "loss very high", "kind": "threshold", "key": "loss",
                                           "params": '{"op": ">", "value": 5}', "severity": "critical"},
    )  # fmt: skip
    assert edit.status_code == 302
    rule.refresh_from_db()
    assert (rule.name, rule.params["value"], rule.enabled) == ("loss very high", 5.0, False)
    client_alice.post(f"/projects/{project.pk}/alerts/presets/", {"preset": "length_clipping"})
    assert Rule.objects.filter(preset="length_clipping").count() == 1
    client_alice.post(f"/alerts/rules/{rule.pk}/delete/")
    assert not Rule.objects.filter(pk=rule.pk).exists() and Event.objects.count() == 1


def test_other_teams_get_404(client_bob, project, run, fired):
    rule, event = fired
    assert client_bob.get(f"/projects/{project.pk}/alerts/").status_code == 404
    assert client_bob.post(f"/alerts/events/{event.pk}/ack/").status_code == 404
    assert client_bob.post(f"/alerts/rules/{rule.pk}/delete/").status_code == 404
    assert client_bob.post(f"/alerts/rules/{rule.pk}/mute/").status_code == 404
    assert client_bob.get(f"/alerts/rules/{rule.pk}/edit/").status_code == 404
    assert Rule.objects.filter(pk=rule.pk).exists() and not Event.objects.get().acknowledged


def test_pages_need_a_login(client, project):
    resp = client.get(f"/projects/{project.pk}/alerts/")
    assert resp.status_code == 302 and "/login/" in resp["Location"]
