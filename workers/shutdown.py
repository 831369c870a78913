"""A worker's warm shutdown (SIGTERM) interrupts its runs instead of waiting hours for them.

Two ways the SIGTERM arrives, both handled:
- at the worker's main process only (``kill <pid>``, ``docker stop``): Celery sends
  ``worker_shutting_down`` there; the handler reads which ``execute_run`` tasks the pool is running
  (Celery's active requests) and records an interrupt request on those runs in the database;
- at every process of the worker (systemd's control-group kill, a terminal's process group): the pool
  child running ``execute_run`` would die at once (Celery resets SIGTERM to its default in children);
  ``interrupt_on_sigterm`` catches it for the duration of the task and records the request too.

The run's sink reads the request at its next heartbeat (``should_stop`` turns true); the trainer saves
a checkpoint and returns, and the task ends the run ``interrupted`` (resumable; re-queued when
ORLAB_REQUEUE_INTERRUPTED=1). A multi-process run is reached the same way: its rank 0 owns the sink.
The database write happens in a thread, never inside the signal handler (which may have interrupted
a query of the same connection)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator

from celery.signals import worker_shutting_down

log = logging.getLogger(__name__)

#: Set in a pool child when SIGTERM arrived during execute_run (the sink also checks it directly).
INTERRUPTED = threading.Event()

TASK_NAME = "workers.tasks.execute_run"


def _record(held: list[tuple[int, int]]) -> None:
    from django.db import connection

    from workers.db_retry import db_retry

    try:
        from webapp.runs import services

        asked = db_retry(lambda: services.runs_request_interrupt(held), "record the interrupt request")
        log.warning("worker shutting down: asked %s run(s) %s to checkpoint and stop", asked, held)
    except Exception:
        log.exception("could not record the interrupt request of runs %s", held)
    finally:
        connection.close()


def _record_in_thread(held: list[tuple[int, int]]) -> threading.Thread:
    thread = threading.Thread(target=_record, args=(held,), name="orlab-interrupt", daemon=True)
    thread.start()
    return thread


def held_runs() -> list[tuple[int, int]]:
    """(run id, attempt) of the execute_run tasks this worker's pool is running."""
    from celery.worker import state

    held = []
    for request in list(state.active_requests):
        if getattr(request, "name", None) != TASK_NAME:
            continue
        with contextlib.suppress(Exception):
            run_id, attempt = request.args[:2]
            held.append((int(run_id), int(attempt)))
    return held


@worker_shutting_down.connect
def _on_worker_shutting_down(sig=None, how=None, **_):
    if how != "Warm":
        return  # a cold shutdown kills the tasks; nothing can checkpoint
    held = held_runs()
    if held:
        _record_in_thread(held)


def _in_main_process() -> bool:
    from billiard.process import current_process

    return current_process()._name == "MainProcess"


@contextlib.contextmanager
def interrupt_on_sigterm(run_id: int, attempt: int) -> Iterator[None]:
    """While the block runs, SIGTERM in this process asks the run to checkpoint and stop instead of
    killing the process. Outside the main thread (a threads pool) signals cannot be caught: the
    main-process path above still applies."""
    INTERRUPTED.clear()
    previous = None

    def on_sigterm(signum, frame):
        first = not INTERRUPTED.is_set()
        INTERRUPTED.set()
        if first:
            _record_in_thread([(run_id, attempt)])
        # A solo or threads pool runs tasks in the worker's main process: Celery's warm-shutdown
        # handler must run too. A prefork child's own handler (billiard's) would exit the process
        # at once, which is what this handler is here to prevent.
        if callable(previous) and _in_main_process():
            previous(signum, frame)

    try:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread
        previous = None
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
