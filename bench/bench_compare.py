"""The compare page at scale: 20 runs x 10 metric keys x 100,000 points each (20 M points).

Target: the page's data renders in at most 1 s of server time. What the page requests, as
compare.js does it: the HTML (GET /compare/?runs=<20>&key=<k1>..&key=<k10>), then one
GET /api/compare/series/?runs=<20 ids>&keys=<k>&max_points=1500 per key (in parallel in the browser). The
measured number is the sum of the Server-Timing of the 10 data requests of one page load (they are
sent one after the other here, so they do not compete for the CPUs), median over ``--repeat`` page
loads after ``--warmup``. Also reported: the same with wall times (x axis by time), the 10 keys in a
single request, the same requests on the generic /api/compare/, the HTML page, a live poll, and the
browser-like wall time with 6 connections.

C1 and C2 are cold: the cache of downsampled series (webapp.runs.table.compare_cache_enabled) is
off, so every request reads its chunks; C1w is the same with the cache on (a second view of runs
that did not change).

Seeding goes straight through webapp.runs.metric_store.metrics_record, one 1,000,000-point batch
(10 keys x 100,000) per run, into a throw-away database (default ``orlab_bench_compare``, so it
never collides with the other bench scripts' ``orlab_bench``).

    python -m bench.bench_compare [--runs 20] [--keys 10] [--points 100000] [--profile]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ORLAB_BENCH_DB", "orlab_bench_compare")
os.environ.setdefault("ORLAB_BENCH_BROKER", "redis://127.0.0.1:6379/11")

from bench.common import (  # noqa: E402 (the database name above must be set first)
    Client,
    Server,
    bench_database,
    breakdown_get,
    cli,
    measure_quietly,
    profile_get,
    result,
    session_cookie,
    summarize,
    timed_requests,
)

TARGET_MS = 1000.0
MAX_POINTS = 1500  # what compare.js asks for (webapp.ui.compare_views.COMPARE_MAX_POINTS)
RESULTS = Path(__file__).resolve().parent / "compare_results.json"
SERIES_API = "/api/compare/series/"  # what compare.js fetches
GENERIC_API = "/api/compare/"  # metric_store.series_read, for comparison
KEYS = [
    "train/loss", "train/reward", "policy/entropy", "policy/kl", "policy/clip_frac",
    "optim/grad_norm", "optim/lr", "rollout/response_length", "rollout/tokens_seen", "eval/accuracy",
]  # fmt: skip


def curves(n: int, keys: list[str], seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """RL-looking series of n steps: noisy decays and rises, a few spikes, monotone counters."""
    rng = np.random.default_rng(seed)
    steps = np.arange(n, dtype=np.int64)
    t = steps / max(1, n)
    walls = 1.7e9 + seed * 86_400 + steps * 0.5 + np.cumsum(rng.exponential(0.01, n))
    out = {}
    for j, key in enumerate(keys):
        noise = rng.standard_normal(n)
        if "tokens" in key:
            values = np.cumsum(rng.integers(800, 1200, n)).astype(np.float64)
        elif "lr" in key:
            values = 1e-6 * np.minimum(1.0, 20 * t) * (1 - 0.9 * t)
        elif "entropy" in key:
            values = 1.2 * np.exp(-3 * t * (1 + seed % 3)) + 0.02 * noise
        elif "reward" in key or "accuracy" in key:
            values = 1 - np.exp(-4 * t) + 0.05 * noise
        else:
            values = np.exp(-5 * t) * (1 + j / 10) + 0.05 * noise
        values[rng.integers(0, n, size=max(1, n // 20_000))] += 5.0
        out[key] = (steps, values, walls)
    return out


def seed_runs(fx, n_runs: int, keys: list[str], points: int) -> list[int]:
    from django.utils import timezone

    from webapp.runs.metric_store import Columns, metrics_record
    from webapp.runs.models import Run

    ids = []
    t0 = time.perf_counter()
    for i in range(n_runs):
        now = timezone.now()
        run = Run.objects.create(
            project=fx.project, name=f"sweep-{i:02d}", kind=Run.EXTERNAL, status=Run.Status.SUCCEEDED,
            config={"lr": [1e-6, 3e-6][i % 2], "seed": i // 2, "entropy": {"target": 0.2}},
            group="bench", started_at=now, finished_at=now, created_by=fx.user,
        )  # fmt: skip
        batch = {k: Columns.of(*cols) for k, cols in curves(points, keys, i).items()}
        metrics_record(run.id, batch)
        ids.append(run.id)
        print(f"  run {i + 1}/{n_runs} seeded ({(i + 1) * len(keys) * points:,} points, "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    return ids


def data_paths(
    ids: list[int], keys: list[str], *, wall: bool = False, endpoint: str = SERIES_API
) -> list[str]:
    from urllib.parse import quote

    runs = ",".join(map(str, ids))
    extra = "&with_wall=1" if wall else ""
    return [f"{endpoint}?runs={runs}&keys={quote(k, safe=',')}&max_points={MAX_POINTS}{extra}" for k in keys]


def page_load(client: Client, paths: list[str], check: bool = False) -> tuple[float, float]:
    """(sum of the server times, sum of the client wall times) of one page's data requests."""
    server = wall = 0.0
    for path in paths:
        r = client.request("GET", path)
        if r.status != 200:
            raise RuntimeError(f"GET {path} -> {r.status}: {r.body[:300]!r}")
        if check:
            data = r.json()
            for per_run in data.values():
                for s in per_run.values():
                    if not 0 < len(s["steps"]) <= MAX_POINTS:
                        raise RuntimeError(f"bad series: {len(s['steps'])} points")
        server += r.server_ms
        wall += r.wall_ms
    return server, wall


def measure_loads(client: Client, paths: list[str], warmup: int, repeat: int, what: str) -> dict:
    page_load(client, paths, check=True)
    for _ in range(warmup):
        page_load(client, paths)

    def series():
        return [page_load(client, paths) for _ in range(repeat)]

    loads, others = measure_quietly(series, what=what)
    return {
        "server_ms": summarize([s for s, _ in loads]),
        "wall_ms": summarize([w for _, w in loads]),
        "requests_per_load": len(paths),
        "loads": repeat,
        "others_cpu": others,
    }


def measure_interleaved(client: Client, variants: dict[str, list[str]], warmup: int, repeat: int) -> dict:
    """Page loads of every variant in turn (round robin, the order rotating), so that a machine
    shared with others slows them alike and their numbers compare."""
    for paths in variants.values():
        page_load(client, paths, check=True)
        for _ in range(warmup):
            page_load(client, paths)
    names = list(variants)

    def rounds():
        out = {name: [] for name in names}
        for i in range(repeat):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                out[name].append(page_load(client, variants[name]))
        return out

    loads, others = measure_quietly(rounds, what="compare data, every variant in turn")
    return {
        name: {
            "server_ms": summarize([s for s, _ in loads[name]]),
            "wall_ms": summarize([w for _, w in loads[name]]),
            "requests_per_load": len(variants[name]),
            "loads": repeat,
            "others_cpu": others,
        }
        for name in names
    }


def parallel_wall(url: str, token: str, paths: list[str], repeat: int, connections: int = 6) -> dict:
    """Wall time of the data of one page load fetched like a browser does: ``connections`` at once."""

    def worker(todo: list[str], lock: threading.Lock) -> None:
        client = Client(url, token)
        while True:
            with lock:
                if not todo:
                    break
                path = todo.pop()
            r = client.request("GET", path)
            if r.status != 200:
                raise RuntimeError(f"GET {path} -> {r.status}")
        client.close()

    walls = []
    for _ in range(repeat):
        todo, lock = list(paths), threading.Lock()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(todo, lock)) for _ in range(connections)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        walls.append((time.perf_counter() - t0) * 1000)
    return summarize(walls)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument(
        "--profile", action="store_true", help="also print where the time of one request goes"
    )


def run(args: argparse.Namespace) -> list[dict]:
    keys = KEYS[: args.keys] + [f"extra/{i}" for i in range(max(0, args.keys - len(KEYS)))]
    rows = []
    with bench_database() as fx:
        from webapp.runs.models import MetricChunk

        t0 = time.perf_counter()
        ids = seed_runs(fx, args.runs, keys, args.points)
        total = args.runs * len(keys) * args.points
        print(f"seeded {args.runs} runs x {len(keys)} keys x {args.points:,} points = {total:,} points in "
              f"{time.perf_counter() - t0:.0f} s; {MetricChunk.objects.count():,} chunks", flush=True)  # fmt: skip
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
        cookie = session_cookie(fx.user)

        desc = f"{args.runs} runs x {len(keys)} keys x {args.points:,} points"
        # Cold numbers: the downsampled-series cache off, every request reads the chunks.
        os.environ["ORLAB_COMPARE_CACHE"] = "0"
        with Server() as server:
            client = Client(server.url, fx.token)

            variants = {
                "C1": data_paths(ids, keys),
                "C2": data_paths(ids, keys, wall=True),
                "C3": data_paths(ids, [",".join(keys)]),
                "C3b": data_paths(ids, keys, endpoint=GENERIC_API),
                "C3c": data_paths(ids, keys, wall=True, endpoint=GENERIC_API),
            }
            ms = measure_interleaved(client, variants, args.warmup, args.repeat)
            for name, m in ms.items():
                print(f"{name}: {m}", flush=True)
            m = ms["C1"]
            m["parallel_wall_ms"] = parallel_wall(
                server.url, fx.token, variants["C1"], max(3, args.repeat // 2)
            )
            rows.append(
                result(
                    "C1",
                    f"compare page data: {len(keys)} x GET {SERIES_API}?runs=<{args.runs}>&keys=<k>"
                    f"&max_points={MAX_POINTS}, {desc}",
                    m["server_ms"]["median"],
                    "ms",
                    TARGET_MS,
                    "lower",
                    note=f"sum of the server times of the {len(keys)} requests of a page load, median of "
                    f"{m['loads']} loads; p90 {m['server_ms']['p90']} ms; client wall (sequential) "
                    f"{m['wall_ms']['median']} ms; as a browser fetches them (6 connections) "
                    f"{m['parallel_wall_ms'].get('median')} ms wall",
                    paths=variants["C1"][:1],
                    **m,
                )  # fmt: skip
            )
            infos = {
                "C2": (f"same, with wall times (x axis by time), {desc}", TARGET_MS),
                "C3": (f"(info) the {len(keys)} keys in one request", None),
                "C3b": (f"(info) C1's requests on {GENERIC_API} (metric_store.series_read)", None),
                "C3c": (f"(info) C2's requests on {GENERIC_API} (metric_store.series_read)", None),
            }
            for name, (title, goal) in infos.items():
                m = ms[name]
                rows.append(
                    result(
                        name,
                        title,
                        m["server_ms"]["median"],
                        "ms",
                        goal,
                        "lower",
                        note=f"sum of the server times of {m['requests_per_load']} request(s) per load, median "
                        f"of {m['loads']} loads (interleaved with C1); p90 {m['server_ms']['p90']} ms",
                        **m,
                    )  # fmt: skip
                )

            html = Client(server.url, cookie=cookie)
            page = "/compare/?runs=" + ",".join(map(str, ids)) + "".join(f"&key={k}" for k in keys)
            m = timed_requests(html, page, warmup=2, repeat=args.repeat)
            rows.append(
                result(
                    "C4",
                    "(info) the compare page's HTML (config diff, labels, collapse rule on 20 runs)",
                    m["server_ms"]["median"],
                    "ms",
                    None,
                    "lower",
                    note=f"{m['response_bytes']:,} bytes",
                    **m,
                )  # fmt: skip
            )
            html.close()

            live = f"{SERIES_API}?runs=" + ",".join(map(str, ids)) + "&keys=" + ",".join(keys)
            live += f"&since_step={args.points - 5}"
            m = timed_requests(client, live, warmup=2, repeat=args.repeat)
            rows.append(
                result(
                    "C5",
                    "(info) a live poll: the 10 keys' new points since a step (5 per series)",
                    m["server_ms"]["median"],
                    "ms",
                    None,
                    "lower",
                    **m,
                )  # fmt: skip
            )
            client.close()

        # Warm numbers: the cache on (Django's default LocMemCache: per gunicorn worker).
        os.environ["ORLAB_COMPARE_CACHE"] = "1"
        with Server() as server:
            client = Client(server.url, fx.token)
            paths = data_paths(ids, keys)
            m = measure_loads(client, paths, 8, args.repeat, "compare data, cached")
            print(f"data (cached): {m}", flush=True)
            rows.append(
                result(
                    "C1w",
                    f"(info) C1 again with the downsampled series cached (warm), {desc}",
                    m["server_ms"]["median"],
                    "ms",
                    None,
                    "lower",
                    note=f"sum of {len(keys)} server times, median of {m['loads']} loads after 8 warm-up loads",
                    **m,
                )  # fmt: skip
            )
            client.close()
        os.environ["ORLAB_COMPARE_CACHE"] = "0"

        if args.profile:
            print(f"breakdown of GET {paths[0]}: {breakdown_get(paths[0], token=fx.token)}")
            print(profile_get(paths[0], token=fx.token, repeat=5, top=25))
    return rows


def main() -> int:
    if "--json" not in sys.argv[1:]:  # keep the numbers next to the script by default
        sys.argv += ["--json", str(RESULTS)]
    return cli("orlab bench: the compare page, 20 runs x 10 keys x 100k points", run, configure)


if __name__ == "__main__":
    sys.exit(main())
