"""How a rollout's completion is stored (issue 14: "storage of sample text <= 1.5x its size compressed
with zstd level 3"): one zstd frame per completion (``Sample.completion_z``, random access), compressed
with the run's dictionary (``SampleTextDictionary``; ``Sample.completion_dict`` names it, 0: no
dictionary, a plain zstd -3 frame). The codec itself is webapp.runs.sample_codec (no Django).

- Ingest (webapp.runs.samples._insert, PostgreSQL) calls ``compress(run_id, texts)`` before its COPY
  and leaves ``Sample.completion`` empty. SQLite (embedded mode) keeps the text in ``completion``.
- Training: the ingest batch that brings a run without a dictionary to ``TRAIN_AFTER`` stored
  completions trains it (chosen over the housekeeping: nothing in this code base runs one every few
  seconds, and a run logging 20,000 samples/s would store ~1M rows with plain frames, 1.6x, before a
  periodic task came round). It trains on up to 2,000 of the run's first completions (this batch's
  and the stored ones), once: ``pg_try_advisory_xact_lock`` so a concurrent batch of the same run does
  not wait or train again (it compresses without a dictionary). Costs that one batch ~0.2-0.7 s.
  Rows stored before the dictionary keep their plain frames (``recompress_run`` rewrites them).
- Readers: loading a Sample decodes it (``Sample.from_db``); code reading columns itself calls
  ``decode(frame, dict_id)`` / ``text_of(completion, frame, dict_id)``. Dictionaries are cached per
  process (never changed once written; a run's is cached only after the transaction that wrote it
  commits, so a rolled-back dictionary is never used).
- Rows stored before migration 0017 keep their text in ``completion`` (``completion_z`` NULL): every
  reader handles both (``text_of``); ``recompress_run`` converts a run's rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from django.db import connection, transaction

from webapp.runs import sample_codec
from webapp.runs.metric_store import fetch_sql, raw_cursor
from webapp.runs.models import Sample, SampleTextDictionary

log = logging.getLogger(__name__)

TRAIN_AFTER = 1_000  # completions a run stores with plain frames before its dictionary is trained
LOCK_CLASS = 14_002  # pg_advisory lock class id of a run's dictionary training
RETRY_TRAIN_S = 600  # a run whose completions could not train a dictionary is tried again after this
SAMPLES = Sample._meta.db_table
DICTS = SampleTextDictionary._meta.db_table

_lock = threading.Lock()
_data: dict[int, bytes] = {}  # dictionary id -> its bytes
_of_run: dict[int, int] = {}  # run id -> its dictionary id (committed ones only)
_no_train_until: dict[int, float] = {}  # run id -> monotonic time


def enabled() -> bool:
    """Completions are compressed on PostgreSQL; SQLite's embedded mode keeps text (its searches are
    SQL substring matches)."""
    return connection.vendor == "postgresql"


# --- reading -----------------------------------------------------------------------------------------------


def _dictionary(dict_id: int) -> bytes:
    data = _data.get(dict_id)
    if data is None:
        row = SampleTextDictionary.objects.filter(pk=dict_id).values_list("data", flat=True).first()
        if row is None:
            raise LookupError(f"sample text dictionary {dict_id} is missing")
        data = _data[dict_id] = bytes(row)
    return data


def _codec(dict_id: int) -> sample_codec.Codec:
    return sample_codec.codec(dict_id, _dictionary(dict_id) if dict_id else None)


def decode(frame: bytes | memoryview, dict_id: int) -> str:
    """One stored frame as text."""
    return _codec(dict_id or 0).decompress(frame)


def text_of(completion: str | None, frame: bytes | memoryview | None, dict_id: int | None) -> str:
    """A row's completion from its three columns: the frame when there is one, else the legacy text."""
    if frame is None:
        return completion or ""
    return decode(frame, dict_id or 0)


# --- writing -----------------------------------------------------------------------------------------------


def dictionary_of(run_id: int) -> int:
    """The run's dictionary id, 0 when it has none yet (a committed one is cached for the process)."""
    dict_id = _of_run.get(run_id)
    if dict_id is not None:
        return dict_id
    row = SampleTextDictionary.objects.filter(run_id=run_id).order_by("id").values_list("id", "data").first()
    if row is None:
        return 0
    dict_id, data = row
    with _lock:
        _data.setdefault(dict_id, bytes(data))
        _of_run[run_id] = dict_id
    return dict_id


def compress(run_id: int, texts: Sequence[str]) -> tuple[int, list[bytes]]:
    """The frames of a batch's completions and the dictionary they use (in the ingest's transaction:
    may train the run's dictionary, see the module docstring)."""
    dict_id = dictionary_of(run_id)
    if not dict_id:
        dict_id = _maybe_train(run_id, texts)
    return dict_id, _codec(dict_id).compress_many(texts)


def _stored_up_to(run_id: int, limit: int) -> int:
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM {SAMPLES} WHERE run_id = %s LIMIT %s) x", [run_id, limit]
        )
        return cur.fetchone()[0]


def train_from_stored(run_id: int) -> int:
    """The run's dictionary, trained now from its stored completions when it has none and enough of
    them (rows from before migration 0017: no batch came to train it); 0 when it has too few."""
    dict_id = dictionary_of(run_id)
    if not dict_id:
        with transaction.atomic():
            dict_id = _maybe_train(run_id, [])
        dictionary_of(run_id)  # committed: cached for this process
    return dict_id


def _maybe_train(run_id: int, texts: Sequence[str]) -> int:
    until = _no_train_until.get(run_id)
    if until is not None and time.monotonic() < until:
        return 0
    need = TRAIN_AFTER - len(texts)
    if need > 0 and _stored_up_to(run_id, need) < need:
        return 0
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [LOCK_CLASS, run_id % 2**31])
        if not cur.fetchone()[0]:
            return 0  # another batch of this run is training: this one goes without
        cur.execute(f"SELECT id, data FROM {DICTS} WHERE run_id = %s ORDER BY id LIMIT 1", [run_id])
        row = cur.fetchone()
        if row is not None:  # trained and committed since dictionary_of looked
            with _lock:
                _data.setdefault(row[0], bytes(row[1]))
                _of_run[run_id] = row[0]
            return row[0]
        # the run's first completions (any order: PostgreSQL's cheapest), then this batch's
        want = max(0, sample_codec.TRAIN_SAMPLES - len(texts))
        rows = fetch_sql(
            f"SELECT completion, completion_z, completion_dict FROM {SAMPLES} WHERE run_id = %s LIMIT %s",
            [run_id, want],
        )
        stored = [text_of(*r) for r in rows]
    t = time.perf_counter()
    data = sample_codec.train([*stored, *texts])
    if data is None:
        _no_train_until[run_id] = time.monotonic() + RETRY_TRAIN_S
        return 0
    record = SampleTextDictionary.objects.create(run_id=run_id, data=data)
    log.info(
        "run %s: sample text dictionary %s (%d bytes) trained on %d completions in %.2f s",
        run_id, record.pk, len(data), len(stored) + len(texts), time.perf_counter() - t,
    )  # fmt: skip
    with _lock:
        _data[record.pk] = data
    transaction.on_commit(lambda: _of_run.__setitem__(run_id, record.pk))
    return record.pk


def recompress_run(run_id: int, *, batch: int = 2_000) -> int:
    """Rewrite a run's rows that do not use its dictionary (legacy text rows, plain frames stored
    before the dictionary was trained) with it; returns the rows rewritten. Batches of ``batch`` rows,
    each its own transaction (safe beside ingest: only rows with another dictionary are touched, and a
    row is rewritten with the same text). No dictionary yet: nothing to do. Not run automatically."""
    if not enabled():
        return 0
    dict_id = dictionary_of(run_id)
    if not dict_id:
        return 0
    done, last = 0, 0
    while True:
        with transaction.atomic():
            rows = fetch_sql(  # frames in binary (Django's cursor ships bytea as hex text)
                f"SELECT id, completion, completion_z, completion_dict FROM {SAMPLES} WHERE run_id = %s "
                "AND completion_dict <> %s AND id > %s ORDER BY id LIMIT %s FOR UPDATE",
                [run_id, dict_id, last, batch],
            )
            if not rows:
                return done
            last = rows[-1][0]
            frames = _codec(dict_id).compress_many([text_of(c, z, d) for _, c, z, d in rows])
            with raw_cursor() as raw:  # binary parameters (Django quotes them)
                raw.execute(
                    f"UPDATE {SAMPLES} s SET completion_z = u.z, completion_dict = %s, completion = '' "
                    "FROM unnest(%b::bigint[], %b::bytea[]) AS u(id, z) WHERE s.id = u.id",
                    [dict_id, [r[0] for r in rows], frames],
                )
            done += len(rows)
