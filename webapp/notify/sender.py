"""Sending deliveries: a task on the ``control`` queue per attempt, retries with exponential backoff,
and the housekeeping's pass over what is due or stuck.

The Delivery row is the outbox: it is written in a transaction (``services``), and its task message
goes to the broker after that commits (``schedule``). A broker that is down then only leaves the row
``pending`` with no message; the housekeeping (``send_due``, every few seconds on the ``control``
worker) publishes a message for every pending delivery that is due and has none recently sent.
Every task first claims its row (pending and due -> sending, one conditional UPDATE), so a duplicate
message does nothing. A worker that dies mid-send leaves the row ``sending``: after STUCK_AFTER_S the
housekeeping counts that attempt as failed and retries (or fails) it.

Knobs (environment, read when used): ORLAB_NOTIFY_ATTEMPTS (5 attempts in all), ORLAB_NOTIFY_BACKOFF
(2 s: the waits are 2, 4, 8, 16 s), ORLAB_NOTIFY_TIMEOUT (5 s per webhook connect and read; 3 x that for a whole attempt)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import threading
import time
from datetime import timedelta

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from webapp.notify import addresses, payloads
from webapp.notify.models import Channel, Delivery

log = logging.getLogger(__name__)
Status = Delivery.Status

TASK = "webapp.notify.tasks.send_delivery"
QUEUE = "control"
#: one quick retry, so a request with the broker down answers at once (the housekeeping sends later)
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
#: a due delivery whose message went out less than this long ago is left to that message
REQUEUE_AFTER_S = 60.0
#: the after-commit publish of a new delivery is left this long before the housekeeping steps in
GRACE_S = 2.0
RESPONSE_BYTES = 2048  # what is read (and quoted in last_error) of a webhook's answer
SIGNATURE_HEADER = "X-Orlab-Signature"
TIMESTAMP_HEADER = "X-Orlab-Timestamp"


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def max_attempts() -> int:
    return max(1, int(_env_float("ORLAB_NOTIFY_ATTEMPTS", 5)))


def backoff_s(attempts_made: int) -> float:
    """The wait after the ``attempts_made``-th failed attempt: base, 2 x base, 4 x base, ..."""
    return _env_float("ORLAB_NOTIFY_BACKOFF", 2.0) * 2 ** max(0, attempts_made - 1)


def timeout_s() -> float:
    return _env_float("ORLAB_NOTIFY_TIMEOUT", 5.0)


def stuck_after_s() -> float:
    # a webhook attempt takes at most total_s (its watchdog); SMTP at most a few EMAIL_TIMEOUTs
    return 4 * timeout_s() + 30


class DeliveryFailed(Exception):
    """One attempt failed; ``final``: retrying cannot help (the address is refused)."""

    def __init__(self, message: str, *, final: bool = False):
        super().__init__(message)
        self.final = final


# --- publishing -------------------------------------------------------------------------------


def publish(ids: list[int], countdown: float | None = None) -> int:
    """Send a task message per delivery; a broker error leaves the rest for the housekeeping. Never
    raises (it runs after commit: the caller's request or run end must not fail). Returns how many
    went out."""
    from workers.celery import app

    sent = 0
    for pk in ids:
        try:
            app.send_task(
                TASK, args=[pk], queue=QUEUE, countdown=countdown, retry=True, retry_policy=PUBLISH_RETRY
            )
        except Exception as exc:  # noqa: BLE001 (broker down: the row waits for the housekeeping)
            log.warning("notify: could not queue delivery %s (%s); the housekeeping will", pk, exc)
            break
        Delivery.objects.filter(pk=pk).update(queued_at=timezone.now())
        sent += 1
    return sent


def schedule(ids: list[int]) -> None:
    """Publish the deliveries' messages once the current transaction commits."""
    if ids:
        transaction.on_commit(lambda: publish(list(ids)))


# --- one attempt ------------------------------------------------------------------------------


def body_bytes(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """HMAC-SHA256 over ``<timestamp>.<body>``: the timestamp is signed too, so a receiver that refuses
    old timestamps refuses a replayed body (README "Notifications" has a receiver's check)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _post_webhook(delivery: Delivery) -> None:
    channel = delivery.channel
    try:
        target = addresses.resolve(channel.url)  # checked again now: the name may point elsewhere
    except addresses.AddressRefused as exc:
        raise DeliveryFailed(f"refused: {exc}", final=True) from None
    body = body_bytes(delivery.payload)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "orlab-webhook/1",
        "X-Orlab-Event": str(delivery.payload.get("type", "")),
        "X-Orlab-Delivery": str(delivery.pk),
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(channel.secret, timestamp, body),
    }
    conn = addresses.connection(target, timeout_s())
    watchdog = _Watchdog(conn, total_s())
    try:
        conn.request("POST", target.path, body=body, headers=headers)
        response = conn.getresponse()
        answer = response.read(RESPONSE_BYTES)
        location = response.getheader("Location", "")
    except Exception as exc:  # noqa: BLE001 (refused, reset, timed out, TLS, a malformed answer)
        if watchdog.fired:
            raise DeliveryFailed(f"no complete answer within {total_s():g} s") from None
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
    finally:
        watchdog.cancel()
        conn.close()
    if watchdog.fired:  # the cut can read as the end of the answer: what was read is not one
        raise DeliveryFailed(f"no complete answer within {total_s():g} s")
    if 200 <= response.status < 300:
        return
    if 300 <= response.status < 400:
        # a redirect could lead anywhere (an internal address): it is never followed
        raise DeliveryFailed(f"HTTP {response.status} redirect to {location[:200]!r} not followed")
    text = answer.decode("utf-8", errors="replace").strip()[:300]
    raise DeliveryFailed(f"HTTP {response.status}" + (f": {text}" if text else ""))


def total_s() -> float:
    """An attempt's whole time: the socket timeout bounds each read, not a server that answers one
    byte at a time, and the control worker must not be held by one."""
    return 3 * timeout_s()


class _Watchdog:
    """Shuts the connection's socket down when the attempt runs past ``seconds`` (a shutdown, unlike
    a close, wakes a read blocked in another thread)."""

    def __init__(self, conn, seconds: float):
        self.fired = False
        self._conn = conn
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self) -> None:
        self.fired = True
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: nothing to cut
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def _send_email(delivery: Delivery) -> None:
    from django.conf import settings
    from django.core.mail import EmailMessage

    subject, text = payloads.email_text(delivery.payload)
    try:
        EmailMessage(subject, text, settings.DEFAULT_FROM_EMAIL, list(delivery.channel.emails)).send()
    except Exception as exc:  # noqa: BLE001 (smtplib's and socket's errors alike: this attempt failed)
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None


def _attempt(delivery: Delivery) -> None:
    if not delivery.channel.enabled:
        raise DeliveryFailed("the channel was disabled", final=True)
    if delivery.channel.kind == Channel.Kind.WEBHOOK:
        _post_webhook(delivery)
    else:
        _send_email(delivery)


def send(pk: int) -> str:
    """One attempt at delivery ``pk`` (the task's body). Returns what became of it: sent, retry,
    failed, or skipped (not pending and due: another message of it got there first, or it is done)."""
    now = timezone.now()
    claimed = Delivery.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now), pk=pk, status=Status.PENDING
    ).update(status=Status.SENDING, claimed_at=now, attempts=F("attempts") + 1)
    if not claimed:
        return "skipped"
    delivery = Delivery.objects.select_related("channel").get(pk=pk)
    try:
        _attempt(delivery)
    except DeliveryFailed as exc:
        return _failed(delivery, str(exc), final=exc.final)
    Delivery.objects.filter(pk=pk, status=Status.SENDING).update(
        status=Status.SENT, sent_at=timezone.now(), last_error="", next_attempt_at=None
    )
    return "sent"


def _failed(delivery: Delivery, error: str, *, final: bool = False) -> str:
    error = f"attempt {delivery.attempts}: {error}"[:2000]
    mine = Delivery.objects.filter(pk=delivery.pk, status=Status.SENDING)
    if final or delivery.attempts >= max_attempts():
        mine.update(status=Status.FAILED, last_error=error, next_attempt_at=None)
        log.warning("notify: delivery %s failed for good: %s", delivery.pk, error)
        return "failed"
    wait = backoff_s(delivery.attempts)
    if mine.update(
        status=Status.PENDING, last_error=error, next_attempt_at=timezone.now() + timedelta(seconds=wait)
    ):
        publish([delivery.pk], countdown=wait)
    return "retry"


# --- housekeeping -----------------------------------------------------------------------------


def send_due() -> int:
    """The housekeeping's step: attempts of dead workers count as failed, and every pending delivery
    that is due and has no recent message gets one. Returns how many deliveries were (re)queued."""
    now = timezone.now()
    stuck = Delivery.objects.filter(
        status=Status.SENDING, claimed_at__lt=now - timedelta(seconds=stuck_after_s())
    )
    retried = 0
    for delivery in stuck.select_related("channel")[:200]:
        retried += _failed(delivery, "the worker stopped while sending (no answer recorded)") == "retry"
    due = (
        Delivery.objects.filter(status=Status.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now - timedelta(seconds=GRACE_S)))
        .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=now - timedelta(seconds=REQUEUE_AFTER_S)))
        .filter(created_at__lt=now - timedelta(seconds=GRACE_S))
        .order_by("pk")
        .values_list("pk", flat=True)[:500]
    )
    return retried + publish(list(due))
