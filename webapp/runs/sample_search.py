"""The completions' full-text index, filled after ingest commits (issue 14: "the search index may lag
ingest by a few seconds").

Why: a GIN entry per lexeme (~180 for a 2 KB completion) written by the COPY made ingest ~25x slower
than the COPY itself (bench/RESULTS.md). Now an ingest batch only queues itself (one
``SampleSearchPending`` row: run, lowest and highest sample id, in the batch's transaction), and
``index_pending`` writes the batches' vectors into ``SampleSearch`` in bulk, many batches a statement.

- Idempotent and restart-safe: one transaction takes queue rows (locked), reads their samples, decodes
  the completions (webapp.runs.sample_text: the text is compressed, SQL cannot read it), inserts their
  vectors (``ON CONFLICT DO NOTHING``) and deletes the queue rows; a crash rolls it all back, so the
  batch stays queued. Concurrent
  indexers take different queue rows (``FOR UPDATE SKIP LOCKED``).
- Searches stay exact while the index lags: webapp.selectors.samples unions the indexed matches with
  the queued rows of the run, decoded and matched directly (``pending_matches``; a substring search
  rechecks them with the rest, ``pending_ids_sql``): a search right after ingest finds them.
- Who runs it: each process that ingests starts a daemon thread after its batch commits (``kick``),
  which drains the queue; a trainer's sink drains its run's rows when it closes (a daemon thread dies
  with its process); the housekeeping may also call ``index_pending`` as a sweeper (rows queued by a
  process killed before indexing). PostgreSQL only (SQLite searches by substring).
"""

from __future__ import annotations

import logging
import threading

from django.db import connection, connections, transaction

from webapp.runs import sample_text
from webapp.runs.metric_store import fetch_sql, raw_cursor
from webapp.runs.models import Sample, SampleSearch, SampleSearchPending

log = logging.getLogger(__name__)

BATCHES_PER_STATEMENT = 10  # queue rows (ingest batches, ~1,000 samples each) indexed per transaction
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
                f"SELECT id, run_id, first_id, last_id FROM {PENDING} {only_run} ORDER BY id LIMIT %s {lock}",
                params,
            )
            taken = cur.fetchall()
            if taken:
                # the texts are compressed (webapp.runs.sample_text): decoded here, their vectors
                # computed by PostgreSQL from the decoded text
                rows = fetch_sql(  # in binary: Django's cursor ships the frames as hex text
                    f"""SELECT s.id, s.run_id, s.completion, s.completion_z, s.completion_dict
                        FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS t(run_id, first_id, last_id)
                        JOIN {SAMPLES} s ON s.id BETWEEN t.first_id AND t.last_id AND s.run_id = t.run_id""",
                    [[t[1] for t in taken], [t[2] for t in taken], [t[3] for t in taken]],
                )
                if rows:
                    done += _execute_binary(
                        f"""INSERT INTO {SEARCH} (sample_id, run_id, tsv)
                            SELECT u.id, u.run_id, to_tsvector('simple', u.text)
                            FROM unnest(%b::bigint[], %b::bigint[], %b::text[]) AS u(id, run_id, text)
                            ON CONFLICT (sample_id) DO NOTHING""",
                        [
                            [r[0] for r in rows],
                            [r[1] for r in rows],
                            [sample_text.text_of(r[2], r[3], r[4]) for r in rows],
                        ],
                    )
                cur.execute(f"DELETE FROM {PENDING} WHERE id = ANY(%s)", [[t[0] for t in taken]])
        statements += 1
        if not taken:
            break
    return done


def pending_matches(run_id: int, websearch: str) -> list[int]:
    """The ids of a run's samples not indexed yet whose completion matches ``websearch`` (web-search
    syntax, the 'simple' configuration): decoded here, matched by PostgreSQL (the same parser as the
    index). Costs what the queue holds (a few seconds of ingest at most while the indexers keep up)."""
    if not enabled():
        return []
    rows = fetch_sql(
        f"SELECT u.id, u.completion, u.completion_z, u.completion_dict FROM {PENDING} p JOIN {SAMPLES} u "
        "ON u.id BETWEEN p.first_id AND p.last_id AND u.run_id = p.run_id WHERE p.run_id = %s",
        [run_id],
    )
    if not rows:
        return []
    with raw_cursor() as raw:
        raw.execute(
            "SELECT u.id FROM unnest(%b::bigint[], %b::text[]) AS u(id, text) "
            "WHERE to_tsvector('simple', u.text) @@ websearch_to_tsquery('simple', %s)",
            [[r[0] for r in rows], [sample_text.text_of(r[1], r[2], r[3]) for r in rows], websearch],
        )
        return [i for (i,) in raw.fetchall()]


def _execute_binary(sql: str, params: list) -> int:
    """One statement with its parameters bound server-side in binary (``%b``), on Django's connection
    (its transaction). Django's cursors bind client-side: 10,000 2 KB texts quoted into an array literal
    cost ~1.2 s of Python per statement, binary ~0.15 s. Returns the rows affected."""
    with raw_cursor() as raw:
        raw.execute(sql, params)
        return raw.rowcount


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
