"""Targets 3 and 4: reading metrics for charts.

3. GET /api/runs/{id}/metrics/?keys=k&max_points=2000 on a 1,000,000-point series.
4. GET /api/compare/?runs=<10 runs>&keys=k&max_points=2000, each run with 100,000 points.

Seeding goes straight through webapp.runs.metric_store.metrics_record in 100,000-point batches (not
over HTTP). Each run also has other keys, so the key filter has something to skip. Every request
is timed twice: "server time" from the Server-Timing header, "wall" on the client (includes the
socket and the body transfer). Medians of ``--repeat`` requests after ``--warmup`` unmeasured ones.
For comparison with MLflow, the same series is also read whole (no max_points) and as 320 points.

    python -m bench.bench_read_metrics [--points 1000000] [--compare-runs 10] [--compare-points 100000]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench.common import (
    Client,
    Server,
    bench_database,
    breakdown_get,
    cli,
    profile_get,
    result,
    timed_requests,
)

TARGET_SINGLE_MS = 100.0
TARGET_COMPARE_MS = 150.0
SEED_BATCH = 100_000


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


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--points", type=int, default=1_000_000, help="points of the single big series")
    parser.add_argument("--compare-runs", type=int, default=10)
    parser.add_argument("--compare-points", type=int, default=100_000)
    parser.add_argument("--max-points", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="also print where the time of 3 and 4 goes")


def check_series(max_points: int, runs: int = 1):
    def check(resp) -> None:
        data = resp.json()
        series = (
            list(data.values()) if runs == 1 else [s for per_run in data.values() for s in per_run.values()]
        )
        if runs > 1 and len(data) != runs:
            raise RuntimeError(f"expected {runs} runs in the answer, got {len(data)}")
        for s in series:
            n = len(s["steps"])
            if not 0 < n <= max_points or n != len(s["values"]):
                raise RuntimeError(f"bad series in the answer: {n} steps, {len(s['values'])} values")

    return check


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    with bench_database() as fx:
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

        t0 = time.perf_counter()
        big = new_run("big")
        seed_series(big.id, "k", args.points, 0)
        for j in range(4):
            seed_series(big.id, f"other/{j}", 100_000, 100 + j)
        compare = [new_run(f"compare-{i}") for i in range(args.compare_runs)]
        for i, r in enumerate(compare):
            seed_series(r.id, "k", args.compare_points, 1000 + i)
            seed_series(r.id, "other/0", args.compare_points // 10, 2000 + i)
        print(
            f"seeded {args.points:,} + 4 x 100,000 points (1 run) and {args.compare_runs} runs x "
            f"{args.compare_points:,} (+{args.compare_points // 10:,}) points in {time.perf_counter() - t0:.1f} s; "
            f"{MetricChunk.objects.count():,} chunks",
            flush=True,
        )
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("VACUUM ANALYZE")

        with Server() as server:
            client = Client(server.url, fx.token)
            mp = args.max_points

            path = f"/api/runs/{big.id}/metrics/?keys=k&max_points={mp}"
            m = timed_requests(client, path, warmup=args.warmup, repeat=args.repeat, check=check_series(mp))
            print(f"single: {m}", flush=True)
            rows.append(
                result(
                    "3",
                    f"GET /api/runs/{{id}}/metrics/?keys=k&max_points={mp}, {args.points:,}-point series",
                    m["server_ms"]["median"],
                    "ms",
                    TARGET_SINGLE_MS,
                    "lower",
                    mlflow="0.78 s for a 320-point sample; 47.6 s for the whole 1M history",
                    note=f"server time median of {m['requests']} after {m['warmup']} warm-up; client wall median "
                    f"{m['wall_ms']['median']} ms; p90 server {m['server_ms']['p90']} ms; "
                    f"{m['response_bytes']:,} bytes",
                    path=path,
                    **m,
                )
            )

            ids = ",".join(str(r.id) for r in compare)
            path = f"/api/compare/?runs={ids}&keys=k&max_points={mp}"
            m = timed_requests(
                client, path, warmup=args.warmup, repeat=args.repeat, check=check_series(mp, len(compare))
            )
            print(f"compare: {m}", flush=True)
            rows.append(
                result(
                    "4",
                    f"GET /api/compare/?runs=<{len(compare)} runs>&keys=k&max_points={mp}, "
                    f"{args.compare_points:,} points each",
                    m["server_ms"]["median"],
                    "ms",
                    TARGET_COMPARE_MS,
                    "lower",
                    mlflow="0.89 s (10 runs x 100k, downsampled)",
                    note=f"server time median of {m['requests']} after {m['warmup']} warm-up; client wall median "
                    f"{m['wall_ms']['median']} ms; p90 server {m['server_ms']['p90']} ms; "
                    f"{m['response_bytes']:,} bytes",
                    path=path,
                    **m,
                )
            )

            # For the MLflow comparison only (no target): the 320-point sample and the whole history.
            path = f"/api/runs/{big.id}/metrics/?keys=k&max_points=320"
            m = timed_requests(client, path, warmup=2, repeat=args.repeat, check=check_series(320))
            rows.append(
                result(
                    "3b",
                    "(info) same series, max_points=320",
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
                if n != args.points:
                    raise RuntimeError(f"full read returned {n} points, expected {args.points}")

            path = f"/api/runs/{big.id}/metrics/?keys=k"
            m = timed_requests(client, path, warmup=1, repeat=5, check=check_full)
            rows.append(
                result(
                    "3c",
                    f"(info) same series, all {args.points:,} points (no max_points)",
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

        if args.profile:
            for row in rows[:2]:
                print(
                    f"breakdown of GET {row['details']['path']}: {breakdown_get(row['details']['path'], token=fx.token)}"
                )
                print(profile_get(row["details"]["path"], token=fx.token, top=20))
    return rows


if __name__ == "__main__":
    sys.exit(cli("orlab bench 3+4: reading metrics for charts", run, configure))
