"""Issue 15's "done when": each rule kind fires on real ingest (metric_store.metrics_record, the path
of the API and the sinks; stalled through the housekeeping) and its event is delivered to a local
webhook receiver (HMAC-signed JSON) and a local SMTP server (Django's SMTP backend), through the
after-commit dispatch and the notification sender."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from django.utils import timezone

from tests.webapp.notify_receivers import SmtpServer, WebhookReceiver, signature_ok
from webapp.alerts import engine, services
from webapp.alerts.models import Event, RunPulse
from webapp.notify import sender
from webapp.notify.models import Channel, Delivery
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db

SECRET = "kinds-deliver-secret-0123456789"
ENTROPY = np.r_[np.full(10, 1.2), np.full(90, 0.01)]  # collapses at step 10 of 100

# kind -> (rule params, key, the values ingested); stalled is driven by the housekeeping instead
CASES = {
    "threshold": ({"op": ">", "value": 1.0}, "loss", [0.5, 0.7, 1.5]),
    "change": ({"window": 3, "amount": 0.5, "direction": "down"}, "reward", [0.9, 0.9, 0.9, 0.85, 0.3]),
    "zscore": ({"z": 5, "direction": "up", "min_points": 20}, "grad_norm", [*([1.0, 1.1] * 15), 50.0]),
    "nan_inf": ({}, "loss", [0.1, float("nan")]),
    "collapse": ({}, "policy/entropy", list(ENTROPY)),
    "stalled": ({"seconds": 60}, "", [1.0]),
}


@pytest.fixture(autouse=True)
def _fresh_cache():
    engine.forget()
    yield
    engine.forget()


@pytest.fixture
def endpoints(settings):
    hook, smtp = WebhookReceiver(), SmtpServer()
    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
    yield hook, smtp
    hook.close()
    smtp.close()


@pytest.mark.parametrize("kind", list(CASES))
def test_each_rule_kind_fires_on_ingest_and_reaches_webhook_and_mail(
    kind, project, alice, endpoints, django_capture_on_commit_callbacks
):
    from workers.tasks import housekeeping

    hook, smtp = endpoints
    params, key, values = CASES[kind]
    rule = services.rule_save(
        project=project,
        user=alice,
        data={"name": f"watch {kind}", "kind": kind, "key": key, "params": params},
    )
    Channel.objects.create(project=project, name="hook", kind="webhook", url=hook.url, secret=SECRET)
    Channel.objects.create(project=project, name="mail", kind="email", emails=["oncall@example.org"])
    run = Run.objects.create(
        project=project, name="watched", kind="external", status="running", created_by=alice
    )
    with django_capture_on_commit_callbacks(execute=True):
        steps = np.arange(len(values))
        metrics_record(
            run.id, {key or "m": Columns.of(steps, np.asarray(values, dtype=float), np.zeros(len(values)))}
        )
        if kind == "stalled":
            RunPulse.objects.filter(run=run).update(last_point_at=timezone.now() - dt.timedelta(seconds=120))
            assert housekeeping()["stalled"] == 1
    [event] = Event.objects.filter(run=run, rule=rule)
    deliveries = list(Delivery.objects.filter(event_id=event.pk).select_related("channel"))
    assert sorted(d.channel.kind for d in deliveries) == ["email", "webhook"]
    for delivery in deliveries:
        assert sender.send(delivery.pk) == "sent"
    [(headers, body)] = hook.posts
    assert signature_ok(SECRET, headers, body)
    payload = json.loads(body)
    assert payload["type"] == "rule.fired" and payload["run"]["id"] == run.pk
    assert payload["rule"]["name"] == f"watch {kind}"
    [(_, rcpt, content)] = smtp.messages
    assert rcpt == ["oncall@example.org"] and f"watch {kind}" in content
