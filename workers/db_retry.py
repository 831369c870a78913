"""Retrying a worker's database writes through a database outage (a restart, a failover).

A training run must not die because PostgreSQL restarted for a few seconds: the sink retries each
write with exponential backoff for ORLAB_SINK_RETRY_SECONDS (default 300 s), dropping the broken
connection between tries so that the next one connects afresh. Only connection-level errors are
retried (OperationalError, InterfaceError); an IntegrityError or a DataError is a bug and is raised
at once. The writes retried are atomic and idempotent, so retrying one whose commit succeeded but
whose answer was lost stores nothing twice."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE = (OperationalError, InterfaceError)
FIRST_DELAY_S = 0.25
MAX_DELAY_S = 10.0


def retry_seconds() -> float:
    value = getattr(settings, "ORLAB_SINK_RETRY_SECONDS", None)
    if value is None:
        value = os.environ.get("ORLAB_SINK_RETRY_SECONDS", "300")
    return max(0.0, float(value))


def drop_connection() -> None:
    """Close this thread's connection (outside any atomic block by now), so the next query reconnects."""
    try:
        connection.close()
    except Exception:  # closing a connection the server already dropped may itself fail
        connection.connection = None


def db_retry(fn: Callable[[], T], what: str, *, budget_s: float | None = None) -> T:
    """``fn()``, retried on connection errors with backoff until ``budget_s`` (retry_seconds())
    has passed since the first failure; then the last error is raised."""
    budget_s = retry_seconds() if budget_s is None else budget_s
    delay = FIRST_DELAY_S
    first_failure = None
    tries = 0
    while True:
        try:
            result = fn()
        except RETRYABLE as exc:
            drop_connection()
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            tries += 1
            if now - first_failure >= budget_s:
                log.error("gave up trying to %s after %.0f s (%s tries): %s", what, budget_s, tries, exc)
                raise
            log.warning("could not %s (%s); retrying in %.2f s", what, str(exc).strip()[:200], delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
            continue
        if tries:
            log.warning("%s succeeded after %s failed tries", what, tries)
        return result
