"""kombu's filesystem transport with a first-in-first-out order that holds however long the machine
has been up (the embedded default's broker; webapp/settings.py registers it as ``orlabfs://``).

kombu 5 names a message ``<milliseconds since boot>_<uuid>.<queue>.msg`` and a consumer takes the
first name in text order. Once that number gains a digit (at 10,000 s of uptime, 100,000 s, ...) a
new message ("10000000_...") sorts before an older one ("9999999_...") and jumps the queue. Here a
message is named by wall-clock nanoseconds zero-padded to 20 digits (fixed width, so text order is
time order until the year 5138), and the consumer orders names by that number; names left by the
stock transport (a queue that outlived an upgrade) sort numerically and before ours, since they
were written earlier.
"""

from __future__ import annotations

import os
import shutil
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


class Channel(filesystem.Channel):
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
        """Take the oldest message of ``queue`` (see ``fifo_key``)."""
        suffix = f"{queue}.msg"
        names = [n for n in os.listdir(self.data_folder_in) if n.partition(".")[2] == suffix]
        for name in sorted(names, key=fifo_key):
            path = os.path.join(self.data_folder_in, name)
            claimed = f"{path}.claimed-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                # a rename within one folder is atomic: of several consumers exactly one gets the
                # file (the stock transport moves it to the temp dir, a copy across filesystems)
                os.rename(path, claimed)
            except OSError:
                continue  # another consumer took it
            try:
                with open(claimed, "rb") as f:
                    payload = f.read()
                if self.store_processed:
                    shutil.move(claimed, os.path.join(self.processed_folder, name))
                else:
                    os.remove(claimed)
            except OSError as exc:
                raise ChannelError(f"Cannot read file {claimed!r} from queue.") from exc
            return loads(bytes_to_str(payload))
        raise Empty()


class Transport(filesystem.Transport):
    Channel = Channel
