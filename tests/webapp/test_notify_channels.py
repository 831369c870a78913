"""Notification channels through the API (issue 15 point 3): owners manage them, members see them,
others get 404; bad input is a 400 naming the field (URL, private address, e-mail); secrets are
never shown back in full; run ends (finished, failed, cancelled, lost, failed with the parent,
ended through the MLflow API) and rule events write one delivery per subscribed channel."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from webapp.notify.models import Channel, Delivery
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


def _webhook(api, project, **extra):
    body = {"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/hook", **extra}
    return api.post(f"/api/projects/{project.pk}/channels/", body, format="json")


def test_private_address_refused_unless_the_operator_allows_it(api, project, settings):
    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = False
    for url in ("http://127.0.0.1:9/hook", "http://localhost/x", "http://10.1.2.3/", "http://169.254.169.254/",
                "http://[::1]/", "http://2130706433/", "http://[::ffff:127.0.0.1]/"):  # fmt: skip
        r = _webhook(api, project, url=url)
        assert r.status_code == 400, (url, r.json())
        assert "url" in r.json()["errors"], url
    assert not Channel.objects.exists()
    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = True
    r = _webhook(api, project)
    assert r.status_code == 201, r.json()


@pytest.mark.parametrize(
    "body, field",
    [
        ({"kind": "webhook", "url": "ftp://example.org/"}, "url"),
        ({"kind": "webhook", "url": "not a url"}, "url"),
        ({"kind": "webhook", "url": "http://user:pw@127.0.0.1/"}, "url"),
        ({"kind": "webhook"}, "url"),
        ({"kind": "email", "emails": ["nobody"]}, "emails[0]"),
        ({"kind": "email", "emails": []}, "emails"),
        ({"kind": "email", "emails": ["a@example.org"], "url": "http://127.0.0.1/"}, "url"),
        ({"kind": "email", "emails": ["a@example.org"], "run_statuses": ["exploded"]}, "run_statuses.0"),
        ({"kind": "email", "emails": ["a@example.org"], "rules": "chosen"}, "rule_ids"),
        ({"kind": "pigeon"}, "kind"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, project, settings, body, field):
    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = True
    r = api.post(f"/api/projects/{project.pk}/channels/", {"name": "c", **body}, format="json")
    assert r.status_code == 400, r.json()
    assert field in r.json()["errors"], r.json()


def test_secret_is_generated_shown_once_and_never_again(api, project, settings):
    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = True
    created = _webhook(api, project).json()
    secret = created["secret"]
    assert len(secret) >= 32 and created["secret_hint"].startswith("••••")
    assert Channel.objects.get().secret == secret
    for r in (api.get(f"/api/channels/{created['id']}/"), api.get(f"/api/projects/{project.pk}/channels/")):
        assert secret not in r.content.decode()
    # a secret of the user's own is kept, an empty one on update keeps the old one
    r = api.patch(f"/api/channels/{created['id']}/", {"secret": "my-own-secret-1234"}, format="json")
    assert r.status_code == 200 and r.json()["secret"] is None and "1234" in r.json()["secret_hint"]
    api.patch(f"/api/channels/{created['id']}/", {"secret": ""}, format="json")
    assert Channel.objects.get().secret == "my-own-secret-1234"


def test_owners_manage_members_see_others_get_404(api, bob_api, bob, project, settings):
    from webapp.projects.services import project_add_member

    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = True
    channel = _webhook(api, project).json()
    # bob is no member: nothing of the project exists for him
    assert bob_api.get(f"/api/projects/{project.pk}/channels/").status_code == 404
    assert bob_api.get(f"/api/channels/{channel['id']}/").status_code == 404
    assert bob_api.post(f"/api/channels/{channel['id']}/test/").status_code == 404
    assert bob_api.get(f"/api/projects/{project.pk}/deliveries/").status_code == 404
    project_add_member(project=project, user=bob)
    listed = bob_api.get(f"/api/projects/{project.pk}/channels/")
    assert listed.status_code == 200 and [c["id"] for c in listed.json()] == [channel["id"]]
    assert _webhook(bob_api, project, name="bob's").status_code == 403
    assert (
        bob_api.patch(f"/api/channels/{channel['id']}/", {"enabled": False}, format="json").status_code == 403
    )
    assert bob_api.post(f"/api/channels/{channel['id']}/test/").status_code == 403
    assert bob_api.delete(f"/api/channels/{channel['id']}/").status_code == 403
    assert Channel.objects.get().enabled and not Delivery.objects.exists()
    assert api.delete(f"/api/channels/{channel['id']}/").status_code == 204
    assert not Channel.objects.exists()


def test_test_send_writes_a_delivery_listed_with_its_status(api, project, settings):
    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = True
    channel = _webhook(api, project).json()
    r = api.post(f"/api/channels/{channel['id']}/test/")
    assert r.status_code == 202 and r.json()["status"] == "pending" and r.json()["subject"] == "test"
    listed = api.get(f"/api/projects/{project.pk}/deliveries/", {"status": "pending"}).json()
    assert [d["id"] for d in listed["results"]] == [r.json()["id"]]
    assert api.get(f"/api/projects/{project.pk}/deliveries/", {"status": "bogus"}).status_code == 400


def _run(project, alice, status="running", **fields):
    return Run.objects.create(
        project=project, name="r", kind="external", status=status, created_by=alice, **fields
    )


def _email_channel(project, **fields):
    return Channel.objects.create(
        project=project, name=fields.pop("name", "mail"), kind="email", emails=["ops@example.org"], **fields
    )


def test_run_ends_write_one_delivery_per_subscribed_channel(
    project, alice, django_capture_on_commit_callbacks
):
    from webapp.runs import services

    every = _email_channel(project, run_statuses=["succeeded", "failed", "lost", "cancelled"])
    failures = _email_channel(project, name="failures", run_statuses=["failed", "lost"])
    _email_channel(project, name="off", run_statuses=["failed"], enabled=False)
    finished, failed, cancelled = _run(project, alice), _run(project, alice), _run(project, alice)
    with django_capture_on_commit_callbacks(execute=True):
        services.run_finish_external(finished, status="succeeded")
        services.run_finish_external(failed, status="failed", error="boom")
        services.run_request_cancel(cancelled)
    # a worker run whose heartbeat stopped is marked lost by the housekeeping's step
    lost = Run.objects.create(
        project=project, name="w", kind="tabular", status="running", created_by=alice,
        heartbeat_at=timezone.now() - timedelta(minutes=5),
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        assert services.runs_mark_lost(timeout=60) == 1
    got = sorted((d.channel.name, d.run_id, d.payload["run"]["status"]) for d in Delivery.objects.all())
    assert got == sorted(
        [("mail", finished.pk, "succeeded"), ("mail", failed.pk, "failed"), ("mail", cancelled.pk, "cancelled"),
         ("mail", lost.pk, "lost"), ("failures", failed.pk, "failed"), ("failures", lost.pk, "lost")]
    )  # fmt: skip
    assert Delivery.objects.get(channel=failures, run=failed).payload["run"]["error"] == "boom"
    assert {d.status for d in Delivery.objects.all()} == {"pending"}
    # the same end reported twice (a repeated after-commit call) is one delivery
    from webapp.notify import dispatch

    dispatch.runs_ended([failed.pk])
    assert Delivery.objects.filter(channel=every, run=failed).count() == 1


def test_a_child_failed_with_its_parent_notifies(project, alice, django_capture_on_commit_callbacks):
    from webapp.runs import services

    _email_channel(project, run_statuses=["failed"])
    parent = Run.objects.create(
        project=project, name="p", kind="tabular", status="running", created_by=alice, attempt=1
    )
    child = Run.objects.create(
        project=project, name="c", kind="tabular", status="waiting", created_by=alice,
        config={"init_from_run": parent.pk},
    )  # fmt: skip
    with django_capture_on_commit_callbacks(execute=True):
        services.run_fail(parent.pk, 1, error="oom", traceback="")
    child.refresh_from_db()
    assert child.status == "failed"
    assert sorted(Delivery.objects.values_list("run_id", flat=True)) == sorted([parent.pk, child.pk])


def test_mlflow_set_terminated_notifies(project, alice, django_capture_on_commit_callbacks):
    from webapp.mlflow_api import services as mlflow

    _email_channel(project, run_statuses=["succeeded", "failed", "cancelled"])
    done, killed = _run(project, alice), _run(project, alice)
    with django_capture_on_commit_callbacks(execute=True):
        mlflow.run_update(done, status="FINISHED", end_time=None, name=None)
        mlflow.run_update(killed, status="KILLED", end_time=None, name=None)
    got = dict(Delivery.objects.values_list("run_id", "payload__run__status"))
    assert got == {done.pk: "succeeded", killed.pk: "cancelled"}


def test_rule_events_go_to_channels_of_all_or_of_chosen_rules(project, alice):
    from webapp.alerts.models import Event, Rule
    from webapp.notify import dispatch

    run = _run(project, alice)
    rule = Rule.objects.create(project=project, name="nan loss", kind="nan_inf", key="loss")
    other = Rule.objects.create(project=project, name="kl", kind="threshold", key="kl")
    _email_channel(project, name="all", rules="all")
    _email_channel(project, name="chosen", rules="chosen", rule_ids=[rule.pk])
    _email_channel(project, name="other", rules="chosen", rule_ids=[other.pk])
    _email_channel(project, name="none", rules="none")
    event = Event.objects.create(
        rule=rule, rule_name=rule.name, run=run, project=project, key="loss", step=7, value=float("nan"),
        message="loss is NaN", severity="critical",
    )  # fmt: skip
    dispatch.event_fired(event)
    deliveries = Delivery.objects.select_related("channel")
    assert sorted(d.channel.name for d in deliveries) == ["all", "chosen"]
    payload = deliveries[0].payload
    assert payload["type"] == "rule.fired" and payload["event"]["value"] == "nan"
    assert payload["rule"]["name"] == "nan loss" and payload["run"]["id"] == run.pk
    assert {d.event_id for d in deliveries} == {event.pk}


def test_an_event_from_real_ingest_is_delivered_to_its_channel(
    project, alice, django_capture_on_commit_callbacks
):
    """The whole rule path: a threshold rule, points stored by the ingest (metric_store), the event
    it fires, and its delivery written after the event's commit (webapp.alerts calls event_fired)."""
    import numpy as np

    from webapp.alerts import engine
    from webapp.alerts import services as alert_services
    from webapp.runs.metric_store import Columns, metrics_record

    engine.forget()
    rule = alert_services.rule_save(
        project=project, user=alice,
        data={"name": "loss high", "kind": "threshold", "key": "loss", "params": {"op": ">", "value": 1}},
    )  # fmt: skip
    _email_channel(project, name="chosen", rules="chosen", rule_ids=[rule.pk])
    run = _run(project, alice)
    with django_capture_on_commit_callbacks(execute=True):
        metrics_record(run.id, {"loss": Columns.of([0, 1, 2], [0.5, 2.5, 3.0], np.zeros(3))})
    [delivery] = Delivery.objects.all()
    assert delivery.subject == "event" and delivery.run_id == run.pk and delivery.event_id
    assert delivery.payload["rule"]["name"] == "loss high" and delivery.payload["event"]["step"] == 1
