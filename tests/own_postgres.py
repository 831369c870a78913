"""A throw-away PostgreSQL cluster for tests that stop or restart the database.

The machine's shared PostgreSQL (the one DATABASE_URL names) is never stopped: a test that needs an
outage starts its own cluster (initdb into /tmp, as the ``postgres`` user when run as root) on a free
port, with fsync off, and removes it afterwards. Starting takes about a second."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OwnPostgres:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="orlab-own-pg-", dir="/tmp"))
        self.data = self.dir / "data"
        self.port = _free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                ["initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-N", "--no-instructions"]
            ),
            check=True,
            capture_output=True,
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 32MB\n"
            )
        self.start()

    def url(self, name: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres(["pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", *args]),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        self._ctl("start")

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")  # connected clients are cut off, as in a restart

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = subprocess.run(
            ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", self.url(db), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    def copy_schema_from(self, source_url: str, db: str) -> None:
        """A database with the schema (tables, constraints, indexes) of ``source_url``: faster than
        running the migrations again."""
        self.psql(f"CREATE DATABASE {db}")
        dump = subprocess.run(
            ["pg_dump", "--schema-only", "--no-owner", "--no-privileges", source_url],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", self.url(db)],
            input=dump,
            check=True,
            capture_output=True,
        )

    def remove(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._ctl("stop", "-m", "immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def own_postgres():
    pg = OwnPostgres()
    try:
        yield pg
    finally:
        pg.remove()


def wait_until(predicate, timeout: float = 30, interval: float = 0.1, message: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
