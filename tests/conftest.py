"""Shared fixtures: personas, API clients, and a real Celery worker process on real Redis.

The suite runs on PostgreSQL (DATABASE_URL) and Redis (CELERY_BROKER_URL); `make test` points them
at 127.0.0.1 by default and checks both are up first (tests/preflight.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


ARTIFACTS = Path(os.environ.get("ORLAB_TEST_ARTIFACTS", "/tmp/orlab-test-artifacts"))


try:
    from django.contrib.auth.hashers import PBKDF2PasswordHasher
except ImportError:  # pure trainer environments without Django
    PBKDF2PasswordHasher = object


class FastPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's PBKDF2 with 1,000 iterations instead of 1,000,000 (about 1 s a password on this
    2-core machine, and most tests create one or two users). The hash names its iteration count
    (pbkdf2_sha256$1000$...), so a server process started by a test (gunicorn, a worker) on the
    project's own settings still verifies it; production settings are unchanged."""

    iterations = 1000


@pytest.fixture(scope="session", autouse=True)
def _fast_password_hashing():
    """Every test process hashes passwords with FastPBKDF2PasswordHasher (a Django test-speed
    setting: no test is about the hash's cost)."""
    try:
        import django.conf

        if not django.conf.settings.configured:
            yield
            return
        from django.test.utils import override_settings
    except ImportError:
        yield
        return
    override = override_settings(PASSWORD_HASHERS=["tests.conftest.FastPBKDF2PasswordHasher"])
    override.enable()
    yield
    override.disable()


#: tables with more rows than this are emptied by TRUNCATE, the rest by DELETE (see _quick_flush)
FLUSH_TRUNCATE_ROWS = 5000
#: what Django's flush re-creates at once through post_migrate (contenttypes' and auth's receivers):
#: the quick flush leaves these rows in place instead of deleting and re-creating them
FLUSH_KEEPS = ("django_content_type", "auth_permission")


def _quick_flush_sql(tables: list[str]) -> str:
    """One statement that empties ``tables`` as Django's TRUNCATE of them all does (rows gone,
    sequences untouched), cheaply: TRUNCATE ... CASCADE only for the large tables (where it is the
    cheaper), then DELETE for the others, which hold a few rows or none. No table has a DELETE
    trigger and every foreign key is deferred (checked at the commit, when all rows are gone)."""
    names = ", ".join("'" + t.replace("'", "''") + "'" for t in tables)
    return f"""DO $flush$
DECLARE t text; big text[] := '{{}}'; is_big boolean;
BEGIN
  FOREACH t IN ARRAY ARRAY[{names}]::text[] LOOP
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I OFFSET {FLUSH_TRUNCATE_ROWS})', t) INTO is_big;
    IF is_big THEN big := big || t; END IF;
  END LOOP;
  IF array_length(big, 1) > 0 THEN  -- first: a TRUNCATE refuses tables with pending FK checks
    EXECUTE 'TRUNCATE ' || (SELECT string_agg(format('%I', b), ', ') FROM unnest(big) AS b) || ' CASCADE';
  END IF;
  FOREACH t IN ARRAY ARRAY[{names}]::text[] LOOP
    IF NOT t = ANY(big) THEN EXECUTE format('DELETE FROM %I', t); END IF;
  END LOOP;
END $flush$;"""


@pytest.fixture(scope="session", autouse=True)
def _quick_flush():
    """Transactional tests (pytest-django's transactional_db, live_server) end with Django's flush:
    one TRUNCATE of all ~40 tables, which makes new files for each table and index, then post_migrate
    re-creates every content type and permission (together 1-3 s on a loaded 2-core machine, after
    every such test). On PostgreSQL the test process empties the tables with _quick_flush_sql instead
    and leaves the content types and permissions in place, so post_migrate (whose only receivers are
    contenttypes' and auth's, checked here) has nothing to re-create and is skipped: the same tables
    afterwards, the same sequences. Only this process's flush changes; a reset_sequences or
    allow_cascade flush keeps Django's SQL and its post_migrate."""
    try:
        import django.conf

        if not django.conf.settings.configured:
            yield
            return
        from django.core.management.commands import flush
        from django.db.backends.postgresql.operations import DatabaseOperations
        from django.db.models.signals import post_migrate
    except ImportError:
        yield
        return
    original_sql, original_emit = DatabaseOperations.sql_flush, flush.emit_post_migrate_signal
    quick = {"last": False}

    def sql_flush(self, style, tables, *, reset_sequences=False, allow_cascade=False):
        quick["last"] = not (reset_sequences or allow_cascade or not tables)
        if not quick["last"]:
            return original_sql(
                self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
            )
        return [_quick_flush_sql([t for t in tables if t not in FLUSH_KEEPS])]

    def only_contenttypes_and_auth() -> bool:
        modules = set()
        for entry in post_migrate.receivers:
            receiver = entry[1]() if isinstance(entry[1], weakref.ReferenceType) else entry[1]
            modules.add(getattr(receiver, "__module__", None))
        return modules <= {"django.contrib.contenttypes.management", "django.contrib.auth.management", None}

    def emit_post_migrate_signal(*args, **kwargs):
        if not (quick["last"] and only_contenttypes_and_auth()):
            original_emit(*args, **kwargs)

    DatabaseOperations.sql_flush, flush.emit_post_migrate_signal = sql_flush, emit_post_migrate_signal
    yield
    DatabaseOperations.sql_flush, flush.emit_post_migrate_signal = original_sql, original_emit


@pytest.fixture(autouse=True)
def _artifacts(request):
    """Checkpoints of in-process sinks go to a throw-away folder (pure trainer tests skip this)."""
    if "django_db_setup" not in request.fixturenames and "settings" not in request.fixturenames:
        try:
            import django.conf

            if not django.conf.settings.configured:
                return
        except ImportError:
            return
    from django.conf import settings

    settings.ORLAB_ARTIFACTS = ARTIFACTS


@pytest.fixture
def make_user(db):
    from django.contrib.auth import get_user_model

    def make(username: str = "alice"):
        return get_user_model().objects.create_user(username=username, password="pw-" + username)

    return make


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def project(alice):
    from webapp.projects.services import project_create

    return project_create(user=alice, name="alice-lab")


@pytest.fixture
def api(alice):
    """An API client authenticated with alice's token (as a script would be)."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    return client


@pytest.fixture
def bob_api(bob):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=bob).key}")
    return client


NPG_CONFIG = {
    "method": "softmax_npg",
    "step_size": 1.0,
    "iterations": 50,
    "mdp": {"kind": "garnet", "states": 10, "actions": 3, "branching": 2, "seed": 0, "gamma": 0.9},
}


def _test_database_url() -> str:
    from django.db import connection

    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


#: every queue (README "Queues and the run lifecycle"); a test worker listens on all unless told
ALL_QUEUES = "control,short,cpu,gpu,eval"


class WorkerProcess:
    """`celery -A workers worker` in its own process group, on the test database and Redis.
    ``beat``: embed beat (the housekeeping schedule), as the control worker of a deployment does."""

    def __init__(
        self,
        extra_env: dict[str, str] | None = None,
        name: str = "w1",
        *,
        queues: str = ALL_QUEUES,
        concurrency: int = 2,
        pool: str = "prefork",
        beat: bool = False,
    ):
        self.name = name
        self.log_path = ARTIFACTS / f"worker-{name}-{os.getpid()}-{time.time_ns()}.log"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(
            DATABASE_URL=_test_database_url(),
            ORLAB_ARTIFACTS=str(ARTIFACTS),
            ORLAB_HEARTBEAT_INTERVAL="1",
            ORLAB_SINK_FLUSH_INTERVAL="0.3",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra_env or {})
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        beat_args = (
            ["-B", "-s", str(ARTIFACTS / f"beat-{name}-{os.getpid()}-{time.time_ns()}")] if beat else []
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queues, f"--pool={pool}",
             f"--concurrency={concurrency}", "--without-gossip", "--without-mingle", "-n", f"{name}@%h",
             "--loglevel=INFO", *beat_args],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()}")
            if " ready." in self.log():
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole process group: the worker dies as on a machine crash."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def _purge_broker() -> None:
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


@pytest.fixture
def start_worker(transactional_db):
    """Factory: start_worker(name="w1", *, queues=, concurrency=, pool=, beat=, **env) -> WorkerProcess;
    all stopped at teardown."""
    _purge_broker()
    started: list[WorkerProcess] = []

    def start(name: str = "w1", *, queues: str = ALL_QUEUES, concurrency: int = 2, pool: str = "prefork",
              beat: bool = False, **env) -> WorkerProcess:  # fmt: skip
        worker = WorkerProcess(
            extra_env=env, name=name, queues=queues, concurrency=concurrency, pool=pool, beat=beat
        )
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def worker(start_worker):
    return start_worker()


def wait_for(predicate, timeout: float = 60, interval: float = 0.2, message: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
