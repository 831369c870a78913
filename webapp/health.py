"""``/healthz``: is this web process able to serve? It checks the database and the task broker, each
within a short deadline, and answers 200 with a small JSON body, or 503 naming what is down (a load
balancer takes the process out of rotation; an operator sees which dependency failed). Unauthenticated
(webapp.ui.middleware lets it through), so the body names only the failing dependency and the class of
the error, never hosts or messages."""

from __future__ import annotations

import concurrent.futures
import time

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import JsonResponse

#: each check's deadline; a load balancer's probe usually waits a few seconds in all
CHECK_TIMEOUT_S = 1.5


class _Deadline:
    """Runs a check in its own thread and waits at most CHECK_TIMEOUT_S: a check may hang on an
    unreachable host past any timeout its client honours. A probe that finds the previous check
    still stuck reports it down at once instead of piling up threads."""

    def __init__(self, name: str):
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"healthz-{name}")
        self.pending: concurrent.futures.Future | None = None

    def state(self, check) -> str:
        if self.pending is not None and not self.pending.done():
            return "down: TimeoutError"
        self.pending = self.pool.submit(check)
        try:
            self.pending.result(timeout=CHECK_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            return "down: TimeoutError"
        except Exception as exc:
            return f"down: {type(exc).__name__}"
        return "ok"


_database = _Deadline("database")
_broker = _Deadline("broker")


def _check_database() -> None:
    # a connection of its own, closed after: it says whether the database can be reached now,
    # whatever the state of the request threads' persistent connections
    probe = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with probe.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        probe.close()


def _check_broker() -> None:
    from kombu import Connection

    url = settings.CELERY_BROKER_URL
    options = dict(getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {})
    with Connection(url, connect_timeout=CHECK_TIMEOUT_S, transport_options=options) as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=CHECK_TIMEOUT_S)
        if conn.transport.driver_type == "redis":
            conn.default_channel.client.ping()  # a connected pool is not yet a live server


def healthz(request):
    started = time.perf_counter()
    checks = {"database": _database.state(_check_database), "broker": _broker.state(_check_broker)}
    down = [name for name, state in checks.items() if state != "ok"]
    body = {
        "status": "ok" if not down else "unavailable",
        **checks,
        "down": down,
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    return JsonResponse(body, status=503 if down else 200)
