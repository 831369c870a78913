"""Shared plumbing of the benchmarks.

* a throw-away PostgreSQL database (``orlab_bench``), migrated with ``manage.py migrate`` and dropped
  at the end, with a user, a project and an API token;
* gunicorn serving ``webapp.wsgi`` on a free port against that database;
* a keep-alive HTTP client that reads ``Server-Timing: app;dur=<ms>`` (webapp.timing), i.e. the time
  from the first to the last middleware of the Django app ("server time");
* the machine description, medians and the result records every script returns.

Environment overrides: ORLAB_BENCH_PG (server URL without a database, default
postgres://postgres@127.0.0.1:5432), ORLAB_BENCH_DB (default orlab_bench), ORLAB_BENCH_BROKER,
ORLAB_BENCH_WORKERS / ORLAB_BENCH_THREADS (gunicorn gthread workers and threads per worker).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PG_URL = os.environ.get("ORLAB_BENCH_PG", "postgres://postgres@127.0.0.1:5432").rstrip("/")
DB_NAME = os.environ.get("ORLAB_BENCH_DB", "orlab_bench")
BROKER_URL = os.environ.get("ORLAB_BENCH_BROKER", "redis://127.0.0.1:6379/14")
BENCH_USER = "bench"
BENCH_PASSWORD = "bench-orlab-pw"
_TMP = Path(tempfile.gettempdir()) / "orlab-bench"
# A measurement during which other processes took more than this share of the CPUs is taken again.
QUIET = float(os.environ.get("ORLAB_BENCH_QUIET", 0.15))


def nproc() -> int:
    return len(os.sched_getaffinity(0))


def database_url(name: str = DB_NAME) -> str:
    return f"{PG_URL}/{name}"


def bench_env() -> dict[str, str]:
    """Environment of manage.py, gunicorn and this process's Django: the bench database, no DEBUG
    (DEBUG records every query), a broker nobody else uses, artifacts in a temp folder."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url(),
        DJANGO_SETTINGS_MODULE="webapp.settings",
        DEBUG="0",
        CELERY_BROKER_URL=BROKER_URL,
        ORLAB_ARTIFACTS=str(_TMP / "artifacts"),
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


# --- machine ------------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_gib() -> float | None:
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    return None


def _postgres_version() -> str:
    try:
        with _admin() as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
    except Exception as exc:  # the header must not kill a run
        return f"unknown ({exc})"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "-"


def machine_info() -> dict[str, Any]:
    try:
        date = subprocess.run(["date"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        date = dt.datetime.now(dt.UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
    return {
        "date": date,
        "date_iso": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": nproc(),
        "cpu": _cpu_model(),
        "memory_gib": _mem_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": _postgres_version(),
        "django": _version("django"),
        "gunicorn": _version("gunicorn"),
        "psycopg": _version("psycopg"),
        "numpy": _version("numpy"),
        "orjson": _version("orjson"),
    }


def cpu_busy(interval: float = 1.0) -> float:
    """Share (0..1) of all CPUs busy during ``interval`` seconds (from /proc/stat): other people's
    work on a shared machine skews every number, so the scripts record it."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    try:
        t0, i0 = sample()
        time.sleep(interval)
        t1, i1 = sample()
    except OSError:
        return 0.0
    return 0.0 if t1 == t0 else round(1 - (i1 - i0) / (t1 - t0), 3)


# Seconds one script may spend in all waiting for other people's work to finish.
_wait_budget = [float(os.environ.get("ORLAB_BENCH_MAX_WAIT", 240))]


def wait_budget_left() -> float:
    return _wait_budget[0]


def wait_for_quiet(threshold: float = QUIET, max_wait: float = 90.0) -> float:
    """Wait (up to ``max_wait`` s, and within the script's ORLAB_BENCH_MAX_WAIT budget) until less
    than ``threshold`` of the CPUs is busy; returns the last measured share."""
    max_wait = min(max_wait, _wait_budget[0])
    t0 = time.monotonic()
    busy = cpu_busy()
    while busy >= threshold and time.monotonic() - t0 < max_wait:
        print(f"machine busy ({busy:.0%} of the CPUs in use by other processes); waiting...", flush=True)
        time.sleep(4.0)
        busy = cpu_busy()
    _wait_budget[0] = max(0.0, _wait_budget[0] - (time.monotonic() - t0))
    if busy >= threshold:
        print(f"WARNING: machine still {busy:.0%} busy; numbers will be pessimistic", flush=True)
    return busy


def _proc_jiffies(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


_PG_PIDS_SQL = "SELECT pid FROM pg_stat_activity WHERE datname = %s OR backend_type <> 'client backend'"


class CpuWatch:
    """How much CPU *other* processes took during a measurement, as a share of the whole machine:
    everything busy in /proc/stat minus this process, its children (gunicorn) and PostgreSQL working
    for the bench (backends of the bench database, WAL writer, checkpointer...). Processes of ours
    are sampled every ``interval`` s, so short-lived ones (a sink thread's connection) count too.
    Other people's test suites on a shared box make a benchmark look slower than it is."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.first: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self.others = 0.0
        self.busy = 0.0

    def _sample(self, conn) -> None:
        pids = _descendants(os.getpid())
        if conn is not None:
            with contextlib.suppress(Exception):
                pids |= {r[0] for r in conn.execute(_PG_PIDS_SQL, [DB_NAME]).fetchall()}
        for pid in pids | set(self.last):
            j = _proc_jiffies(pid)
            if j == 0 and pid in self.last:
                continue  # gone: keep what it had used when last seen
            self.first.setdefault(pid, j if not self.started else 0)
            self.last[pid] = j

    def _loop(self) -> None:
        try:
            conn = _admin()
        except Exception:
            conn = None
        try:
            while not self.stopping.wait(self.interval):
                self._sample(conn)
        finally:
            if conn is not None:
                conn.close()

    def __enter__(self) -> CpuWatch:
        import threading

        self.started = False
        try:
            with _admin() as conn:
                self._sample(conn)
        except Exception:
            self._sample(None)
        self.started = True
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="cpu-watch", daemon=True)
        self.total0, self.busy0 = self._machine()
        self.thread.start()
        return self

    @staticmethod
    def _machine() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:8]]
        total = sum(fields)
        return total, total - fields[3] - fields[4]

    def __exit__(self, *exc) -> None:
        total1, busy1 = self._machine()
        self.stopping.set()
        self.thread.join()
        try:
            with _admin() as conn:
                self._sample(conn)
        except Exception:
            self._sample(None)
        ours = sum(max(0, self.last[pid] - self.first.get(pid, 0)) for pid in self.last)
        total = max(1, total1 - self.total0)
        self.busy = (busy1 - self.busy0) / total
        self.others = max(0.0, round((busy1 - self.busy0 - ours) / total, 3))


def measure_quietly(measure: Callable[[], Any], *, what: str, attempts: int = 3, threshold: float = QUIET):
    """Run ``measure()`` under a CpuWatch; while other processes took more than ``threshold`` of the
    machine, wait for quiet and measure again (at most ``attempts`` times). Returns the result of
    the least disturbed attempt and the share of the CPUs others took during it."""
    best = None
    for attempt in range(1, attempts + 1):
        with CpuWatch() as watch:
            value = measure()
        print(
            f"  [{what}] attempt {attempt}: other processes used {watch.others:.0%} of the CPUs", flush=True
        )
        if best is None or watch.others < best[1]:
            best = (value, watch.others)
        if watch.others < threshold or wait_budget_left() <= 0:
            break
        if attempt < attempts:
            wait_for_quiet()
    return best


def print_machine(info: dict[str, Any]) -> None:
    print(
        f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB RAM, Linux {info['kernel']}\n"
        f"date:    {info['date']}\n"
        f"versions: Python {info['python']}, PostgreSQL {info['postgresql']}, Django {info['django']}, "
        f"gunicorn {info['gunicorn']}, psycopg {info['psycopg']}, numpy {info['numpy']}, orjson {info['orjson']}",
        flush=True,
    )


# --- database -----------------------------------------------------------------------------------


def _admin():
    import psycopg

    return psycopg.connect(f"{PG_URL}/postgres", autocommit=True, connect_timeout=10)


def create_database() -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def drop_database() -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def migrate() -> None:
    subprocess.run(
        [PY, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=bench_env(), check=True
    )


def setup_django() -> None:
    """Django in this process, on the bench database (call once, after create_database)."""
    env = bench_env()
    for name in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "DEBUG", "CELERY_BROKER_URL", "ORLAB_ARTIFACTS"):
        os.environ[name] = env[name]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import django

    django.setup()


@dataclass
class Fixtures:
    user: Any
    project: Any
    token: str


def create_fixtures() -> Fixtures:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from webapp.projects.services import project_create

    user = get_user_model().objects.create_user(username=BENCH_USER, password=BENCH_PASSWORD)
    project = project_create(user=user, name="bench")
    token = Token.objects.create(user=user)
    return Fixtures(user=user, project=project, token=token.key)


@contextlib.contextmanager
def bench_database(keep: bool = False) -> Iterator[Fixtures]:
    """Create, migrate and set up the throw-away database; drop it afterwards, whatever happens
    (``keep``: leave it for re-measuring by hand; its name is printed, dropping it is yours)."""
    t0 = time.perf_counter()
    create_database()
    try:
        migrate()
        setup_django()
        fixtures = create_fixtures()
        print(f"database {DB_NAME}: created and migrated in {time.perf_counter() - t0:.1f} s", flush=True)
        yield fixtures
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if keep:
            print(f"database {DB_NAME}: kept (drop it with: psql -c 'DROP DATABASE {DB_NAME}')", flush=True)
        else:
            drop_database()
            print(f"database {DB_NAME}: dropped", flush=True)


def session_cookie(user) -> str:
    """A logged-in session for the HTML pages (stored in the bench database like a real login)."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


# --- gunicorn -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_workers() -> tuple[int, int]:
    """gthread (the worker class that keeps connections alive): 2 processes per core, 2 threads each."""
    workers = int(os.environ.get("ORLAB_BENCH_WORKERS", 2 * nproc()))
    threads = int(os.environ.get("ORLAB_BENCH_THREADS", 2))
    return workers, threads


class Server:
    """gunicorn webapp.wsgi on 127.0.0.1:<free port>, against the bench database."""

    def __init__(self, workers: int | None = None, threads: int | None = None):
        dw, dt_ = default_workers()
        self.workers = workers or dw
        self.threads = threads or dt_
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        _TMP.mkdir(parents=True, exist_ok=True)
        self.log_path = _TMP / f"gunicorn-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def description(self) -> str:
        return f"gunicorn -k gthread -w {self.workers} --threads {self.threads} --keep-alive 30"

    def start(self, timeout: float = 90.0) -> Server:
        cmd = [
            PY, "-m", "gunicorn", "webapp.wsgi",
            "-b", f"127.0.0.1:{self.port}",
            "-k", "gthread", "-w", str(self.workers), "--threads", str(self.threads),
            "--keep-alive", "30", "--timeout", "300", "--log-level", "warning",
        ]  # fmt: skip
        log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self._log = log
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=bench_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        probe = Client(self.url)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if probe.request("GET", "/healthz").status == 200:
                    break
            except OSError:
                probe.close()
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gunicorn did not come up in {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)
        probe.close()
        # Give the other workers time to finish booting (each imports the app before accepting).
        time.sleep(1.0)
        print(f"server: {self.description} on {self.url}", flush=True)
        return self

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ReadmeServer(Server):
    """orlab exactly as the README runs it: ``gunicorn webapp.wsgi -w N`` (sync workers; they close
    the connection after each response, so the client reconnects for every request)."""

    def __init__(self, workers: int = 4, threads: int | None = None):
        super().__init__(workers=workers, threads=threads or 1)

    @property
    def description(self) -> str:
        return f"gunicorn webapp.wsgi -w {self.workers} (sync workers, as the README)"

    def start(self, timeout: float = 90.0) -> Server:
        cmd = [PY, "-m", "gunicorn", "webapp.wsgi", "-b", f"127.0.0.1:{self.port}", "-w", str(self.workers),
               "--timeout", "300", "--log-level", "warning"]  # fmt: skip
        return self._launch(cmd, bench_env(), "/healthz", timeout)

    def _launch(self, cmd: list[str], env: dict, probe_path: str, timeout: float) -> Server:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        probe = Client(self.url)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[:4]} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if probe.request("GET", probe_path).status == 200:
                    break
            except OSError:
                probe.close()
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{cmd[:4]} did not come up in {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.3)
        probe.close()
        time.sleep(1.0)  # the other workers finish booting
        print(f"server: {self.description} on {self.url}", flush=True)
        return self


# --- HTTP ---------------------------------------------------------------------------------------


def parse_server_timing(value: str | None, name: str = "app") -> float | None:
    """``app;dur=12.3, db;dur=4`` -> 12.3 (milliseconds) for ``name``; None when absent."""
    if not value:
        return None
    for metric in value.split(","):
        parts = [p.strip() for p in metric.split(";")]
        if parts[0] != name:
            continue
        for param in parts[1:]:
            key, _, val = param.partition("=")
            if key.strip() == "dur":
                try:
                    return float(val.strip().strip('"'))
                except ValueError:
                    return None
    return None


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    wall_ms: float
    server_ms: float | None

    def json(self) -> Any:
        import orjson

        return orjson.loads(self.body)


class Client:
    """One keep-alive HTTP/1.1 connection (http.client: the least client-side overhead)."""

    def __init__(self, base_url: str, token: str | None = None, cookie: str | None = None):
        u = urlparse(base_url)
        self.host, self.port = u.hostname, u.port or 80
        self.headers = {"Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Token {token}"
        if cookie:
            self.headers["Cookie"] = cookie
            self.headers["Accept"] = "text/html"
        self.conn: http.client.HTTPConnection | None = None
        self.reconnects = 0

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict | None = None
    ) -> Response:
        h = dict(self.headers, **(headers or {}))
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
                self.reconnects += attempt
            try:
                t0 = time.perf_counter()
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                wall = (time.perf_counter() - t0) * 1000
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: once more on a fresh one (metric
                # writes are idempotent, reads are reads).
                self.close()
                if attempt:
                    raise
                continue
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            if hdrs.get("connection", "").lower() == "close":
                self.close()
            return Response(r.status, hdrs, data, wall, parse_server_timing(hdrs.get("server-timing")))
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def timed_requests(
    client: Client, path: str, *, warmup: int, repeat: int, check: Callable | None = None
) -> dict:
    """``warmup`` unmeasured GETs, then ``repeat`` measured ones; medians of server and wall time.
    The measured series is taken again (up to 3 times) when other processes disturbed it."""
    for _ in range(warmup):
        r = client.request("GET", path)
        if r.status != 200:
            raise RuntimeError(f"GET {path} -> {r.status}: {r.body[:500]!r}")

    def series():
        server, wall = [], []
        last = None
        for _ in range(repeat):
            last = client.request("GET", path)
            if last.status != 200:
                raise RuntimeError(f"GET {path} -> {last.status}: {last.body[:500]!r}")
            server.append(last.server_ms)
            wall.append(last.wall_ms)
        return server, wall, last

    (server, wall, last), others = measure_quietly(series, what=path.split("?")[0])
    if check is not None:
        check(last)
    return {
        "server_ms": summarize(server),
        "wall_ms": summarize(wall),
        "response_bytes": len(last.body),
        "requests": repeat,
        "warmup": warmup,
        "others_cpu": others,
    }


# --- numbers and results ------------------------------------------------------------------------


def summarize(xs: list[float]) -> dict[str, float]:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return {}
    p90 = xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
    return {
        "median": round(statistics.median(xs), 2),
        "p90": round(p90, 2),
        "min": round(xs[0], 2),
        "max": round(xs[-1], 2),
        "n": len(xs),
    }


def result(
    target: str,
    name: str,
    measured: float | None,
    unit: str,
    goal: float | None,
    better: str,
    mlflow: str = "",
    note: str = "",
    **details: Any,
) -> dict[str, Any]:
    """One row of the results table. ``better``: "higher" (measured >= goal) or "lower"."""
    if details.get("others_cpu") is not None:
        note += f"; other processes used {details['others_cpu']:.0%} of the CPUs meanwhile"
    if measured is None or goal is None:
        passed = None
    else:
        passed = measured >= goal if better == "higher" else measured <= goal
    return {
        "target": target,
        "name": name,
        "measured": measured,
        "unit": unit,
        "goal": goal,
        "better": better,
        "passed": passed,
        "mlflow": mlflow,
        "note": note,
        "details": details,
    }


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    if unit == "points/s":
        return f"{value:,.0f} points/s"
    return f"{value:,.1f} {unit}"


def fmt_goal(row: dict) -> str:
    if row["goal"] is None:
        return "-"
    op = ">=" if row["better"] == "higher" else "<="
    return f"{op} {fmt_value(row['goal'], row['unit'])}"


def fmt_pass(row: dict) -> str:
    return {True: "PASS", False: "FAIL", None: "-"}[row["passed"]]


def print_table(rows: list[dict]) -> None:
    head = ("#", "benchmark", "measured", "target", "pass", "MLflow 3.17 (reference)")
    body = [
        (
            r["target"],
            r["name"],
            fmt_value(r["measured"], r["unit"]),
            fmt_goal(r),
            fmt_pass(r),
            r["mlflow"] or "-",
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print()
    print(line.format(*head))
    print(line.format(*("-" * w for w in widths)))
    for b in body:
        print(line.format(*b))
    for r in rows:
        if r["note"]:
            print(f"  [{r['target']}] {r['note']}")
    print(flush=True)


def cli(title: str, run: Callable[[argparse.Namespace], list[dict]], configure=None) -> int:
    """Entry point of one benchmark script: header, run, table, optional --json output."""
    parser = argparse.ArgumentParser(description=title)
    parser.add_argument("--json", type=Path, help="also write {machine, results} to this file")
    if configure is not None:
        configure(parser)
    parser.add_argument(
        "--no-wait", action="store_true", help="start even if other processes keep the CPUs busy"
    )
    args = parser.parse_args()
    # SIGTERM (make, CI, run_all) unwinds like Ctrl-C: gunicorn stopped, bench database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    info = machine_info()
    print(f"== {title} ==")
    print_machine(info)
    info["cpu_busy_before"] = cpu_busy() if args.no_wait else wait_for_quiet()
    info["loadavg_before"] = os.getloadavg()
    rows = run(args)
    info["loadavg_after"] = os.getloadavg()
    print(
        f"CPU busy before start: {info['cpu_busy_before']:.0%}; load average before {info['loadavg_before']}, after {info['loadavg_after']}"
    )
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": rows}, indent=2, default=str))
    return 0


# --- profiling ----------------------------------------------------------------------------------


def profile_get(path: str, *, user=None, token: str | None = None, repeat: int = 10, top: int = 30) -> str:
    """cProfile of ``repeat`` GETs of ``path`` served in this process by django.test.Client (same
    settings, same database as gunicorn); returns the top of the profile by own and cumulative time."""
    import cProfile
    import io
    import pstats

    from django.test import Client as DjangoClient

    client = DjangoClient()
    headers = {}
    if user is not None:
        client.force_login(user)
    if token:
        headers["Authorization"] = f"Token {token}"
    for _ in range(2):
        if (status := client.get(path, headers=headers).status_code) != 200:
            raise RuntimeError(f"GET {path} -> {status}")
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    for _ in range(repeat):
        client.get(path, headers=headers)
    prof.disable()
    per = (time.perf_counter() - t0) / repeat * 1000
    out = io.StringIO()
    out.write(f"profile of GET {path}: {repeat} requests in-process, {per:.1f} ms each under cProfile\n")
    stats = pstats.Stats(prof, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def breakdown_get(path: str, *, user=None, token: str | None = None, repeat: int = 10) -> dict[str, Any]:
    """Where the time of a GET goes, without a profiler's overhead: in-process (django.test.Client),
    median over ``repeat`` requests of the total, the SQL (count and time, via an execute wrapper:
    queries on a raw psycopg cursor, such as metric_store.fetch_rows, count as "other") and the
    template rendering (django.template.backends.django.Template.render)."""
    from django.db import connection
    from django.template.backends import django as django_backend
    from django.test import Client as DjangoClient

    client = DjangoClient()
    headers = {}
    if user is not None:
        client.force_login(user)
    if token:
        headers["Authorization"] = f"Token {token}"
    sql_s = [0.0]
    sql_n = [0]
    tpl_s = [0.0]

    def wrapper(execute, sql, params, many, context):
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            sql_s[0] += time.perf_counter() - t
            sql_n[0] += 1

    original = django_backend.Template.render

    def timed_render(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            tpl_s[0] += time.perf_counter() - t

    totals, sqls, tpls, counts = [], [], [], []
    django_backend.Template.render = timed_render
    try:
        with connection.execute_wrapper(wrapper):
            for i in range(repeat + 2):
                sql_s[0], sql_n[0], tpl_s[0] = 0.0, 0, 0.0
                t = time.perf_counter()
                status = client.get(path, headers=headers).status_code
                total = time.perf_counter() - t
                if status != 200:
                    raise RuntimeError(f"GET {path} -> {status}")
                if i >= 2:  # two warm-ups
                    totals.append(total * 1000)
                    sqls.append(sql_s[0] * 1000)
                    tpls.append(tpl_s[0] * 1000)
                    counts.append(sql_n[0])
    finally:
        django_backend.Template.render = original
    out = {
        "total_ms": statistics.median(totals),
        "sql_ms": statistics.median(sqls),
        "sql_queries": statistics.median(counts),
        "template_ms": statistics.median(tpls),
    }
    out["other_python_ms"] = out["total_ms"] - out["sql_ms"] - out["template_ms"]
    return {k: round(v, 1) for k, v in out.items()}
