"""A database restart costs the web no request (CONN_HEALTH_CHECKS): a gunicorn process keeps its
persistent connection between requests; after PostgreSQL restarts, the next request must get a fresh
connection instead of a 500 on the dropped one. The database restarted is a cluster of the test's
own (tests/own_postgres.py) with the test database's schema; the shared one is never touched."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT, _test_database_url
from tests.own_postgres import own_postgres  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status(url: str) -> int:
    # a bogus token: DRF looks it up in the database, so the request needs a working connection
    request = urllib.request.Request(url, headers={"Authorization": "Token not-a-token"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_requests_after_a_database_restart_get_no_500(own_postgres, tmp_path):  # noqa: F811
    own_postgres.copy_schema_from(_test_database_url(), "orlab")
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": own_postgres.url("orlab"), "ORLAB_VAR_DIR": str(tmp_path)}
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "webapp.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1",
         "-k", "gthread", "--threads", "1", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api/projects/"
    try:
        deadline = time.time() + 60
        while True:
            try:
                first = _status(url)
                break
            except urllib.error.URLError:
                assert time.time() < deadline and server.poll() is None, (
                    tmp_path / "gunicorn.log"
                ).read_text()
                time.sleep(0.2)
        assert first == 401  # the token was looked up: the worker now holds a persistent connection
        own_postgres.stop()
        own_postgres.start()
        after = [_status(url) for _ in range(5)]
        assert after == [401] * 5, (tmp_path / "gunicorn.log").read_text()[-3000:]
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
