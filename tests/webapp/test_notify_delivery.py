"""Sending notifications (issue 15 point 3) to real local receivers: a webhook server thread that
checks the HMAC signature, an aiosmtpd SMTP server reached through Django's SMTP backend, and a real
Celery worker on the `control` queue that retries a webhook answering 500 with backoff."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import wait_for
from tests.webapp.notify_receivers import SmtpServer, WebhookReceiver, signature_ok
from webapp.notify import sender, services
from webapp.notify.models import Channel, Delivery

SECRET = "s3cret-for-the-tests-0123456789"


@pytest.fixture
def receiver():
    made = []

    def make(**kwargs):
        made.append(WebhookReceiver(**kwargs))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def smtp():
    server = SmtpServer()
    yield server
    server.close()


def _hook(project, url, **fields):
    return Channel.objects.create(
        project=project, name="hook", kind="webhook", url=url, secret=SECRET, **fields
    )


def _due(delivery):
    """Make a pending delivery due now (the test does not wait out its backoff)."""
    Delivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


@pytest.mark.django_db
def test_webhook_is_signed_retried_with_backoff_then_sent(project, alice, receiver, settings, monkeypatch):
    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = True
    monkeypatch.setenv("ORLAB_NOTIFY_BACKOFF", "30")
    hook = receiver(answers=[500])
    delivery = services.send_test(user=alice, channel=_hook(project, hook.url))
    assert sender.send(delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.last_error.startswith("attempt 1: HTTP 500")
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert 25 < wait <= 30  # the first backoff step
    assert sender.send(delivery.pk) == "skipped"  # not due yet: a duplicate message does nothing
    _due(delivery)
    assert sender.send(delivery.pk) == "sent"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 2, "")
    assert len(hook.posts) == 2
    for headers, body in hook.posts:
        assert signature_ok(SECRET, headers, body)
        assert json.loads(body) == delivery.payload and headers["x-orlab-delivery"] == str(delivery.pk)
        assert abs(int(headers["x-orlab-timestamp"]) - time.time()) < 60
    headers, body = hook.posts[0]
    assert not signature_ok("another secret", headers, body)
    # the signature covers the timestamp: a replay under a fresh timestamp does not verify
    assert not signature_ok(SECRET, {**headers, "x-orlab-timestamp": str(int(time.time()) + 999)}, body)
    assert sender.send(delivery.pk) == "skipped"  # sent is final


@pytest.mark.django_db
def test_last_attempt_fails_with_the_last_error(project, alice, receiver, settings, monkeypatch):
    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = True
    monkeypatch.setenv("ORLAB_NOTIFY_ATTEMPTS", "3")
    monkeypatch.setenv("ORLAB_NOTIFY_BACKOFF", "1")
    hook = receiver(answers=[500, 503, 502, 200])
    delivery = services.send_test(user=alice, channel=_hook(project, hook.url))
    waits = []
    for _ in range(3):
        sender.send(delivery.pk)
        delivery.refresh_from_db()
        if delivery.next_attempt_at:
            waits.append(round((delivery.next_attempt_at - timezone.now()).total_seconds()))
            _due(delivery)
    assert waits == [1, 2]  # exponential: 1 s, then 2 s
    assert (delivery.status, delivery.attempts) == ("failed", 3)
    assert delivery.last_error.startswith("attempt 3: HTTP 502")
    assert len(hook.posts) == 3


@pytest.mark.django_db
def test_redirects_are_not_followed(project, alice, receiver, settings, monkeypatch):
    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = True
    monkeypatch.setenv("ORLAB_NOTIFY_ATTEMPTS", "1")
    target = receiver()
    hook = receiver(redirect_to=target.url)
    delivery = services.send_test(user=alice, channel=_hook(project, hook.url))
    assert sender.send(delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert "302 redirect" in delivery.last_error and "not followed" in delivery.last_error
    assert len(hook.posts) == 1 and target.posts == []


@pytest.mark.django_db
def test_private_address_refused_at_send_time(project, alice, receiver, settings):
    """A channel accepted while private addresses were allowed (or a name re-pointed at one since)
    is refused when sending, without a connection and without retries."""
    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = True
    hook = receiver()
    delivery = services.send_test(user=alice, channel=_hook(project, hook.url))
    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = False
    assert sender.send(delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and "non-public address" in delivery.last_error
    assert hook.posts == []


@pytest.mark.django_db
def test_email_reaches_a_real_smtp_server(project, alice, smtp, settings, django_capture_on_commit_callbacks):
    from webapp.runs import services as run_services
    from webapp.runs.models import Run

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp.port
    settings.DEFAULT_FROM_EMAIL = "orlab@test.local"
    Channel.objects.create(
        project=project, name="mail", kind="email", emails=["a@example.org", "b@example.org"],
        run_statuses=["failed"],
    )  # fmt: skip
    run = Run.objects.create(
        project=project, name="big run", kind="external", status="running", created_by=alice
    )
    with django_capture_on_commit_callbacks(execute=True):
        run_services.run_finish_external(run, status="failed", error="CUDA out of memory")
    delivery = Delivery.objects.get()
    assert sender.send(delivery.pk) == "sent"
    [(mail_from, rcpt, content)] = smtp.messages
    assert mail_from == "orlab@test.local" and rcpt == ["a@example.org", "b@example.org"]
    assert f"run {run.pk} 'big run' failed" in content and "CUDA out of memory" in content


@pytest.mark.django_db
def test_smtp_server_down_is_retried(project, alice, settings, monkeypatch):
    from tests.webapp.notify_receivers import free_port

    monkeypatch.setenv("ORLAB_NOTIFY_BACKOFF", "5")
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()  # nothing listens
    channel = Channel.objects.create(project=project, name="mail", kind="email", emails=["a@example.org"])
    delivery = services.send_test(user=alice, channel=channel)
    assert sender.send(delivery.pk) == "retry"
    delivery.refresh_from_db()
    assert "ConnectionRefusedError" in delivery.last_error


@pytest.mark.django_db
def test_housekeeping_retries_stuck_and_unsent_deliveries(project, alice):
    """A delivery whose sender died mid-attempt (left `sending`) counts that attempt as failed; one
    whose message never reached the broker is published by the housekeeping's step."""
    channel = Channel.objects.create(project=project, name="mail", kind="email", emails=["a@example.org"])
    old = timezone.now() - timedelta(minutes=10)
    stuck = Delivery.objects.create(channel=channel, subject="test", key="t1", status="sending", attempts=1)
    unsent = Delivery.objects.create(channel=channel, subject="test", key="t2")
    fresh = Delivery.objects.create(channel=channel, subject="test", key="t3")
    Delivery.objects.filter(pk__in=[stuck.pk, unsent.pk]).update(created_at=old, claimed_at=old)
    assert sender.send_due() == 2  # messages to the broker (Redis): the unsent one and the stuck one's retry
    stuck.refresh_from_db(), unsent.refresh_from_db(), fresh.refresh_from_db()
    assert stuck.status == "pending" and "worker stopped" in stuck.last_error and stuck.queued_at
    assert unsent.queued_at is not None
    assert fresh.queued_at is None  # left to its own after-commit message for a moment
    assert sender.send_due() == 0  # a message went out recently: no copy every pass


@pytest.mark.django_db(transaction=True)
def test_worker_delivers_run_end_with_a_retry_and_an_email(
    start_worker, alice, project, receiver, smtp, settings
):
    """The whole path with a real worker on the `control` queue: a run's end writes the deliveries
    (after commit), their messages go to Redis, the worker posts the webhook (500, then 200 after
    the backoff) and sends the e-mail through Django's SMTP backend to the local server."""
    from webapp.runs import services as run_services
    from webapp.runs.models import Run

    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = True
    hook = receiver(answers=[500])
    start_worker(
        "notify", queues="control", concurrency=1, pool="solo", ORLAB_WEBHOOK_ALLOW_PRIVATE="1",
        ORLAB_NOTIFY_BACKOFF="1", EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1", EMAIL_PORT=str(smtp.port),
    )  # fmt: skip
    _hook(project, hook.url, run_statuses=["succeeded"])
    Channel.objects.create(project=project, name="mail", kind="email", emails=["ops@example.org"],
                           run_statuses=["succeeded"])  # fmt: skip
    run = Run.objects.create(project=project, name="r", kind="external", status="running", created_by=alice)
    run_services.run_finish_external(run, status="succeeded")
    wait_for(
        lambda: Delivery.objects.filter(status="sent").count() == 2,
        timeout=90,
        message="both deliveries sent",
    )
    webhook = Delivery.objects.get(channel__kind="webhook")
    assert webhook.attempts == 2 and webhook.run_id == run.pk
    assert len(hook.posts) == 2 and all(signature_ok(SECRET, h, b) for h, b in hook.posts)
    assert json.loads(hook.posts[1][1])["run"] == {**webhook.payload["run"], "status": "succeeded"}
    [(_, rcpt, content)] = smtp.messages
    assert rcpt == ["ops@example.org"] and f"run {run.pk} 'r' succeeded" in content


@pytest.mark.django_db
def test_a_server_answering_byte_by_byte_does_not_hold_the_worker(project, alice, settings, monkeypatch):
    """Each read has the socket timeout, so a server sending a byte now and then would hold an attempt
    (and the control worker) indefinitely: the attempt's watchdog cuts it after 3 x the timeout."""
    import socket
    import threading

    settings.ORLAB_WEBHOOK_ALLOW_PRIVATE = True
    monkeypatch.setenv("ORLAB_NOTIFY_TIMEOUT", "0.5")
    monkeypatch.setenv("ORLAB_NOTIFY_ATTEMPTS", "1")
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def trickle():
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.wait(0.2):  # a header byte every 0.2 s, never the end of the headers
                try:
                    conn.sendall(b"X")
                except OSError:
                    return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/slow"
        delivery = services.send_test(user=alice, channel=_hook(project, url))
        assert sender.send(delivery.pk) == "failed"
        delivery.refresh_from_db()
        assert "no complete answer within 1.5 s" in delivery.last_error
    finally:
        stop.set()
        server.close()
