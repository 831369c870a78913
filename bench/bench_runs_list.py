"""Target 5: the runs list with 1,000 runs.

* API:  GET /api/runs/?page_size=1000             (token auth)
* HTML: GET /projects/<id>/?page_size=1000        (session of a logged-in user; webapp/ui)

Seeding: 1,000 runs of the trainer kinds (synthetic / tabular, so the list shows their primary
metrics' last values) and a few external ones, with realistic configs, tags, groups, summaries and
mixed statuses, inserted with bulk_create; then 3 metric series of 200 points per run through
metrics_record (the lists read MetricSeries.last_* only, never the points). Server time =
Server-Timing header; medians of ``--repeat`` requests after ``--warmup`` unmeasured ones. When the
HTML page does not exist yet (404), it is reported as not measured.

    python -m bench.bench_runs_list [--runs 1000]
    python -m bench.bench_runs_list --runs 10000 --points 20 --first-page-only

--first-page-only measures issue 12's runs-table goal instead: the first page of 50 (the default page
size, default columns and sort) through the page (``/projects/<id>/``), ``/api/runs/?page_size=50``
and ``/api/runs/table/``, target 150 ms each (rows 12t-page, 12t-api, 12t-table).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import timedelta

import numpy as np

from bench.common import (
    Client,
    ReadmeServer,
    Server,
    bench_database,
    breakdown_get,
    cli,
    profile_get,
    result,
    session_cookie,
    timed_requests,
)

TARGET_MS = 200.0

_GARNET = {"kind": "garnet", "states": 20, "actions": 5, "branching": 3, "seed": 0, "gamma": 0.9}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--points", type=int, default=200, help="points per metric series")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--profile", action="store_true", help="also print cProfile of both requests")
    parser.add_argument(
        "--first-page-only", action="store_true", help="issue 12: the first page of 50 (page, API, table API)"
    )


def seed(fx, n_runs: int, points: int) -> list[int]:
    from django.utils import timezone

    from webapp.runs.metric_store import Columns, metrics_record
    from webapp.runs.models import Run

    S = Run.Status
    statuses = [S.SUCCEEDED] * 6 + [S.FAILED, S.CANCELLED, S.RUNNING, S.QUEUED]
    now = timezone.now()
    runs = []
    for i in range(n_runs):
        status = statuses[i % len(statuses)]
        started = None if status == S.QUEUED else now - timedelta(minutes=30 + i)
        finished = started + timedelta(minutes=20) if status not in (S.QUEUED, S.RUNNING) else None
        if i % 20 == 19:
            kind, config, summary = Run.EXTERNAL, {"lr": 3e-4, "model": "qwen-0.5b", "batch": 64}, {}
            status, finished = S.RUNNING, None
            started = now - timedelta(minutes=5)
        elif i % 2:
            kind = "synthetic"
            config = {"steps": 20_000, "keys": 4, "sleep_per_step": 0.01, "checkpoint_every": 1000, "seed": i}
            summary = {"final_loss": 0.01 * (i % 97), "steps": 20_000}
        else:
            kind = "tabular"
            config = {
                "method": "softmax_npg",
                "step_size": [0.1, 1.0, 10.0][i % 3],
                "iterations": 300,
                "mdp": dict(_GARNET, seed=i % 7),
            }
            summary = {"gap": 1e-3 * (i % 13), "iterations": 300}
        runs.append(
            Run(
                project=fx.project,
                name=f"{kind} run {i:04d}",
                kind=kind,
                config=config,
                status=status,
                queue="" if kind == Run.EXTERNAL else "cpu",
                group=f"sweep-{i // 50:02d}",
                tags=["bench", f"seed-{i % 5}"],
                attempt=1,
                worker_host="" if status == S.QUEUED or kind == Run.EXTERNAL else "worker-1",
                # running runs keep a fresh heartbeat so runs_mark_lost() finds nothing to do
                heartbeat_at=now + timedelta(hours=1) if status == S.RUNNING else started,
                started_at=started,
                finished_at=finished,
                error="RuntimeError: diverged" if status == S.FAILED else "",
                code_version="0123456789ab",
                summary=summary,
                created_by=fx.user,
            )
        )
    Run.objects.bulk_create(runs, batch_size=500)
    ids = list(Run.objects.filter(project=fx.project).values_list("id", flat=True))

    keys_by_kind = {
        "synthetic": ("train/loss", "train/reward", "eval/accuracy"),
        "tabular": ("gap", "entropy", "value"),
        Run.EXTERNAL: ("train/loss", "lr", "grad_norm"),
    }
    steps = np.arange(points, dtype=np.int64)
    walls = 1.7e9 + steps.astype(np.float64)
    rng = np.random.default_rng(0)
    for run in Run.objects.filter(project=fx.project).only("id", "kind"):
        metrics_record(
            run.id,
            {k: Columns.of(steps, rng.standard_normal(points), walls) for k in keys_by_kind[run.kind]},
        )
    return ids


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    with bench_database() as fx:
        from webapp.runs.models import MetricSeries

        t0 = time.perf_counter()
        ids = seed(fx, args.runs, args.points)
        print(
            f"seeded {len(ids):,} runs and {MetricSeries.objects.count():,} metric series in "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
        cookie = session_cookie(fx.user)
        if args.first_page_only:
            return first_page_rows(args, fx, ids, cookie)

        with Server() as server:
            api = Client(server.url, fx.token)
            path = f"/api/runs/?page_size={args.runs}"

            def check_api(resp) -> None:
                data = resp.json()
                if data["count"] != len(ids) or len(data["results"]) != min(args.runs, 1000):
                    raise RuntimeError(f"API list: count {data['count']}, {len(data['results'])} results")

            m = timed_requests(api, path, warmup=args.warmup, repeat=args.repeat, check=check_api)
            print(f"api: {m}", flush=True)
            rows.append(
                result(
                    "5a",
                    f"GET /api/runs/?page_size={args.runs} ({len(ids):,} runs)",
                    m["server_ms"]["median"],
                    "ms",
                    TARGET_MS,
                    "lower",
                    mlflow="-",
                    note=f"server time median of {m['requests']} after {m['warmup']} warm-up; client wall median "
                    f"{m['wall_ms']['median']} ms; p90 server {m['server_ms']['p90']} ms; "
                    f"{m['response_bytes']:,} bytes",
                    path=path,
                    **m,
                )
            )
            api.close()

            html = Client(server.url, cookie=cookie)
            path = f"/projects/{fx.project.id}/?page_size={args.runs}"
            probe = html.request("GET", path)
            name = f"GET {path.replace(str(fx.project.id), '<id>', 1)} (HTML, {len(ids):,} runs)"
            if probe.status == 404:
                rows.append(
                    result(
                        "5b",
                        name,
                        None,
                        "ms",
                        TARGET_MS,
                        "lower",
                        note="not yet measured: the HTML runs list page answers 404 (webapp/ui not there yet)",
                    )
                )
            elif probe.status != 200:
                raise RuntimeError(f"GET {path} -> {probe.status}: {probe.body[:500]!r}\n{server.log_tail()}")
            else:
                shown: set[str] = set()

                def check_html(resp) -> None:
                    shown.update(re.findall(rb'href="/runs/(\d+)/"', resp.body))

                m = timed_requests(html, path, warmup=args.warmup, repeat=args.repeat, check=check_html)
                print(f"html: {m}; {len(shown)} distinct run links", flush=True)
                rows.append(
                    result(
                        "5b",
                        name,
                        m["server_ms"]["median"],
                        "ms",
                        TARGET_MS,
                        "lower",
                        mlflow="-",
                        note=f"server time median of {m['requests']} after {m['warmup']} warm-up; client wall "
                        f"median {m['wall_ms']['median']} ms; p90 server {m['server_ms']['p90']} ms; "
                        f"{m['response_bytes']:,} bytes; {len(shown)} distinct runs linked",
                        path=path,
                        runs_linked=len(shown),
                        **m,
                    )
                )
            html.close()

        if args.profile:
            api_path = f"/api/runs/?page_size={args.runs}"
            print(f"breakdown of GET {api_path}: {breakdown_get(api_path, token=fx.token)}")
            print(profile_get(api_path, token=fx.token))
            if probe.status == 200:
                print(f"breakdown of GET {path}: {breakdown_get(path, user=fx.user)}")
                print(profile_get(path, user=fx.user))
    return rows


FIRST_PAGE_TARGET_MS = 150.0


def first_page_rows(args: argparse.Namespace, fx, ids: list[int], cookie) -> list[dict]:
    """Issue 12: the first page of 50 with the default columns and sort, three ways."""
    rows = []
    with ReadmeServer() as server:  # the goal is stated for the README's own server command
        checks = {
            "12t-api": ("/api/runs/?page_size=50", "token"),
            "12t-table": ("/api/runs/table/", "token"),
            "12t-page": (f"/projects/{fx.project.id}/", "cookie"),
        }
        for row_id, (path, auth) in checks.items():
            client = Client(server.url, fx.token) if auth == "token" else Client(server.url, cookie=cookie)

            def check(resp, path=path) -> None:
                if resp.status != 200:
                    raise RuntimeError(f"GET {path} -> {resp.status}: {resp.body[:300]!r}")
                if path.startswith("/projects/"):
                    shown = set(re.findall(rb'href="/runs/(\d+)/"', resp.body))
                    if len(shown) < 50:
                        raise RuntimeError(f"the page links {len(shown)} runs, not 50")
                else:
                    data = resp.json()
                    results = data.get("results", data.get("rows", []))
                    if len(results) != 50:
                        raise RuntimeError(f"{path}: {len(results)} results, not 50")

            cold = client.request("GET", path)  # the first request of this path on a fresh server
            m = timed_requests(client, path, warmup=args.warmup, repeat=args.repeat, check=check)
            print(f"{row_id}: {m}", flush=True)
            rows.append(
                result(
                    row_id,
                    f"GET {path.replace(str(fx.project.id), '<id>', 1)} first page of 50 ({len(ids):,} runs)",
                    m["server_ms"]["median"],
                    "ms",
                    FIRST_PAGE_TARGET_MS,
                    "lower",
                    mlflow="-",
                    note=f"server time median of {m['requests']} after {m['warmup']} warm-up; p90 "
                    f"{m['server_ms']['p90']} ms; client wall median {m['wall_ms']['median']} ms; first "
                    f"(cold) request {cold.server_ms} ms server; {m['response_bytes']:,} bytes",
                    path=path,
                    **m,
                )
            )
            client.close()
    return rows


if __name__ == "__main__":
    sys.exit(cli("orlab bench 5: runs list with 1,000 runs", run, configure))
