"""Target 1: ingestion through POST /api/runs/{id}/metrics/ from 8 concurrent clients.

Each client owns an external run (created through POST /api/runs/) and posts pre-encoded orjson
batches of ``--batch`` points ``{key, step, value}`` (``--keys`` keys per step) over its own
keep-alive connection, as fast as the server answers. Throughput = points acknowledged as written /
time from the start barrier to the last response. Afterwards the stored points are counted from
MetricSeries.count (and cross-checked against the chunks' n).

    python -m bench.bench_ingest_api [--clients 8] [--batch 10000] [--batches 25] [--keys 10]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

import numpy as np
import orjson

from bench.common import (
    QUIET,
    Client,
    CpuWatch,
    Server,
    bench_database,
    cli,
    result,
    summarize,
    wait_budget_left,
    wait_for_quiet,
)

TARGET_POINTS_PER_S = 100_000


def make_bodies(seed: int, keys: list[str], batches: int, batch_points: int) -> list[bytes]:
    steps_per_batch = batch_points // len(keys)
    rng = np.random.default_rng(seed)
    bodies = []
    for b in range(batches):
        steps = range(b * steps_per_batch, (b + 1) * steps_per_batch)
        values = rng.standard_normal((steps_per_batch, len(keys))).tolist()
        points = [
            {"key": key, "step": step, "value": row[j]}
            for step, row in zip(steps, values, strict=True)
            for j, key in enumerate(keys)
        ]
        bodies.append(orjson.dumps(points))
    return bodies


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=10_000, help="points per request")
    parser.add_argument("--batches", type=int, default=25, help="requests per client")
    parser.add_argument("--keys", type=int, default=10, help="metric keys per step")
    parser.add_argument("--workers", type=int, default=None, help="gunicorn workers (default 2 x nproc)")
    parser.add_argument("--threads", type=int, default=None, help="threads per gunicorn worker (default 2)")
    parser.add_argument("--attempts", type=int, default=3, help="measure again while others disturb it")


def run(args: argparse.Namespace) -> list[dict]:
    keys = [f"train/metric_{j:02d}" for j in range(args.keys)]
    t0 = time.perf_counter()
    bodies = [make_bodies(c, keys, args.batches, args.batch) for c in range(args.clients)]
    per_request = args.batch // args.keys * args.keys
    total = per_request * args.batches * args.clients
    mb = sum(len(b) for bs in bodies for b in bs) / 2**20
    print(
        f"encoded {args.clients} x {args.batches} batches of {per_request:,} points "
        f"({mb:.0f} MiB of JSON, {mb * 2**20 / total:.1f} bytes/point) in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    with bench_database() as fx, Server(args.workers, args.threads) as server:
        from django.db.models import Sum

        from webapp.runs.models import MetricChunk, MetricSeries

        def attempt(n: int) -> dict:
            """Fresh runs (so no point is skipped as already stored), warm-up, the timed phase."""
            clients = [Client(server.url, fx.token) for _ in range(args.clients)]
            run_ids = []
            for i, client in enumerate(clients):
                r = client.request(
                    "POST",
                    "/api/runs/",
                    orjson.dumps({"project": fx.project.id, "name": f"ingest-{n}-{i}", "kind": "external"}),
                    {"Content-Type": "application/json"},
                )
                if r.status != 201:
                    raise RuntimeError(f"creating run -> {r.status}: {r.body[:500]!r}")
                run_ids.append(r.json()["id"])

            # Warm-up (not measured, another key): each connection's worker imports the views.
            warm = orjson.dumps([{"key": "warmup", "step": s, "value": 0.0} for s in range(1000)])
            for client, run_id in zip(clients, run_ids, strict=True):
                for _ in range(3):
                    r = client.request(
                        "POST", f"/api/runs/{run_id}/metrics/", warm, {"Content-Type": "application/json"}
                    )
                    if r.status != 200:
                        raise RuntimeError(f"warm-up POST -> {r.status}: {r.body[:500]!r}")

            barrier = threading.Barrier(args.clients + 1)
            server_ms: list[list[float]] = [[] for _ in clients]
            wall_ms: list[list[float]] = [[] for _ in clients]
            written = [0] * args.clients
            errors: list[str] = []

            def client_loop(i: int) -> None:
                client, path = clients[i], f"/api/runs/{run_ids[i]}/metrics/"
                barrier.wait()
                try:
                    for body in bodies[i]:
                        r = client.request("POST", path, body, {"Content-Type": "application/json"})
                        if r.status != 200:
                            errors.append(f"client {i}: {r.status} {r.body[:300]!r}")
                            return
                        written[i] += r.json()["written"]
                        server_ms[i].append(r.server_ms)
                        wall_ms[i].append(r.wall_ms)
                except Exception as exc:
                    errors.append(f"client {i}: {exc!r}")

            threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
            for t in threads:
                t.start()
            with CpuWatch() as watch:
                barrier.wait()
                start = time.perf_counter()
                for t in threads:
                    t.join()
                elapsed = time.perf_counter() - start
            for c in clients:
                c.close()
            if errors:
                print("errors:\n  " + "\n  ".join(errors[:10]), file=sys.stderr)
                print(server.log_tail(), file=sys.stderr)

            mine = MetricSeries.objects.filter(run_id__in=run_ids, key__in=keys)
            stored = mine.aggregate(n=Sum("count"))["n"] or 0
            in_chunks = MetricChunk.objects.filter(series__in=mine).aggregate(n=Sum("n"))["n"] or 0
            acked = sum(written)
            print(
                f"attempt {n}: {acked:,} points acknowledged in {elapsed:.2f} s = {acked / elapsed:,.0f} points/s; "
                f"stored (MetricSeries.count): {stored:,} of {total:,} sent; in chunks: {in_chunks:,}; "
                f"other processes used {watch.others:.0%} of the CPUs",
                flush=True,
            )
            return {
                "elapsed": elapsed,
                "acked": acked,
                "rate": acked / elapsed,
                "stored": stored,
                "in_chunks": in_chunks,
                "errors": errors,
                "others": watch.others,
                "server_ms": [x for xs in server_ms for x in xs],
                "wall_ms": [x for xs in wall_ms for x in xs],
            }

        best = None
        for n in range(1, args.attempts + 1):
            got = attempt(n)
            if best is None or got["others"] < best["others"]:
                best = got
            if got["others"] < QUIET or n == args.attempts or wait_budget_left() <= 0:
                break
            wait_for_quiet()
        server_desc = server.description

    elapsed, acked, rate, stored, in_chunks, errors = (
        best[k] for k in ("elapsed", "acked", "rate", "stored", "in_chunks", "errors")
    )
    flat_server = best["server_ms"]
    ok = not errors and stored == total == in_chunks
    row = result(
        "1",
        f"POST /api/runs/{{id}}/metrics/, {args.clients} clients x {per_request:,}-point batches",
        round(rate),
        "points/s",
        TARGET_POINTS_PER_S,
        "higher",
        mlflow="~10,000 points/s (8 clients)",
        note=(
            f"{stored:,} of {total:,} points verified stored (sum of MetricSeries.count; chunks hold "
            f"{in_chunks:,}); {elapsed:.1f} s; server time per batch median "
            f"{summarize(flat_server).get('median')} ms; {server_desc}"
            + ("" if ok else f"; ERRORS: {len(errors)} client errors or missing points")
        ),
        clients=args.clients,
        keys=args.keys,
        points_per_request=per_request,
        requests=args.batches * args.clients,
        points_sent=total,
        points_acknowledged=acked,
        points_stored=stored,
        points_in_chunks=in_chunks,
        elapsed_s=round(elapsed, 3),
        server_ms_per_request=summarize(flat_server),
        wall_ms_per_request=summarize(best["wall_ms"]),
        others_cpu=best["others"],
        json_mib=round(mb, 1),
        server=server_desc,
        errors=errors[:10],
    )
    if not ok:
        row["passed"] = False  # points lost or requests failed: the rate does not count
    return [row]


if __name__ == "__main__":
    sys.exit(cli("orlab bench 1: metric ingestion through the API", run, configure))
