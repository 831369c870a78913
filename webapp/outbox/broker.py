"""Where a sent message is in the broker, for the re-send rule (webapp.outbox.sender.resend_gone).

Only Redis can be inspected: a queue is a list (one per priority step), and a message a worker took
with late acknowledgement sits in kombu's ``unacked`` hash until it is acked, with the time it was
taken in ``unacked_index``. For other brokers (the embedded filesystem one, AMQP) the answer is
"unknown", and a message that went out is never re-sent there."""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.conf import settings

#: kombu's Redis transport: priority queues are ``<queue>\x06\x16<step>`` for steps other than 0
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
UNACKED, UNACKED_INDEX = "unacked", "unacked_index"


@dataclass
class Location:
    where: str  # "queued" | "reserved" | "absent"
    tag: str = ""  # the delivery tag of a reservation
    since: float = 0.0  # unix time a worker took it (reserved)


def _redis():
    url = settings.CELERY_BROKER_URL
    if not url.startswith(("redis://", "rediss://")):
        return None
    import redis

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def _task_id(raw: bytes | str) -> str | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    if isinstance(body, list):  # an unacked entry: [message, exchange, routing key]
        body = body[0] if body else {}
    return (body.get("headers") or {}).get("id") if isinstance(body, dict) else None


def locate(queue: str, task_id: str) -> Location | None:
    """Where the message with ``task_id`` is: still in ``queue``, reserved by a worker (not acked),
    or absent from the broker. None when the broker cannot be inspected (not Redis, or down)."""
    client = _redis()
    if client is None:
        return None
    needle = task_id.encode()
    try:
        for key in (queue, *(f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS)):
            for raw in client.lrange(key, 0, -1):
                if needle in raw and _task_id(raw) == task_id:
                    return Location("queued")
        for tag, raw in client.hscan_iter(UNACKED):
            if needle in raw and _task_id(raw) == task_id:
                since = client.zscore(UNACKED_INDEX, tag) or 0.0
                return Location("reserved", tag.decode(), float(since))
    except Exception:  # noqa: BLE001 (the broker is down: nothing can be proven)
        return None
    return Location("absent")


def drop_reservation(tag: str) -> None:
    """Forget a dead worker's reservation, so Redis does not restore it later as a second copy of the
    message that is about to be re-sent."""
    client = _redis()
    if client is not None:
        client.hdel(UNACKED, tag)
        client.zrem(UNACKED_INDEX, tag)
