"""One gunicorn for the client tests (tests/client/*): started once per session on the test database,
not once per test (each start imports Django and the app: seconds on a loaded 2-core machine). Tests
that take the server down (the outage and offline tests) stop and start this same process; the
``server`` fixture (test_client.py) brings it back up before a test if a failed test left it down.
Between tests the database is flushed as before (transactional tests), and gunicorn keeps no state
across requests that a test could see (CONN_MAX_AGE 0: a connection per request)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from tests.conftest import ARTIFACTS, ROOT, _test_database_url, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, port: int):
        self.port = port
        self.proc = None

    def start(self):
        env = dict(os.environ, DATABASE_URL=_test_database_url(), ORLAB_ARTIFACTS=str(ARTIFACTS))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "webapp.wsgi", "-b", f"127.0.0.1:{self.port}", "-w", "1",
             "--log-level", "warning"],
            cwd=ROOT, env=env, start_new_session=True,
        )  # fmt: skip
        wait_for(self._up, 30, message="gunicorn up")

    def _up(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self._up()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture(scope="session")
def gunicorn_server(django_db_setup):
    """The session's gunicorn (after the test database exists; stopped before it is dropped)."""
    srv = Server(free_port())
    srv.start()
    yield srv
    srv.stop()
