"""Targets 3 and 4 (issue 12's read-path speeds): reading metrics for charts.

3. GET /api/runs/{id}/metrics/?keys=k&max_points=2000 on a 1,000,000- and a 10,000,000-point series
   (<= 20 ms server time).
4. GET /api/compare/?runs=<10 runs>&keys=k&max_points=2000, each run with 100,000 points (<= 30 ms);
   also through /api/compare/series/ (the compare page's endpoint, its cache off).
4b. GET /api/compare/?runs=<100 runs>&keys=<10 keys>&max_points=500, 100,000 points per series
   (100 M points; <= 300 ms).

Seeding goes straight through webapp.runs.metric_store.metrics_record in 100,000-point batches (not
over HTTP), so the chunks and their summaries are what live writes make. Each run also has other
keys, so the key filter has something to skip. Every request is timed twice: "server time" from the
Server-Timing header, "wall" on the client (includes the socket and the body transfer). The first
request of each path (cold: just after the server started, nothing of it in the process) is
reported on its own, then the medians of ``--repeat`` requests after ``--warmup`` unmeasured ones.
For comparison with MLflow, the 1M series is also read whole (no max_points) and as 320 points. The
compare page's cache of downsampled series is off (ORLAB_COMPARE_CACHE=0): the numbers are the reader.
The server is the README's command, ``gunicorn webapp.wsgi -w 4`` (sync workers). Then MLflow's own
server (``--mlflow-python``, a venv of its own; left out when missing or with ``--skip-mlflow``) on
a throw-away database of the same PostgreSQL answers the same downsampled read of a 1M-point series
(``--mlflow-points``) as its UI asks for it, in the same run.

    python -m bench.bench_read_metrics [--points 1000000,10000000] [--compare-runs 10]
        [--compare-points 100000] [--big-runs 100 --big-keys 10 --big-points 100000] [--profile]
        [--keep-db]  (keep the seeded database and reuse it next time: re-measure without seeding)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Iterator

import numpy as np

from bench.common import (
    BENCH_USER,
    DB_NAME,
    Client,
    Fixtures,
    ReadmeServer,
    bench_database,
    breakdown_get,
    cli,
    create_database,
    create_fixtures,
    database_url,
    migrate,
    profile_get,
    result,
    setup_django,
    timed_requests,
)

TARGET_SINGLE_MS = 20.0
TARGET_COMPARE_MS = 30.0
TARGET_BIG_COMPARE_MS = 300.0
SEED_BATCH = 100_000
MLFLOW_SINGLE = "0.78 s for a 320-point sample; 47.6 s for the whole 1M history (bench/RESULTS.md, Nov 25)"
MLFLOW_COMPARE = "0.89 s (10 runs x 100k, downsampled; bench/RESULTS.md, Nov 25)"


def curve(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy decaying loss with a few spikes."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n, dtype=np.int64)
    values = np.exp(-steps / max(1, n / 5)) + 0.05 * rng.standard_normal(n)
    values[rng.integers(0, n, size=max(1, n // 100_000))] += 5.0
    walls = 1.7e9 + steps * 0.01
    return steps, values, walls


def seed_series(run_id: int, key: str, n: int, seed: int) -> None:
    from webapp.runs.metric_store import Columns, metrics_record

    steps, values, walls = curve(n, seed)
    for lo in range(0, n, SEED_BATCH):
        sl = slice(lo, lo + SEED_BATCH)
        metrics_record(run_id, {key: Columns.of(steps[sl], values[sl], walls[sl])})


def seed_run_keys(run_id: int, keys: list[str], n: int, seed: int) -> None:
    """``n`` points for each of ``keys``, one metrics_record call per run (as one big sink flush)."""
    from webapp.runs.metric_store import Columns, metrics_record

    batch = {}
    for j, key in enumerate(keys):
        steps, values, walls = curve(n, seed + j)
        batch[key] = Columns.of(steps, values, walls)
    metrics_record(run_id, batch)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--points",
        default="1000000,10000000",
        help="comma-separated sizes of the single big series (one run each)",
    )
    parser.add_argument("--compare-runs", type=int, default=10)
    parser.add_argument("--compare-points", type=int, default=100_000)
    parser.add_argument("--max-points", type=int, default=2000)
    parser.add_argument("--big-runs", type=int, default=100, help="4b: runs (0 skips 4b)")
    parser.add_argument("--big-keys", type=int, default=10)
    parser.add_argument("--big-points", type=int, default=100_000)
    parser.add_argument("--big-max-points", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="also print where the time of 3 and 4 goes")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers (the README: 4)")
    parser.add_argument("--skip-mlflow", action="store_true", help="leave out MLflow's server")
    parser.add_argument(
        "--keep-db",
        action="store_true",
        help="keep the bench database (ORLAB_BENCH_DB) afterwards and reuse it when it already holds "
        "the series these flags ask for: re-measure without re-seeding (it is migrated first)",
    )
    parser.add_argument("--mlflow-python", default="/tmp/mlflow-venv/bin/python")
    parser.add_argument("--mlflow-db", default="mlflow_bench_read")
    parser.add_argument(
        "--mlflow-points", default="1000000", help="comma-separated series sizes read from MLflow too"
    )
    parser.add_argument("--mlflow-repeat", type=int, default=5, help="MLflow reads after the cold one")


def check_series(max_points: int, runs: int = 1, keys: int = 1):
    def check(resp) -> None:
        data = resp.json()
        series = (
            list(data.values()) if runs == 1 else [s for per_run in data.values() for s in per_run.values()]
        )
        if runs > 1 and len(data) != runs:
            raise RuntimeError(f"expected {runs} runs in the answer, got {len(data)}")
        if len(series) != runs * keys:
            raise RuntimeError(f"expected {runs * keys} series in the answer, got {len(series)}")
        for s in series:
            n = len(s["steps"])
            if not 0 < n <= max_points or n != len(s["values"]):
                raise RuntimeError(f"bad series in the answer: {n} steps, {len(s['values'])} values")

    return check


def cold_and_warm(client: Client, path: str, args: argparse.Namespace, check) -> dict:
    """The first request of ``path`` (cold), then timed_requests' warm medians."""
    first = client.request("GET", path)
    if first.status != 200:
        raise RuntimeError(f"GET {path} -> {first.status}: {first.body[:500]!r}")
    m = timed_requests(client, path, warmup=args.warmup, repeat=args.repeat, check=check)
    m["cold_server_ms"] = round(first.server_ms, 2) if first.server_ms is not None else None
    m["cold_wall_ms"] = round(first.wall_ms, 2)
    return m


def note_of(m: dict) -> str:
    return (
        f"server time median of {m['requests']} after {m['warmup']} warm-up (p90 {m['server_ms']['p90']} ms); "
        f"cold first request {m['cold_server_ms']} ms server / {m['cold_wall_ms']} ms wall; client wall "
        f"median {m['wall_ms']['median']} ms; {m['response_bytes']:,} bytes"
    )


def mlflow_reads(args: argparse.Namespace, singles: dict[int, dict]) -> list[dict]:
    """MLflow's own server on the same PostgreSQL (a throw-away database), after orlab's part: the
    same downsampled read of one series as MLflow's UI asks for it
    (``/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval``, max_results = --max-points), its
    series seeded with the rows MLflow's store writes (bench_mlflow_api.seed_mlflow_copy). MLflow
    sends no Server-Timing: its figure is the client's wall time, compared with orlab's server time
    (and orlab's wall time)."""
    from pathlib import Path

    from bench.bench_mlflow_api import (
        Api,
        MlflowServer,
        drop_db,
        mlflow_version,
        recreate_db,
        seed_mlflow_copy,
    )

    if not Path(args.mlflow_python).exists():
        print(
            f"MLflow left out: {args.mlflow_python} does not exist (python3.11 -m venv /tmp/mlflow-venv && "
            "/tmp/mlflow-venv/bin/pip install mlflow==3.17.2 psycopg2-binary)",
            flush=True,
        )
        return []
    version = mlflow_version(args.mlflow_python)
    mp = args.max_points
    out = []
    recreate_db(args.mlflow_db)
    try:
        with MlflowServer(args.mlflow_python, args.mlflow_db, args.workers) as ms:
            api = Api(ms.url, "", None)
            client = Client(ms.url)
            for size in (int(x) for x in args.mlflow_points.split(",") if x):
                run_id = api.create_run(f"read-{size}")
                took = seed_mlflow_copy(args.mlflow_db, run_id, "k", size)
                print(f"mlflow: seeded {size:,} points in {took:.1f} s", flush=True)
                path = (
                    "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"
                    f"?run_ids={run_id}&metric_key=k&max_results={mp}"
                )
                load0 = [round(x, 2) for x in os.getloadavg()]
                responses = [client.request("GET", path) for _ in range(1 + args.mlflow_repeat)]
                for r in responses:
                    got = len(r.json().get("metrics", [])) if r.status == 200 else 0
                    if not 0 < got <= mp:
                        raise RuntimeError(f"MLflow GET {path} -> {r.status}, {got} points: {r.body[:300]!r}")
                walls = sorted(r.wall_ms for r in responses[1:])
                median = statistics.median(walls)
                ours = singles.get(size)
                ratio = round(median / ours["server_ms"]["median"], 1) if ours else None
                note = (
                    f"MLflow {version} ({ms.description}): wall median {median:.1f} ms of {len(walls)} after a "
                    f"cold {responses[0].wall_ms:.1f} ms; {len(responses[1].body):,} bytes; load {load0}"
                )
                if ours:
                    note += (
                        f"; orlab server {ours['server_ms']['median']} ms, wall {ours['wall_ms']['median']} ms "
                        f"(wall/wall {median / ours['wall_ms']['median']:.1f}x)"
                    )
                print(f"mlflow single {size:,}: {note}", flush=True)
                out.append(
                    result(
                        "3m",
                        f"(info) {size:,}-point series at max_points={mp}: MLflow's wall / orlab's server time",
                        ratio,
                        "x",
                        None,
                        "higher",
                        mlflow=f"{median:.1f} ms",
                        note=note,
                        path=path,
                        mlflow_wall_ms=walls,
                        mlflow_cold_wall_ms=round(responses[0].wall_ms, 1),
                    )
                )
            client.close()
            api.close()
    finally:
        drop_db(args.mlflow_db)
    return out


@contextlib.contextmanager
def kept_database(args: argparse.Namespace, sizes: list[int], big_keys: list[str]) -> Iterator[tuple]:
    """bench_database that is neither dropped afterwards nor seeded again when it already holds the
    series these flags ask for (--keep-db): a later run on a quiet machine re-measures without
    seeding 100 M points again. It is migrated first, so a database seeded by older code gets the
    current storage layout. Yields (fixtures, (bigs, compare, many) or None when it must be seeded)."""
    import psycopg

    with psycopg.connect(database_url("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
    if not exists:
        create_database()
    migrate()
    setup_django()
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from webapp.projects.models import Project
    from webapp.runs.models import Run

    user = get_user_model().objects.filter(username=BENCH_USER).first()
    reused = seeded_runs(args, sizes, big_keys) if user is not None else None
    if reused is not None:
        fx = Fixtures(
            user=user,
            project=Project.objects.filter(name="bench", owner=user).order_by("id").first(),
            token=Token.objects.get(user=user).key,
        )
        yield fx, reused
        return
    if user is not None or Run.objects.exists():  # seeded for other flags, or partly: start again
        from django.db import connections

        connections.close_all()
        create_database()
        migrate()
        print(f"database {DB_NAME}: did not hold these series; created again", flush=True)
    yield create_fixtures(), None


@contextlib.contextmanager
def dropped_database() -> Iterator[tuple]:
    with bench_database() as fx:
        yield fx, None


def seeded_runs(args: argparse.Namespace, sizes: list[int], big_keys: list[str]):
    """(bigs, compare, many) of a kept database when it holds every series these flags ask for,
    with the asked number of points; None otherwise."""
    from webapp.runs.models import MetricSeries, Run

    def one(name: str, counts: dict[str, int]) -> Run | None:
        run = Run.objects.filter(name=name).order_by("id").last()
        if run is None:
            return None
        have = dict(MetricSeries.objects.filter(run=run, key__in=list(counts)).values_list("key", "count"))
        return run if have == counts else None

    bigs = [(size, one(f"big-{size}", {"k": size})) for size in sizes]
    compare = [one(f"compare-{i}", {"k": args.compare_points}) for i in range(args.compare_runs)]
    many = [one(f"many-{i}", dict.fromkeys(big_keys, args.big_points)) for i in range(args.big_runs)]
    if all(r is not None for _, r in bigs) and all(r is not None for r in compare + many):
        return bigs, compare, many
    return None


def run(args: argparse.Namespace) -> list[dict]:
    os.environ["ORLAB_COMPARE_CACHE"] = "0"  # the gunicorn workers inherit it: measure the reader
    sizes = [int(x) for x in str(args.points).split(",") if x]
    rows = []
    big_keys = [f"m/{j:02d}" for j in range(args.big_keys)]
    with kept_database(args, sizes, big_keys) if args.keep_db else dropped_database() as (fx, reused):
        from django.utils import timezone

        from webapp.runs.models import MetricChunk, Run

        def new_run(name: str) -> Run:
            now = timezone.now()
            return Run.objects.create(
                project=fx.project,
                name=name,
                kind=Run.EXTERNAL,
                status=Run.Status.SUCCEEDED,
                started_at=now,
                finished_at=now,
                created_by=fx.user,
            )

        if reused:
            bigs, compare, many = reused
            print(f"database {DB_NAME}: kept, its series reused (no seeding)", flush=True)
        else:
            t0 = time.perf_counter()
            bigs = []
            for size in sizes:
                t = time.perf_counter()
                big = new_run(f"big-{size}")
                seed_series(big.id, "k", size, 0)
                for j in range(4):
                    seed_series(big.id, f"other/{j}", 100_000, 100 + j)
                bigs.append((size, big))
                print(f"seeded {size:,} points in {time.perf_counter() - t:.1f} s", flush=True)
            t = time.perf_counter()
            compare = [new_run(f"compare-{i}") for i in range(args.compare_runs)]
            for i, r in enumerate(compare):
                seed_series(r.id, "k", args.compare_points, 1000 + i)
                seed_series(r.id, "other/0", args.compare_points // 10, 2000 + i)
            print(f"seeded {args.compare_runs} compare runs in {time.perf_counter() - t:.1f} s", flush=True)
            t = time.perf_counter()
            many = [new_run(f"many-{i}") for i in range(args.big_runs)]
            for i, r in enumerate(many):
                seed_run_keys(r.id, big_keys, args.big_points, 10_000 + 100 * i)
            if many:
                print(
                    f"seeded {args.big_runs} runs x {args.big_keys} keys x {args.big_points:,} points in "
                    f"{time.perf_counter() - t:.1f} s ({args.big_points * args.big_keys * args.big_runs / (time.perf_counter() - t):,.0f} points/s)",
                    flush=True,
                )
            print(
                f"seeding done in {time.perf_counter() - t0:.1f} s; {MetricChunk.objects.count():,} chunks",
                flush=True,
            )
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("VACUUM ANALYZE")

        singles: dict[int, dict] = {}
        with ReadmeServer(workers=args.workers) as server:
            client = Client(server.url, fx.token)
            mp = args.max_points

            for size, big in bigs:
                path = f"/api/runs/{big.id}/metrics/?keys=k&max_points={mp}"
                m = cold_and_warm(client, path, args, check_series(mp))
                print(f"single {size:,}: {m}", flush=True)
                singles[size] = m
                rows.append(
                    result(
                        "3",
                        f"GET /api/runs/{{id}}/metrics/?keys=k&max_points={mp}, {size:,}-point series",
                        m["server_ms"]["median"],
                        "ms",
                        TARGET_SINGLE_MS,
                        "lower",
                        mlflow=MLFLOW_SINGLE if size == 1_000_000 else "",
                        note=note_of(m),
                        path=path,
                        **m,
                    )
                )

            ids = ",".join(str(r.id) for r in compare)
            for api in ("/api/compare/", "/api/compare/series/"):
                path = f"{api}?runs={ids}&keys=k&max_points={mp}"
                m = cold_and_warm(client, path, args, check_series(mp, len(compare)))
                print(f"compare {api}: {m}", flush=True)
                rows.append(
                    result(
                        "4",
                        f"GET {api}?runs=<{len(compare)} runs>&keys=k&max_points={mp}, "
                        f"{args.compare_points:,} points each",
                        m["server_ms"]["median"],
                        "ms",
                        TARGET_COMPARE_MS,
                        "lower",
                        mlflow=MLFLOW_COMPARE,
                        note=note_of(m),
                        path=path,
                        **m,
                    )
                )

            if many:
                ids = ",".join(str(r.id) for r in many)
                bmp = args.big_max_points
                path = f"/api/compare/?runs={ids}&keys={','.join(big_keys)}&max_points={bmp}"
                m = cold_and_warm(client, path, args, check_series(bmp, len(many), len(big_keys)))
                print(f"compare {len(many)} runs x {len(big_keys)} keys: {m}", flush=True)
                rows.append(
                    result(
                        "4b",
                        f"GET /api/compare/?runs=<{len(many)} runs>&keys=<{len(big_keys)} keys>&max_points={bmp}, "
                        f"{args.big_points:,} points each",
                        m["server_ms"]["median"],
                        "ms",
                        TARGET_BIG_COMPARE_MS,
                        "lower",
                        note=note_of(m),
                        path=path,
                        **m,
                    )
                )

            million = next((big for size, big in bigs if size == 1_000_000), None)
            if million is not None:
                # For the MLflow comparison only (no target): the 320-point sample and the whole history.
                path = f"/api/runs/{million.id}/metrics/?keys=k&max_points=320"
                m = timed_requests(client, path, warmup=2, repeat=args.repeat, check=check_series(320))
                rows.append(
                    result(
                        "3b",
                        "(info) 1M series, max_points=320",
                        m["server_ms"]["median"],
                        "ms",
                        None,
                        "lower",
                        mlflow="0.78 s",
                        note=f"client wall median {m['wall_ms']['median']} ms",
                        path=path,
                        **m,
                    )
                )

                def check_full(resp) -> None:
                    n = len(resp.json()["k"]["steps"])
                    if n != 1_000_000:
                        raise RuntimeError(f"full read returned {n} points, expected 1,000,000")

                path = f"/api/runs/{million.id}/metrics/?keys=k"
                m = timed_requests(client, path, warmup=1, repeat=5, check=check_full)
                rows.append(
                    result(
                        "3c",
                        "(info) 1M series, all 1,000,000 points (no max_points)",
                        m["server_ms"]["median"],
                        "ms",
                        None,
                        "lower",
                        mlflow="47.6 s",
                        note=f"client wall median {m['wall_ms']['median']} ms; {m['response_bytes'] / 2**20:.1f} MiB",
                        path=path,
                        **m,
                    )
                )
            client.close()

        if not args.skip_mlflow:
            rows.extend(mlflow_reads(args, singles))

        if args.profile:
            for row in rows:
                if row["target"] in ("3", "4", "4b"):
                    path = row["details"]["path"]
                    print(f"breakdown of GET {path}: {breakdown_get(path, token=fx.token)}")
                    print(profile_get(path, token=fx.token, top=20))
    return rows


if __name__ == "__main__":
    sys.exit(cli("orlab bench 3+4: reading metrics for charts", run, configure))
