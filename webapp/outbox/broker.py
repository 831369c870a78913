"""Where a sent message is in the broker, for the re-send rule (webapp.outbox.sender.resend_gone).

- Redis: a queue is a list (one per priority step), and a message a worker took with late
  acknowledgement sits in kombu's ``unacked`` hash until it is acked, with the time it was taken in
  ``unacked_index``.
- The embedded filesystem broker (workers.fs_transport): a queued message is a file in the queue
  folder; a taken one is a file in the ``reserved`` folder named after the worker process holding it
  (host and pid) until it is acked. A reservation of a process of this host that no longer exists is
  reported as old (``since`` 0: gone with its worker); one of another host is dated by its file.
- RabbitMQ (AMQP) cannot be inspected without taking messages off the queue (a passive declare gives
  counts only), so the answer is "unknown" and a message that went out is never re-sent there. None
  is needed for a dead worker: RabbitMQ itself puts back what an unacked consumer's closed connection
  held (see the README's queues section)."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

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


def _fs_folders() -> tuple[Path, Path] | None:
    """(queue folder, reserved folder) of the embedded filesystem broker, else None."""
    if not settings.CELERY_BROKER_URL.startswith("orlabfs://"):
        return None
    from workers.fs_transport import reserved_folder

    queue_dir = (getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", None) or {}).get("data_folder_in")
    if not queue_dir:
        return None
    return Path(queue_dir), Path(reserved_folder(queue_dir))


def _file_task_id(path: Path) -> str | None:
    try:
        return _task_id(path.read_bytes())
    except OSError:  # taken (or acked) while we looked
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _locate_fs(folders: tuple[Path, Path], queue: str, task_id: str) -> Location | None:
    from workers.fs_transport import parse_reservation

    queue_dir, reserved_dir = folders
    suffix = f".{queue}.msg"
    try:
        queued = [p for p in queue_dir.iterdir() if p.name.endswith(suffix)]
        reserved = (
            [p for p in reserved_dir.iterdir() if p.name.endswith(suffix)] if reserved_dir.is_dir() else []
        )
    except OSError:
        return None
    # the reservations first: a message moves from the queue folder to the reserved one, so one
    # taken between the two looks is found in the second
    for path in reserved:
        parsed = parse_reservation(path.name)
        if parsed is None or _file_task_id(path) != task_id:
            continue
        host, pid, _ = parsed
        if host == socket.gethostname():
            # this host: the holder's process tells. Alive, it is working on it (fresh); gone, the
            # message died with it (kombu kept it in that process's memory)
            return Location("reserved", str(path), time.time() if _pid_alive(pid) else 0.0)
        try:
            return Location("reserved", str(path), path.stat().st_mtime)
        except OSError:
            return None  # acked while we looked
    for path in queued:
        if _file_task_id(path) == task_id:
            return Location("queued")
    # not there either: look at the reservations once more (taken while the queue was listed)
    for path in reserved_dir.iterdir() if reserved_dir.is_dir() else []:
        if path.name.endswith(suffix) and _file_task_id(path) == task_id:
            return Location("reserved", str(path), time.time())
    return Location("absent")


def locate(queue: str, task_id: str) -> Location | None:
    """Where the message with ``task_id`` is: still in ``queue``, reserved by a worker (not acked),
    or absent from the broker. None when the broker cannot be inspected (AMQP, or down)."""
    folders = _fs_folders()
    if folders is not None:
        return _locate_fs(folders, queue, task_id)
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
    message that is about to be re-sent (the filesystem broker: its file, so it is not found again)."""
    if _fs_folders() is not None:
        Path(tag).unlink(missing_ok=True)
        return
    client = _redis()
    if client is not None:
        client.hdel(UNACKED, tag)
        client.zrem(UNACKED_INDEX, tag)
