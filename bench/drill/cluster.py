"""The drill's own deployment: a PostgreSQL cluster and a Redis server on free ports in a temporary
directory (never the machine's shared 5432/6379), the web app as the README runs it (gunicorn) and
Celery workers and beat pointed at them. Every process it starts is stopped and the directory
removed by ``close``."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PG_BIN_DIRS = ["/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_tool(name: str) -> str:
    for d in PG_BIN_DIRS:
        if (Path(d) / name).exists():
            return str(Path(d) / name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found (install PostgreSQL's server binaries)")
    return found


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Cluster:
    def __init__(self, workers: dict[str, list[str]]):
        self.dir = Path(tempfile.mkdtemp(prefix="orlab-drill-"))
        self.logs = self.dir / "logs"
        self.logs.mkdir()
        self.pg_port, self.redis_port, self.web_port = free_port(), free_port(), free_port()
        self.worker_specs = workers  # name -> extra celery worker arguments (queues, concurrency)
        self.procs: dict[str, subprocess.Popen] = {}
        # initdb refuses to run as root: the cluster then belongs to the postgres user
        self.pg_user = "postgres" if os.geteuid() == 0 else None
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ORLAB_", "DJANGO_"))},
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{self.pg_port}/orlab",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "ORLAB_ARTIFACTS": str(self.dir / "artifacts"),
            "ORLAB_VAR_DIR": str(self.dir / "var"),
            "SECRET_KEY": "drill-" + "x" * 40,
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "webapp.settings",
        }

    # --- PostgreSQL -------------------------------------------------------------------------------
    def _as_pg(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        if self.pg_user:
            argv = ["runuser", "-u", self.pg_user, "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, **kw)

    def start_postgres(self) -> None:
        data = self.dir / "pg"
        if not data.exists():
            data.mkdir()
            if self.pg_user:
                uid = pwd.getpwnam(self.pg_user).pw_uid
                os.chown(self.dir, uid, -1)  # the server writes its socket and log here
                os.chown(data, uid, -1)
            out = self._as_pg(
                [pg_tool("initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]
            )
            if out.returncode:
                raise RuntimeError(f"initdb failed: {out.stderr[-2000:]}")
        opts = (
            f"-p {self.pg_port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        out = self._as_pg(
            [pg_tool("pg_ctl"), "-D", str(data), "-o", opts, "-l", str(self.dir / "pg.log"), "-w", "start"],
            timeout=60,
        )
        if out.returncode:
            raise RuntimeError(f"pg_ctl start failed: {out.stderr[-2000:]} {self.pg_log()[-2000:]}")

    def stop_postgres(self) -> None:
        self._as_pg([pg_tool("pg_ctl"), "-D", str(self.dir / "pg"), "-m", "fast", "-w", "stop"], timeout=60)

    def pg_log(self) -> str:
        try:
            return (self.dir / "pg.log").read_text()
        except OSError:
            return ""

    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres", autocommit=True
        ) as c:
            c.execute("CREATE DATABASE orlab")

    # --- Redis ------------------------------------------------------------------------------------
    def start_redis(self) -> None:
        argv = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir)]  # fmt: skip
        self._spawn("redis", argv)
        if not wait_port(self.redis_port, 20):
            raise RuntimeError("redis-server did not start")

    def kill_redis(self) -> None:
        self.kill("redis", signal.SIGKILL)

    # --- orlab processes --------------------------------------------------------------------------
    def manage(self, *args: str) -> str:
        out = subprocess.run(
            [str(BIN / "python"), "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
        if out.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed: {out.stderr[-3000:]}")
        return out.stdout

    def start_web(self) -> None:
        # the README's server command (gunicorn's defaults: sync workers, a 30 s request timeout), with
        # 2 processes for the 2-core machine the drill was written on
        argv = [str(BIN / "gunicorn"), "webapp.wsgi", "-w", "2", "-b", f"127.0.0.1:{self.web_port}"]
        self._spawn("web", argv)
        if not wait_port(self.web_port, 60):
            raise RuntimeError(f"gunicorn did not start: {self.log_tail('web')}")

    def start_worker(self, name: str) -> None:
        argv = [str(BIN / "celery"), "-A", "workers", "worker", "-n", f"{name}@drill", "-l", "INFO",
                *self.worker_specs[name]]  # fmt: skip
        self._spawn(name, argv)

    def start_beat(self) -> None:
        argv = [
            str(BIN / "celery"),
            "-A",
            "workers",
            "beat",
            "-l",
            "INFO",
            "-s",
            str(self.dir / "beat-schedule"),
        ]
        self._spawn("beat", argv)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    # --- process handling -------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "a")  # noqa: SIM115 (the child holds it)
        self.procs[name] = subprocess.Popen(
            argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def alive(self, name: str) -> bool:
        p = self.procs.get(name)
        return p is not None and p.poll() is None

    def kill(self, name: str, sig: int, *, group: bool = True) -> None:
        """Send ``sig`` to the process (``group``: and everything in its session, e.g. pool children)."""
        p = self.procs.get(name)
        if p is None or p.poll() is not None:
            return
        try:
            if group:
                os.killpg(p.pid, sig)
            else:
                os.kill(p.pid, sig)
        except ProcessLookupError:
            pass
        if sig == signal.SIGKILL:
            p.wait(timeout=30)

    def wait_exit(self, name: str, timeout: float) -> float | None:
        """Seconds until the process exited, or None if it still runs after ``timeout``."""
        started = time.monotonic()
        try:
            self.procs[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return time.monotonic() - started

    def stop_group(self, name: str) -> None:
        """Whatever is left of a process's session: SIGKILL (the drill is done with it)."""
        p = self.procs.get(name)
        if p is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=30)

    def log_tail(self, name: str, n: int = 2000) -> str:
        try:
            return (self.logs / f"{name}.log").read_text()[-n:]
        except OSError:
            return ""

    def close(self, keep: bool = False) -> None:
        for name in list(self.procs):
            self.stop_group(name)
        if (self.dir / "pg" / "postmaster.pid").exists():
            self.stop_postgres()
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)
