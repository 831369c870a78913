"""Rule states kept per process, written behind (issue 15a: rules must cost ingest <= 10 % CPU).

A batch used to read its (rule, run, key) states and upsert them: z-score's count/mean/M2 change
every batch, so every batch paid a write. Here a process keeps the states it has seen in memory; a
batch reads only the states it has not seen (or saw more than STATE_TTL_S ago) and marks the ones
it changed dirty; every FLUSH_EVERY_S the dirty states of ALL runs go out in ONE upsert, on the
connection of the batch that happens to be running then (no extra connection), or, when the
process has gone quiet, from a small background thread (which closes its connection afterwards).

Correct when a run's batches reach several processes: each process sends the *moments of the
points it added since its last flush* (count, mean, M2), and the upsert merges them into the row
with Chan's parallel formula, which is exact whatever the order, so no process's points are lost
or counted twice; the merged row comes back (RETURNING) and becomes the process's new base. What a
process can miss for up to a flush period is the other processes' points in its z-score baseline
(a few seconds of a run's history). ``active`` (an open episode) and ``buffer`` (a change rule's
window) are last-writer-wins, as they were when every batch wrote them.

Events are not deferred: a batch that fires inserts its events at once (webapp.alerts.engine)."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import threading
import time

from django.db import connection, transaction

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 1.0  # dirty states reach the database at most this late (a process that ingests)
STATE_TTL_S = 10.0  # a clean state seen longer ago is read again (another process may have moved it)
MAX_STATES = 200_000  # a process keeps at most this many clean states (dropped all at once, re-read)

_lock = threading.RLock()
_states: dict[tuple[int, int, str], object] = {}  # (rule, run, key) -> engine.State
_dirty: set[tuple[int, int, str]] = set()
_last_flush = [time.monotonic()]
_last_batch = [0.0]
_pid = [os.getpid()]
_thread: list[threading.Thread | None] = [None]
_idle_failing = [False]


def combine(n_a: int, mean_a: float, m2_a: float, n_b: int, mean_b: float, m2_b: float):
    """Chan et al.'s merge of two sets' (count, mean, M2): exact, in any order."""
    n = n_a + n_b
    if n_b == 0:
        return n_a, mean_a, m2_a
    if n_a == 0:
        return n_b, mean_b, m2_b
    delta = mean_b - mean_a
    return n, mean_a + delta * n_b / n, m2_a + m2_b + delta * delta * n_a * n_b / n


def _after_fork() -> None:
    """A forked child (gunicorn, celery prefork) starts empty: the parent's pending deltas are the
    parent's to flush, and its thread did not come along."""
    if _pid[0] != os.getpid():
        _pid[0] = os.getpid()
        _states.clear()
        _dirty.clear()
        _thread[0] = None


def forget() -> None:
    """Drop the clean states (a rule changed: its states may be gone); dirty ones still flush."""
    with _lock:
        for k in [k for k in _states if k not in _dirty]:
            _states.pop(k, None)


_primed: dict[int, float] = {}  # run -> when ALL its rows were read (engine's run query brings them)


def prime(run_id: int, rows, make_state) -> None:
    """Every state row of a run, read with the run itself (engine._run_row_with_states): cached,
    and the run remembered as complete, so a (rule, key) with no row needs no query to know it."""
    now = time.monotonic()
    with _lock:
        _after_fork()
        for rule_id, key, active, n, mean, m2, buffer in rows:
            ident = (rule_id, run_id, key)
            if ident in _dirty:
                continue  # this process's pending change is newer
            st = make_state(rule_id, run_id, key)
            st.pk = 0
            st.active, st.n, st.mean, st.m2 = active, n, mean, m2
            st.buffer = json.loads(buffer) if isinstance(buffer, str) else (buffer or [])
            st.synced = now
            _states[ident] = st
        _primed[run_id] = now
        if len(_primed) > MAX_STATES:
            _primed.clear()


def checkout(run_id: int, wanted: list[tuple[int, str]], make_state) -> dict:
    """{(rule, key): State} for this run: from memory, the unseen or stale ones in one query (none
    when the run's rows were all read moments ago: prime)."""
    from webapp.alerts.models import RuleState
    from webapp.runs.metric_store import fetch_sql

    now = time.monotonic()
    _last_batch[0] = now
    with _lock:
        _after_fork()
        out, missing = {}, []
        for rule_id, key in wanted:
            st = _states.get((rule_id, run_id, key))
            if st is None or (now - st.synced > STATE_TTL_S and (rule_id, run_id, key) not in _dirty):
                missing.append((rule_id, key))
            else:
                out[(rule_id, key)] = st
        if missing and now - _primed.get(run_id, -1e9) < 1.0:
            # the run's rows were all read within this batch: a missing one has no row
            for rule_id, key in missing:
                st = make_state(rule_id, run_id, key)
                st.synced = now
                _states[(rule_id, run_id, key)] = st
                out[(rule_id, key)] = st
            missing = []
    if missing:
        rows = fetch_sql(
            f'SELECT rule_id, key, active, n, mean, m2, buffer FROM "{RuleState._meta.db_table}" '
            "WHERE run_id = %s AND rule_id = ANY(%s)",
            [run_id, list({r for r, _ in missing})],
        )
        found = {(r, k): (a, n, m, q, b) for r, k, a, n, m, q, b in rows}
        with _lock:
            if len(_states) > MAX_STATES:
                for k in [k for k in _states if k not in _dirty]:
                    _states.pop(k, None)
            for rule_id, key in missing:
                ident = (rule_id, run_id, key)
                current = _states.get(ident)
                if current is not None and ident in _dirty:
                    out[(rule_id, key)] = current  # another thread changed it meanwhile: it wins
                    continue
                row = found.get((rule_id, key))
                st = make_state(rule_id, run_id, key)
                if row is not None:
                    st.pk = 0  # a row exists: a return to the default state must be written too
                    st.active, st.n, st.mean, st.m2, buffer = row
                    st.buffer = json.loads(buffer) if isinstance(buffer, str) else (buffer or [])
                st.synced = now
                _states[ident] = st
                out[(rule_id, key)] = st
    return out


def mark_dirty(states) -> None:
    with _lock:
        for st in states:
            _dirty.add((st.rule_id, st.run_id, st.key))
            if st.pk is None:
                st.pk = 0  # will have a row: from now on every change is written (engine._apply)
    _ensure_thread()


def maybe_flush() -> None:
    """Flush on the caller's connection when the last flush is FLUSH_EVERY_S old (ingest calls it
    after each batch: a process that ingests flushes ~once a second, one statement for all runs)."""
    if _dirty and time.monotonic() - _last_flush[0] >= FLUSH_EVERY_S:
        flush()


def flush(quiet: bool = False) -> int:
    """Write every dirty state in ONE upsert that merges the moments; returns how many (-1: it
    failed, and the states stay dirty for the next flush)."""
    from webapp.alerts.models import Rule, RuleState
    from webapp.runs.metric_store import raw_cursor
    from webapp.runs.models import Run

    with _lock:
        _after_fork()
        _last_flush[0] = time.monotonic()
        if not _dirty:
            return 0
        batch = []
        for ident in _dirty:
            st = _states.get(ident)
            if st is None:
                continue
            buffer = [None if isinstance(x, float) and not math.isfinite(x) else x for x in (st.buffer or [])]
            batch.append((st, st.dn, st.dmean, st.dm2, st.active, json.dumps(buffer)))
            st.dn, st.dmean, st.dm2 = 0, 0.0, 0.0  # what comes in from now on is the next flush's
        _dirty.clear()
    if not batch:
        return 0
    table = RuleState._meta.db_table
    sql = (
        f'INSERT INTO "{table}" AS s (rule_id, run_id, key, active, n, mean, m2, buffer) '
        "SELECT r, u, k, a, n, m, q, b::jsonb FROM unnest(%s::bigint[], %s::bigint[], %s::text[], "
        "%s::boolean[], %s::bigint[], %s::float8[], %s::float8[], %s::text[]) AS t(r, u, k, a, n, m, q, b) "
        # a rule or run deleted since the batch: its state goes with it (no foreign-key error)
        f'WHERE EXISTS (SELECT 1 FROM "{Rule._meta.db_table}" WHERE id = t.r) '
        f'AND EXISTS (SELECT 1 FROM "{Run._meta.db_table}" WHERE id = t.u) '
        "ON CONFLICT (run_id, rule_id, key) DO UPDATE SET active = EXCLUDED.active, buffer = EXCLUDED.buffer, "
        # Chan's merge of the row's moments with this process's new points' (SET reads the old row)
        "n = s.n + EXCLUDED.n, "
        "mean = CASE WHEN EXCLUDED.n = 0 THEN s.mean WHEN s.n = 0 THEN EXCLUDED.mean "
        "ELSE s.mean + (EXCLUDED.mean - s.mean) * EXCLUDED.n / (s.n + EXCLUDED.n) END, "
        "m2 = CASE WHEN EXCLUDED.n = 0 THEN s.m2 WHEN s.n = 0 THEN EXCLUDED.m2 "
        "ELSE s.m2 + EXCLUDED.m2 + (EXCLUDED.mean - s.mean) ^ 2 * s.n * EXCLUDED.n / (s.n + EXCLUDED.n) END "
        "RETURNING rule_id, run_id, key, n, mean, m2"
    )
    params = [
        [b[0].rule_id for b in batch], [b[0].run_id for b in batch], [b[0].key for b in batch],
        [b[4] for b in batch], [b[1] for b in batch], [b[2] for b in batch], [b[3] for b in batch],
        [b[5] for b in batch],
    ]  # fmt: skip
    try:
        # inside a caller's transaction (a test's, an atomic view) a failure must not poison it
        atomic = transaction.atomic() if connection.in_atomic_block else _nothing()
        with atomic, raw_cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
    except Exception:
        if not quiet:
            log.exception("alerts: flushing %d rule states failed (kept for the next flush)", len(batch))
        with _lock:  # put the deltas back in front of what arrived meanwhile
            for st, dn, dmean, dm2, _, _ in batch:
                st.dn, st.dmean, st.dm2 = combine(dn, dmean, dm2, st.dn, st.dmean, st.dm2)
                _dirty.add((st.rule_id, st.run_id, st.key))
        return -1
    now = time.monotonic()
    with _lock:
        for rule_id, run_id, key, n, mean, m2 in rows:
            st = _states.get((rule_id, run_id, key))
            if st is not None:  # the merged row, plus what this process added since the snapshot
                st.n, st.mean, st.m2 = combine(n, mean, m2, st.dn, st.dmean, st.dm2)
                st.synced = now
    return len(batch)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _ensure_thread() -> None:
    """The quiet-process flusher: when no batch came for FLUSH_EVERY_S, dirty states would wait for
    the next batch; this thread writes them and closes its own connection (held only meanwhile)."""
    with _lock:
        if _thread[0] is not None and _thread[0].is_alive():
            return
        t = threading.Thread(target=_idle_flusher, name="orlab-alert-states", daemon=True)
        _thread[0] = t
    t.start()


def _idle_flusher() -> None:
    while True:
        time.sleep(FLUSH_EVERY_S)
        now = time.monotonic()
        if not _dirty or now - _last_batch[0] < FLUSH_EVERY_S or now - _last_flush[0] < FLUSH_EVERY_S:
            continue
        try:
            # quiet after the first failure until one succeeds (a database down, or a test
            # process between tests): the deltas are kept and retried each second, not logged each
            _idle_failing[0] = flush(quiet=_idle_failing[0]) < 0
        except Exception:
            log.exception("alerts: idle flush failed")
        finally:
            connection.close()


@atexit.register
def _flush_at_exit() -> None:
    # best effort and silent: at interpreter exit logging's streams may be closed already, and a
    # test process's database is gone by then
    if _dirty and _pid[0] == os.getpid():
        with contextlib.suppress(Exception):
            flush(quiet=True)
