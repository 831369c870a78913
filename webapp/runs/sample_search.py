"""The completions' full-text index, filled after ingest commits (issue 14: "the search index may lag
ingest by a few seconds").

Why: a GIN entry per lexeme (~180 for a 2 KB completion) written by the COPY made ingest ~25x slower
than the COPY itself (bench/RESULTS.md). Now an ingest batch only queues itself (one
``SampleSearchPending`` row: run, lowest and highest sample id, in the batch's transaction), and
``index_pending`` writes the batches' vectors into ``SampleSearch`` in bulk, many batches a statement.

- Idempotent and restart-safe: one statement deletes the queue rows it takes and inserts their
  vectors (``ON CONFLICT DO NOTHING``); a crash rolls both back, so the batch stays queued. Concurrent
  indexers take different queue rows (``FOR UPDATE SKIP LOCKED``).
- Searches stay exact while the index lags: webapp.selectors.samples unions the indexed matches with
  the queued rows of the run, matched directly (``pending_ids_sql``): a search right after ingest finds
  them.
- Who runs it: each process that ingests starts a daemon thread after its batch commits (``kick``),
  which drains the queue; a trainer's sink drains its run's rows when it closes (a daemon thread dies
  with its process); the housekeeping may also call ``index_pending`` as a sweeper (rows queued by a
  process killed before indexing). PostgreSQL only (SQLite searches by substring).
"""

from __future__ import annotations

import logging
import threading

from django.db import connection, connections, transaction

from webapp.runs.models import Sample, SampleSearch, SampleSearchPending

log = logging.getLogger(__name__)

BATCHES_PER_STATEMENT = 20  # queue rows (ingest batches, ~1,000 samples each) indexed per transaction
SEARCH = SampleSearch._meta.db_table
PENDING = SampleSearchPending._meta.db_table
SAMPLES = Sample._meta.db_table


def enabled() -> bool:
    return connection.vendor == "postgresql"


def queue_batch(run_id: int, ids: list[int]) -> None:
    """In the ingest's transaction: these new samples still need their vectors. Starts the indexer
    thread once the transaction commits."""
    if not ids or not enabled():
        return
    SampleSearchPending.objects.create(run_id=run_id, first_id=min(ids), last_id=max(ids))
    transaction.on_commit(kick)


def index_pending(max_batches: int | None = None, *, run_id: int | None = None) -> int:
    """Index queued batches (of one run, or all) until the queue is empty (or ``max_batches``
    statements ran); returns the samples indexed here. Rows retention deleted meanwhile are not found."""
    if not enabled():
        return 0
    only_run = "" if run_id is None else "WHERE run_id = %s"
    # one run's (a sink closing): wait for batches another indexer holds, so none is still in flight
    # on return; all (the indexer threads, a sweeper): skip them, that indexer writes them
    lock = "FOR UPDATE" if run_id is not None else "FOR UPDATE SKIP LOCKED"
    params = ([] if run_id is None else [run_id]) + [BATCHES_PER_STATEMENT]
    done = statements = 0
    while max_batches is None or statements < max_batches:
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute(
                f"""WITH taken AS (
                        DELETE FROM {PENDING} WHERE id IN (
                            SELECT id FROM {PENDING} {only_run} ORDER BY id LIMIT %s {lock})
                        RETURNING run_id, first_id, last_id)
                    , written AS (
                        INSERT INTO {SEARCH} (sample_id, run_id, tsv)
                        SELECT s.id, s.run_id, to_tsvector('simple', s.completion)
                        FROM taken t JOIN {SAMPLES} s
                          ON s.id BETWEEN t.first_id AND t.last_id AND s.run_id = t.run_id
                        ON CONFLICT (sample_id) DO NOTHING
                        RETURNING 1)
                    SELECT (SELECT count(*) FROM taken), (SELECT count(*) FROM written)""",
                params,
            )
            taken, written = cur.fetchone()
        statements += 1
        done += written
        if not taken:
            break
    return done


SWEEP_STATEMENTS = 50  # a housekeeping pass indexes at most ~1M samples (50 x 20 batches of ~1,000)


def sweep() -> int:
    """The housekeeping's step: rows queued by processes that ended before indexing them (a killed
    trainer or web worker), bounded so one pass stays short."""
    return index_pending(max_batches=SWEEP_STATEMENTS)


def pending_ids_sql(run_alias: str = "%s") -> str:
    """SQL selecting the ids of a run's samples not indexed yet (one ``%s``: the run id)."""
    return (
        f"SELECT u.id FROM {PENDING} p JOIN {SAMPLES} u ON u.id BETWEEN p.first_id AND p.last_id "
        f"AND u.run_id = p.run_id WHERE p.run_id = {run_alias}"
    )


def lag(run_id: int | None = None) -> int:
    """Samples still queued (an upper bound: a queue row's id range may hold other runs' ids)."""
    qs = SampleSearchPending.objects.all()
    if run_id is not None:
        qs = qs.filter(run_id=run_id)
    return sum(last - first + 1 for first, last in qs.values_list("first_id", "last_id"))


# --- the indexer thread -----------------------------------------------------------------------------------

_wake = threading.Event()
_thread: threading.Thread | None = None
_thread_lock = threading.Lock()


def kick() -> None:
    """Wake this process's indexer thread (started on first use). Many ingest batches arriving while it
    works are drained by its next pass, so the indexer runs big statements under load."""
    global _thread
    _wake.set()
    with _thread_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_loop, name="orlab-sample-indexer", daemon=True)
            _thread.start()


def _loop() -> None:
    while True:
        _wake.wait()
        _wake.clear()
        try:
            index_pending()
        except Exception:  # the queue keeps the rows: the next kick or the housekeeping retries them
            log.exception("sample search indexer failed")
        finally:
            connections.close_all()  # this thread's connection: not held between passes
