"""kombu's filesystem transport with a first-in-first-out order that holds however long the machine
has been up (the embedded default's broker; webapp/settings.py registers it as ``orlabfs://``).

kombu 5 names a message ``<milliseconds since boot>_<uuid>.<queue>.msg`` and a consumer takes the
first name in text order. Once that number gains a digit (at 10,000 s of uptime, 100,000 s, ...) a
new message ("10000000_...") sorts before an older one ("9999999_...") and jumps the queue. Here a
message is named by wall-clock nanoseconds zero-padded to 20 digits (fixed width, so text order is
time order until the year 5138), and the consumer orders names by that number; names left by the
stock transport (a queue that outlived an upgrade) sort numerically and before ours, since they
were written earlier.

A message a worker takes is not deleted but moved (one atomic rename) into the ``reserved`` folder
next to the queue folder, named ``<host>@<pid>@<its queue name>``, and deleted when the worker acks
it (or put back on the queue when it is rejected or restored at shutdown). So the outbox can tell
where a sent message is (webapp.outbox.broker): waiting in the queue, reserved by a worker process
that is alive, or gone (in neither place, or reserved by a process of this host that no longer
exists: kombu keeps unacked messages in the worker's memory, so they died with it).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from queue import Empty

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

STAMP_DIGITS = 20


_last_stamp = 0
_stamp_lock = threading.Lock()


def _next_stamp() -> int:
    """Wall-clock nanoseconds, strictly increasing within this process (a clock stepped back by NTP
    must not put a later message of ours before an earlier one)."""
    global _last_stamp
    with _stamp_lock:
        _last_stamp = max(time.time_ns(), _last_stamp + 1)
        return _last_stamp


def message_name(queue: str, stamp_ns: int | None = None) -> str:
    """The file name of a message put now (or at ``stamp_ns``) on ``queue``."""
    stamp = _next_stamp() if stamp_ns is None else stamp_ns
    return f"{stamp:0{STAMP_DIGITS}d}_{uuid.uuid4()}.{queue}.msg"


def fifo_key(filename: str) -> tuple[int, int, str]:
    """Sort key of a message file name: stock kombu names (milliseconds since boot, any width)
    first and numerically, then ours by their fixed-width stamp; the uuid breaks ties."""
    stamp, _, _ = filename.partition("_")
    number = int(stamp) if stamp.isdigit() else 0
    ours = len(stamp) == STAMP_DIGITS and stamp.isdigit()
    return (1 if ours else 0, number, filename)


def reserved_folder(data_folder_in: str) -> str:
    """The folder of taken, not yet acked messages: beside the queue folder (same filesystem, so a
    rename moves a message there atomically)."""
    return os.path.join(os.path.dirname(os.path.abspath(data_folder_in)), "reserved")


def reservation_name(name: str, host: str | None = None, pid: int | None = None) -> str:
    return f"{host or socket.gethostname()}@{pid or os.getpid()}@{name}"


def parse_reservation(filename: str) -> tuple[str, int, str] | None:
    """(host, pid, message file name) of a reservation file, None for anything else."""
    host, sep, rest = filename.partition("@")
    pid, sep2, name = rest.partition("@")
    if not (sep and sep2 and pid.isdigit()):
        return None
    return host, int(pid), name


class Channel(filesystem.Channel):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.reserved_folder = reserved_folder(self.data_folder_in)
        os.makedirs(self.reserved_folder, exist_ok=True)
        self._reservations: dict[str, str] = {}  # delivery tag -> reservation file
        self._no_ack_queues: set[str] = set()  # consumed without acks: nothing to keep

    # --- reservations ---------------------------------------------------------------------------
    def basic_consume(self, queue, no_ack, callback, consumer_tag, **kwargs):
        if no_ack:
            self._no_ack_queues.add(queue)
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_get(self, queue, no_ack=False, **kwargs):
        if no_ack and queue not in self._no_ack_queues:  # never acked: take it the old way
            self._no_ack_queues.add(queue)
            try:
                return super().basic_get(queue, no_ack=no_ack, **kwargs)
            finally:
                self._no_ack_queues.discard(queue)
        return super().basic_get(queue, no_ack=no_ack, **kwargs)

    def basic_ack(self, delivery_tag, multiple=False):
        super().basic_ack(delivery_tag, multiple)
        self._release(delivery_tag)

    def basic_reject(self, delivery_tag, requeue=False):
        super().basic_reject(delivery_tag, requeue=requeue)  # a requeue puts it back first
        self._release(delivery_tag)

    def _restore(self, message):
        """Back on its queue (a reject with requeue, or a worker's warm shutdown), then unreserved."""
        super()._restore(message)
        self._release(message.delivery_tag)

    def _release(self, delivery_tag) -> None:
        path = self._reservations.pop(delivery_tag, None)
        if path is None:
            return
        try:
            if self.store_processed:
                name = parse_reservation(os.path.basename(path))
                shutil.move(path, os.path.join(self.processed_folder, name[2] if name else path))
            else:
                os.remove(path)
        except FileNotFoundError:
            pass  # the outbox removed the reservation of a worker it saw dead (not this one)

    # --- queue ----------------------------------------------------------------------------------
    def _put(self, queue, payload, **kwargs):
        """Put ``payload`` onto ``queue``: written under a temporary name and renamed into the queue
        folder, so a consumer never picks up a half-written file."""
        name = message_name(queue)
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".partial-{name}")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue):
        """Take the oldest message of ``queue`` (see ``fifo_key``) into the reserved folder, where it
        stays until it is acked (module docstring); a queue consumed without acks deletes it at once."""
        suffix = f"{queue}.msg"
        names = [n for n in os.listdir(self.data_folder_in) if n.partition(".")[2] == suffix]
        keep = queue not in self._no_ack_queues
        for name in sorted(names, key=fifo_key):
            path = os.path.join(self.data_folder_in, name)
            if keep:
                claimed = os.path.join(self.reserved_folder, reservation_name(name))
            else:
                claimed = f"{path}.claimed-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                # a rename within one filesystem is atomic: of several consumers exactly one gets
                # the file (the stock transport moves it to the temp dir, a copy across filesystems)
                os.rename(path, claimed)
            except OSError:
                continue  # another consumer took it
            try:
                with open(claimed, "rb") as f:
                    payload = loads(bytes_to_str(f.read()))
                tag = (payload.get("properties") or {}).get("delivery_tag") if keep else None
                if tag is not None:
                    self._reservations[tag] = claimed
                elif self.store_processed:
                    shutil.move(claimed, os.path.join(self.processed_folder, name))
                else:
                    os.remove(claimed)
            except (OSError, ValueError, AttributeError) as exc:
                raise ChannelError(f"Cannot read file {claimed!r} from queue.") from exc
            return payload
        raise Empty()


class Transport(filesystem.Transport):
    Channel = Channel
