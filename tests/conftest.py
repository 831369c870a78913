"""Shared fixtures: personas, API clients, and a real Celery worker process on real Redis.

The suite runs on PostgreSQL (DATABASE_URL) and Redis (CELERY_BROKER_URL); `make test` points them
at 127.0.0.1 by default and checks both are up first (tests/preflight.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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
