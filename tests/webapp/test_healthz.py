"""/healthz checks the database and the broker: 200 with a small JSON body, or 503 naming which is down.
The database outage is real: a PostgreSQL cluster of the test's own (tests/own_postgres.py) is
stopped; the shared one is never touched."""

import socket

import pytest
from django.db import connections

from tests.own_postgres import own_postgres  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_healthz_is_ok_unauthenticated_with_database_and_broker_up(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ok" and body["database"] == "ok" and body["broker"] == "ok"
    assert body["down"] == []


def test_healthz_is_503_naming_the_broker_when_it_is_down(client, settings):
    settings.CELERY_BROKER_URL = f"redis://127.0.0.1:{_dead_port()}/0"
    resp = client.get("/healthz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["down"] == ["broker"] and body["broker"].startswith("down")
    assert body["database"] == "ok"


def test_healthz_is_503_naming_the_database_when_it_is_down(client, own_postgres):  # noqa: F811
    saved = connections.settings["default"]
    # the probe opens a connection of its own from these settings: point it at the cluster we stop
    connections.settings["default"] = {
        **saved,
        "NAME": "postgres",
        "PORT": own_postgres.port,
        "HOST": "127.0.0.1",
    }
    try:
        assert client.get("/healthz").status_code == 200
        own_postgres.stop()
        resp = client.get("/healthz")
        assert resp.status_code == 503
        body = resp.json()
        assert body["down"] == ["database"] and body["database"].startswith("down")
        assert body["broker"] == "ok"
        own_postgres.start()
        assert client.get("/healthz").status_code == 200  # back without restarting the web process
    finally:
        connections.settings["default"] = saved
