"""How an import stores its rows: one COPY per file on PostgreSQL, bulk_create elsewhere.

Where the time of a PostgreSQL import goes (200,000 generated pairs, CPU seconds of the inserting
backend): to_tsvector for the search column ~4, heap and b-trees ~2.5, the GIN index ~2.5, while
Python's parsing and validation take under 1. So the server is the bottleneck, and two things keep
it busy and share its work out:

* the whole file goes through ONE COPY, so PostgreSQL inserts while Python parses the next rows
  (a COPY per batch left each side idle while the other worked);
* the search vectors of preference pairs are computed by a second connection, in a thread, a batch
  ahead of the COPY, and the COPY carries them (``search`` is a plain column since datasets
  migration 0008; its trigger fills it for every other writer): to_tsvector runs on another core.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from django.db import connection, connections

BATCH_ROWS = 5000  # bulk_create batches (SQLite)
VECTOR_BATCH = 1000  # pairs per round trip of the vector connection
VECTORS_AHEAD = 2  # batches in flight: the COPY never waits, and memory stays bounded
# ... and bytes: a row may hold up to readers.MAX_RECORD_BYTES of text, so batches of rows alone
# would let 1,000 large rows (GBs) wait in memory, and one vector query beyond 1 GB of text is
# refused by PostgreSQL ("invalid memory alloc request size").
BATCH_BYTES = 16 << 20

# New GIN entries wait in the index's pending list and are merged in when it is full, sorted, in
# memory of work_mem: with the defaults (4MB each) a million pairs made hundreds of small merges.
# Larger batches: a tenth less work for the inserting backend. For this transaction only.
GIN_BATCHES = "SET LOCAL gin_pending_list_limit = '64MB'; SET LOCAL work_mem = '64MB'"

# The same expression as the trigger of migration 0008 (prompt || ' ' || chosen_text).
VECTORS_SQL = (
    "SELECT to_tsvector('english', t)::text FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, i) ORDER BY i"
)


class _SearchVectors:
    """Buffers pair rows, has a second connection compute their search vectors, and hands them on
    (with the vector appended) in the order they came."""

    def __init__(self, write_row: Callable[[tuple], None], prompt_at: int, chosen_text_at: int):
        self.write_row = write_row
        self.at = (prompt_at, chosen_text_at)
        self.rows: list[tuple] = []
        self.bytes = 0
        self.pending: deque[tuple[list[tuple], Future]] = deque()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="pair-vectors")
        self.conn = None  # created (and closed) in the pool's thread, as Django wants

    def add(self, row: tuple) -> None:
        self.rows.append(row)
        self.bytes += _text_bytes(row)
        if len(self.rows) >= VECTOR_BATCH or self.bytes >= BATCH_BYTES:
            self._submit()
            while len(self.pending) > VECTORS_AHEAD:
                self._write_oldest()

    def finish(self) -> None:
        if self.rows:
            self._submit()
        while self.pending:
            self._write_oldest()

    def close(self) -> None:
        for _, future in self.pending:
            future.cancel()
        self.pool.submit(self._close).result()
        self.pool.shutdown()

    def _submit(self) -> None:
        p, c = self.at
        texts = [f"{row[p]} {row[c]}" for row in self.rows]
        self.pending.append((self.rows, self.pool.submit(self._vectors, texts)))
        self.rows, self.bytes = [], 0

    def _write_oldest(self) -> None:
        rows, future = self.pending.popleft()
        for row, vector in zip(rows, future.result(), strict=True):
            self.write_row((*row, vector))

    def _vectors(self, texts: list[str]) -> list[str]:
        if self.conn is None:
            self.conn = connections.create_connection("default")
        with self.conn.cursor() as cur:
            cur.execute(VECTORS_SQL, [texts])
            return [v for (v,) in cur.fetchall()]

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()


@contextlib.contextmanager
def row_writer(model, fields: list[str]) -> Iterator[Callable[[tuple], None]]:
    """A function that stores one row (values in ``fields`` order), inside the caller's
    transaction. An exception inside the block aborts the COPY, and the transaction with it."""
    if connection.vendor != "postgresql":
        yield from _orm_writer(model, fields)
        return
    table = model._meta.db_table
    search = model._meta.model_name == "preferencepair"
    cols = ", ".join(f'"{f}"' for f in fields + (["search"] if search else []))
    with connection.cursor() as cur:
        if search:
            cur.execute(GIN_BATCHES)
        with cur.cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
            if not search:
                yield copy.write_row
                return
            vectors = _SearchVectors(copy.write_row, fields.index("prompt"), fields.index("chosen_text"))
            try:
                yield vectors.add
                vectors.finish()
            finally:
                vectors.close()
        if search:  # what is still pending goes into the index now, not into every search's scan
            cur.execute("SELECT gin_clean_pending_list('pair_search_gin'::regclass)")


def _text_bytes(row: tuple) -> int:
    return sum(len(v) for v in row if isinstance(v, str))


def _orm_writer(model, fields: list[str]) -> Iterator[Callable[[tuple], None]]:
    json_fields = {"chosen", "rejected", "metadata", "tests"}
    batch: list = []
    size = 0

    def write(row: tuple) -> None:
        nonlocal size
        kw = {f: (json.loads(v) if f in json_fields else v) for f, v in zip(fields, row, strict=True)}
        batch.append(model(**kw))
        size += _text_bytes(row)
        if len(batch) >= BATCH_ROWS or size >= BATCH_BYTES:
            model.objects.bulk_create(batch, batch_size=1000)
            batch.clear()
            size = 0

    yield write
    model.objects.bulk_create(batch, batch_size=1000)
