"""Issue 13's speed targets: orlab's MLflow-compatible API (/mlflow) side by side with MLflow's own
tracking server, both on the same PostgreSQL, in one run.

orlab: ``gunicorn webapp.wsgi -w 4`` (the README's server command: 4 sync workers) on a throw-away
database (``ORLAB_BENCH_DB``, default orlab_bench_mlf). MLflow: ``mlflow server --backend-store-uri
postgresql://.../<--mlflow-db> --workers 4`` from a separate venv (``--mlflow-python``, default
/tmp/mlflow-venv/bin/python; never orlab's venv). Both databases are created here and dropped at the
end; the shared PostgreSQL server is never touched otherwise.

1. log-batch: ``--clients`` concurrent clients, each its own run and its own HTTP connection, each
   ``--batches`` POSTs of ``runs/log-batch`` with 1,000 metrics (10 keys x 100 steps). Throughput =
   points sent / time from the start barrier to the last response (every response checked 200).
   Two passes per server on fresh runs: "cold" (the first requests after the server started) and
   "warm". Goal: orlab >= 10x MLflow (warm).
2. get-history: one series of ``--points`` points walked page by page (``max_results`` =
   ``--page``, ``page_token`` until none) over raw HTTP. orlab's series is seeded straight through
   webapp.runs.metric_store.metrics_record (as bench_read_metrics seeds); MLflow's with
   the rows SqlAlchemyStore.log_batch writes, by COPY (``--mlflow-seed store``: the store itself, 1,000
   metrics a call, in the MLflow venv). Measured: for orlab the sum
   over the pages of the Server-Timing ``app;dur`` (Django's time, from the first to the last
   middleware) and the client's wall time; for MLflow (no Server-Timing) the sum over the pages of
   the client's wall time on one keep-alive connection (request sent -> whole body read, no JSON
   parsing). Every walk is checked afterwards (all points, steps in order). The first walk is
   "cold", then ``--walks`` more; the warm figure is their median. Goal: orlab's server time >= 50x
   faster than MLflow's (warm).

The issue asks for a 1,000,000-point series; the default is 100,000 because one walk of MLflow's
1M-point history takes minutes on the shared 2-CPU machine (``--points 1000000 --mlflow-walks 1``).
MLflow's backend URI uses ``postgresql+psycopg2://`` (SQLAlchemy 2.1 picks psycopg 3 for plain
``postgresql://``, which the MLflow venv does not have).

    python -m bench.bench_mlflow_api [--points 100000] [--page 25000] [--clients 8] [--batches 25]
        [--json bench/mlflow_api_results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("ORLAB_BENCH_DB", "orlab_bench_mlf")
os.environ.setdefault("ORLAB_BENCH_BROKER", "redis://127.0.0.1:6379/5")

import numpy as np  # noqa: E402
import orjson  # noqa: E402

from bench.common import (  # noqa: E402
    _TMP,
    PG_URL,
    Client,
    ReadmeServer,
    Server,
    _admin,
    bench_database,
    cli,
    free_port,
    result,
    summarize,
)

LOG_BATCH_RATIO_GOAL = 10.0
HISTORY_RATIO_GOAL = 50.0
KEYS = [f"train/metric_{j:02d}" for j in range(10)]
STEPS_PER_BATCH = 100


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- servers ------------------------------------------------------------------------------------


class MlflowServer(ReadmeServer):
    def __init__(self, python: str, db: str, workers: int):
        super().__init__(workers=workers, threads=1)
        self.python, self.db = python, db
        self.port = free_port()
        self.log_path = _TMP / f"mlflow-{self.port}.log"
        self.artifacts = _TMP / f"mlflow-artifacts-{self.port}"

    @property
    def backend_uri(self) -> str:
        return f"{PG_URL.replace('postgres://', 'postgresql+psycopg2://', 1)}/{self.db}"

    @property
    def description(self) -> str:
        return f"mlflow server --backend-store-uri {self.backend_uri} --workers {self.workers}"

    def start(self, timeout: float = 300.0) -> Server:
        mlflow = str(Path(self.python).with_name("mlflow"))
        cmd = [mlflow, "server", "--backend-store-uri", self.backend_uri, "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", str(self.workers),
               "--artifacts-destination", str(self.artifacts),
               # uvicorn's supervisor kills a worker that misses its 5 s health ping: on the loaded
               # 2-CPU machine that dropped requests ("Child process died"); a worker's speed is unchanged
               "--uvicorn-opts", "--timeout-worker-healthcheck 120"]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "DATABASE_URL"))}
        return self._launch(cmd, env, "/health", timeout)


def recreate_db(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_db(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"database {name}: dropped", flush=True)


class Api:
    """MLflow REST 2.0 over one keep-alive connection (common.Client), under ``prefix``."""

    def __init__(self, base_url: str, prefix: str, token: str | None):
        self.client = Client(base_url)
        if token:
            self.client.headers["Authorization"] = f"Bearer {token}"
        self.prefix = prefix

    def call(self, method: str, endpoint: str, payload: dict | None = None, query: str = ""):
        path = f"{self.prefix}/api/2.0/mlflow/{endpoint}" + (f"?{query}" if query else "")
        body = orjson.dumps(payload) if payload is not None else None
        hdrs = {"Content-Type": "application/json"} if body is not None else None
        r = self.client.request(method, path, body, hdrs)
        if r.status != 200:
            raise RuntimeError(f"{method} {path} -> {r.status}: {r.body[:500]!r}")
        return r

    def create_run(self, name: str) -> str:
        r = self.call("POST", "runs/create", {"experiment_id": "0", "run_name": name, "start_time": 0})
        return r.json()["run"]["info"]["run_id"]

    def close(self) -> None:
        self.client.close()


# --- 1. log-batch -------------------------------------------------------------------------------


def make_bodies(seed: int, batches: int) -> list[dict]:
    """``batches`` log-batch payloads of 10 keys x 100 steps (run_id filled in per pass)."""
    rng = np.random.default_rng(seed)
    out = []
    for b in range(batches):
        values = rng.standard_normal((STEPS_PER_BATCH, len(KEYS))).tolist()
        metrics = [
            {"key": key, "value": row[j], "timestamp": 1_700_000_000_000 + step, "step": step}
            for step, row in zip(range(b * STEPS_PER_BATCH, (b + 1) * STEPS_PER_BATCH), values, strict=True)
            for j, key in enumerate(KEYS)
        ]
        out.append(metrics)
    return out


def log_batch_pass(base: str, prefix: str, token: str | None, label: str, payloads: list[list[dict]]) -> dict:
    apis = [Api(base, prefix, token) for _ in payloads]
    run_ids = [api.create_run(f"logbatch-{label}-{i}") for i, api in enumerate(apis)]
    bodies = [
        [orjson.dumps({"run_id": rid, "metrics": m}) for m in per_client]
        for rid, per_client in zip(run_ids, payloads, strict=True)
    ]
    path = f"{prefix}/api/2.0/mlflow/runs/log-batch"
    barrier = threading.Barrier(len(apis) + 1)
    wall: list[float] = []
    server: list[float] = []
    errors: list[str] = []
    sent = [0] * len(apis)

    def loop(i: int) -> None:
        client = apis[i].client
        barrier.wait()
        try:
            for body, metrics in zip(bodies[i], payloads[i], strict=True):
                r = client.request("POST", path, body, {"Content-Type": "application/json"})
                if r.status != 200:
                    errors.append(f"client {i}: {r.status} {r.body[:300]!r}")
                    return
                sent[i] += len(metrics)
                wall.append(r.wall_ms)
                if r.server_ms is not None:
                    server.append(r.server_ms)
        except Exception as exc:
            errors.append(f"client {i}: {exc!r}")

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(len(apis))]
    for t in threads:
        t.start()
    la0 = loadavg()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for api in apis:
        api.close()
    points = sum(sent)
    out = {
        "points": points,
        "elapsed_s": round(elapsed, 3),
        "points_per_s": round(points / elapsed),
        "request_wall_ms": summarize(wall),
        "request_server_ms": summarize(server),  # orlab's Server-Timing; MLflow sends none
        "errors": errors[:5],
        "loadavg_before": la0,
        "loadavg_after": loadavg(),
        "run_ids": run_ids,
    }
    print(
        f"  log-batch {label}: {points:,} points in {elapsed:.2f} s = {points / elapsed:,.0f} points/s; "
        f"request wall median {out['request_wall_ms'].get('median')} ms, server time median "
        f"{out['request_server_ms'].get('median', '-')} ms; errors {len(errors)}; "
        f"load {la0} -> {out['loadavg_after']}",
        flush=True,
    )
    if errors:
        print("   " + "\n   ".join(errors[:5]), file=sys.stderr, flush=True)
    return out


# --- 2. get-history -----------------------------------------------------------------------------


def walk_history(api: Api, run_id: str, key: str, page: int, expect: int) -> dict:
    from urllib.parse import urlencode

    token = None
    pages, server_ms, wall_ms = 0, [], []
    bodies = []
    la0 = loadavg()
    while True:
        q = {"run_id": run_id, "metric_key": key, "max_results": page}
        if token:
            q["page_token"] = token
        r = api.call("GET", "metrics/get-history", query=urlencode(q))
        pages += 1
        wall_ms.append(r.wall_ms)
        server_ms.append(r.server_ms)
        bodies.append(r.body)
        token = orjson.loads(r.body).get("next_page_token")  # after the timing: not measured
        if not token:
            break
    la1 = loadavg()
    steps = np.fromiter(
        (m["step"] for b in bodies for m in orjson.loads(b).get("metrics", [])), dtype=np.int64
    )
    ok = len(steps) == expect and bool(np.all(np.diff(steps) > 0))
    if not ok:
        raise RuntimeError(f"walk returned {len(steps)} points (expected {expect}), in order: {ok}")
    server = None if any(s is None for s in server_ms) else round(sum(server_ms), 1)
    return {
        "pages": pages,
        "points": int(len(steps)),
        "server_ms": server,
        "wall_ms": round(sum(wall_ms), 1),
        "bytes": sum(len(b) for b in bodies),
        "loadavg_before": la0,
        "loadavg_after": la1,
    }


SEED_MLFLOW = r"""
import sys, time
import numpy as np
from mlflow.entities import Metric
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
uri, art, run_id, key, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
store = SqlAlchemyStore(uri, art)
rng = np.random.default_rng(1)
steps = np.arange(n)
values = (np.exp(-steps / max(1, n / 5)) + 0.05 * rng.standard_normal(n)).tolist()
t0 = time.perf_counter()
for lo in range(0, n, 1000):
    ms = [Metric(key, values[i], 1_700_000_000_000 + i * 10, i) for i in range(lo, min(n, lo + 1000))]
    store.log_batch(run_id, metrics=ms, params=[], tags=[])
print(f"seeded {n} points in {time.perf_counter() - t0:.1f} s", flush=True)
"""


def seed_mlflow_copy(db: str, run_uuid: str, key: str, n: int) -> float:
    """The rows MLflow's SqlAlchemyStore.log_batch writes for the same points as SEED_MLFLOW (its
    ``metrics`` rows and the ``latest_metrics`` row), written with COPY: the store writes a few
    thousand points/s on this machine (280 s for 1M, longer under load), which is seeding, not the
    measured part. Returns seconds."""
    import psycopg

    t0 = time.perf_counter()
    rng = np.random.default_rng(1)
    steps = np.arange(n)
    values = (np.exp(-steps / max(1, n / 5)) + 0.05 * rng.standard_normal(n)).tolist()
    stamps = (1_700_000_000_000 + steps * 10).tolist()
    with psycopg.connect(f"{PG_URL}/{db}") as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY metrics (key, value, timestamp, step, is_nan, run_uuid) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((key, values[i], stamps[i], i, False, run_uuid))
            cur.execute(
                "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
                "VALUES (%s, %s, %s, %s, false, %s) ON CONFLICT (key, run_uuid) DO UPDATE SET "
                "value = EXCLUDED.value, timestamp = EXCLUDED.timestamp, step = EXCLUDED.step",
                (key, values[-1], stamps[-1], n - 1, run_uuid),
            )
        conn.commit()
        conn.execute("ANALYZE metrics")
    return time.perf_counter() - t0


def seed_orlab(run_pk: int, key: str, n: int) -> float:
    from bench.bench_read_metrics import seed_series

    t0 = time.perf_counter()
    seed_series(run_pk, key, n, seed=1)
    return time.perf_counter() - t0


def history_bench(api: Api, run_id: str, key: str, args, label: str) -> dict:
    walks = [walk_history(api, run_id, key, args.page, args.points)]
    for _ in range(args.walks):
        walks.append(walk_history(api, run_id, key, args.page, args.points))
    for i, w in enumerate(walks):
        print(
            f"  get-history {label} walk {i} ({'cold' if i == 0 else 'warm'}): {w['pages']} pages, "
            f"{w['points']:,} points, server {w['server_ms']} ms, client wall {w['wall_ms']} ms, "
            f"load {w['loadavg_before']} -> {w['loadavg_after']}",
            flush=True,
        )
    warm = walks[1:] or walks
    med = {
        "server_ms": statistics.median(w["server_ms"] for w in warm)
        if warm[0]["server_ms"] is not None
        else None,
        "wall_ms": statistics.median(w["wall_ms"] for w in warm),
    }
    return {"cold": walks[0], "walks": walks, "warm_median": med}


# --- main ---------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batches", type=int, default=25, help="log-batch requests per client")
    parser.add_argument(
        "--points", type=int, default=100_000, help="points of the get-history series (issue: 1,000,000)"
    )
    parser.add_argument("--page", type=int, default=25_000, help="max_results of each get-history page")
    parser.add_argument("--walks", type=int, default=2, help="warm walks after the cold one")
    parser.add_argument("--mlflow-walks", type=int, default=2, help="warm walks of MLflow's history")
    parser.add_argument("--workers", type=int, default=4, help="workers of each server")
    parser.add_argument("--mlflow-python", default="/tmp/mlflow-venv/bin/python")
    parser.add_argument("--mlflow-db", default="mlflow_bench")
    parser.add_argument("--skip-history", action="store_true")
    parser.add_argument(
        "--mlflow-seed",
        choices=("copy", "store"),
        default="copy",
        help="how MLflow's history series is seeded: COPY of the rows its store writes, or its store",
    )
    parser.add_argument("--skip-log-batch", action="store_true")


def mlflow_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import mlflow; print(mlflow.__version__)"], capture_output=True, text=True
    )
    return out.stdout.strip() or f"unknown ({out.stderr.strip()[-200:]})"


def run(args: argparse.Namespace) -> list[dict]:
    if not Path(args.mlflow_python).exists():  # MLflow lives in a venv of its own, never orlab's
        raise SystemExit(
            f"MLflow's python {args.mlflow_python} does not exist: create it with\n"
            "  python3.11 -m venv /tmp/mlflow-venv && /tmp/mlflow-venv/bin/pip install mlflow psycopg2-binary\n"
            "or pass --mlflow-python"
        )
    version = mlflow_version(args.mlflow_python)
    print(f"MLflow {version} from {args.mlflow_python}", flush=True)
    payloads = [make_bodies(c, args.batches) for c in range(args.clients)]
    res: dict = {"mlflow_version": version, "orlab": {}, "mlflow": {}}
    key = "train/loss"
    recreate_db(args.mlflow_db)
    try:
        with bench_database() as fx:
            from webapp.runs.models import Run

            # orlab
            with ReadmeServer(workers=args.workers) as server:
                res["orlab"]["server"] = server.description
                if not args.skip_log_batch:
                    res["orlab"]["log_batch"] = {
                        lbl: log_batch_pass(server.url, "/mlflow", fx.token, f"orlab-{lbl}", payloads)
                        for lbl in ("cold", "warm")
                    }
                if not args.skip_history:
                    api = Api(server.url, "/mlflow", fx.token)
                    run_id = api.create_run("history")
                    took = seed_orlab(int(run_id), key, args.points)
                    print(
                        f"  orlab: seeded {args.points:,} points in {took:.1f} s (metric_store)", flush=True
                    )
                    assert Run.objects.filter(pk=int(run_id)).exists()
                    res["orlab"]["seed_s"] = round(took, 1)
                    res["orlab"]["history"] = history_bench(api, run_id, key, args, "orlab")
                    api.close()
            # MLflow
            with MlflowServer(args.mlflow_python, args.mlflow_db, args.workers) as ms:
                res["mlflow"]["server"] = ms.description
                if not args.skip_log_batch:
                    res["mlflow"]["log_batch"] = {
                        lbl: log_batch_pass(ms.url, "", None, f"mlflow-{lbl}", payloads)
                        for lbl in ("cold", "warm")
                    }
                if not args.skip_history:
                    api = Api(ms.url, "", None)
                    run_id = api.create_run("history")
                    t0 = time.perf_counter()
                    if args.mlflow_seed == "store":
                        subprocess.run(
                            [args.mlflow_python, "-c", SEED_MLFLOW, ms.backend_uri, str(ms.artifacts), run_id,
                             key, str(args.points)],
                            check=True,
                        )  # fmt: skip
                    else:
                        seed_mlflow_copy(args.mlflow_db, run_id, key, args.points)
                    took = time.perf_counter() - t0
                    how = (
                        "SqlAlchemyStore.log_batch"
                        if args.mlflow_seed == "store"
                        else "COPY of log_batch's rows"
                    )
                    print(f"  mlflow: seeded {args.points:,} points in {took:.1f} s ({how})")
                    res["mlflow"]["seed_s"] = round(took, 1)
                    margs = argparse.Namespace(**{**vars(args), "walks": args.mlflow_walks})
                    res["mlflow"]["history"] = history_bench(api, run_id, key, margs, "mlflow")
                    api.close()
    finally:
        with contextlib.suppress(Exception):
            drop_db(args.mlflow_db)

    rows = []
    for lbl in ("cold", "warm") if not args.skip_log_batch else ():
        o, m = res["orlab"]["log_batch"][lbl], res["mlflow"]["log_batch"][lbl]
        ratio = round(o["points_per_s"] / m["points_per_s"], 1)
        ok = not o["errors"] and not m["errors"]
        row = result(
            "13a",
            f"log-batch {lbl}: {args.clients} clients x {args.batches} x 1,000 metrics, orlab/MLflow",
            ratio,
            "x",
            LOG_BATCH_RATIO_GOAL if lbl == "warm" else None,
            "higher",
            mlflow=f"{m['points_per_s']:,} points/s",
            note=(
                f"orlab {o['points_per_s']:,} points/s ({o['elapsed_s']} s; load {o['loadavg_before']}), "
                f"MLflow {m['points_per_s']:,} points/s ({m['elapsed_s']} s; load {m['loadavg_before']})"
                + ("" if ok else "; ERRORS")
            ),
            orlab=o,
            mlflow_server=m,
        )
        if not ok:
            row["passed"] = False
        rows.append(row)
    if not args.skip_history:
        for lbl in ("cold", "warm"):
            o = res["orlab"]["history"]["cold" if lbl == "cold" else "warm_median"]
            m = res["mlflow"]["history"]["cold" if lbl == "cold" else "warm_median"]
            ratio = round(m["wall_ms"] / o["server_ms"], 1)
            rows.append(
                result(
                    "13b",
                    f"get-history {lbl}: {args.points:,} points in pages of {args.page:,}, "
                    "MLflow wall / orlab server time",
                    ratio,
                    "x",
                    HISTORY_RATIO_GOAL if lbl == "warm" else None,
                    "higher",
                    mlflow=f"{m['wall_ms'] / 1000:,.2f} s (client wall, keep-alive)",
                    note=(
                        f"orlab server {o['server_ms']:,.0f} ms (wall {o['wall_ms']:,.0f} ms; wall/wall "
                        f"{m['wall_ms'] / o['wall_ms']:.1f}x), MLflow wall {m['wall_ms']:,.0f} ms"
                    ),
                    orlab=o,
                    mlflow_server=m,
                    wall_ratio=round(m["wall_ms"] / o["wall_ms"], 1),
                )
            )
    rows[0]["details"]["all"] = res
    return rows


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(cli("orlab bench 13: MLflow-compatible API vs MLflow's server", run, configure))
