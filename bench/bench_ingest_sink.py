"""Target 2: ingestion through the worker sink (workers.sinks.DbSink), in-process, on PostgreSQL.

A "trainer" loop calls ``sink.log(step, {10 keys})`` for ``--steps`` steps as fast as it can, then
``sink.close()``; the clock runs from the first ``log`` until ``close()`` returns (everything stored,
in the default ORLAB_SINK_FLUSH_INTERVAL rhythm of the background flusher). The metric dicts are
built before the clock starts, so the number is the sink and the store, not the dict building.
Repeated ``--repeat`` times on fresh runs; the median counts.

    python -m bench.bench_ingest_sink [--steps 500000] [--keys 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from bench.common import bench_database, cli, measure_quietly, result

TARGET_POINTS_PER_S = 200_000


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=500_000)
    parser.add_argument("--keys", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)


def run(args: argparse.Namespace) -> list[dict]:
    keys = [f"train/metric_{j:02d}" for j in range(args.keys)]
    rng = np.random.default_rng(0)
    values = rng.standard_normal((args.steps, args.keys)).tolist()
    rows = [dict(zip(keys, row, strict=True)) for row in values]
    del values
    total = args.steps * args.keys

    with bench_database() as fx:
        from django.conf import settings
        from django.db.models import Sum
        from django.utils import timezone

        from webapp.runs.models import MetricChunk, MetricSeries, Run
        from workers.sinks import DbSink

        def trial(rep: int) -> dict:
            now = timezone.now()
            run = Run.objects.create(
                project=fx.project,
                name=f"sink-{rep}",
                kind="synthetic",
                status=Run.Status.RUNNING,
                attempt=1,
                heartbeat_at=now,
                started_at=now,
                created_by=fx.user,
            )
            sink = DbSink(run.id, attempt=1)
            start = time.perf_counter()
            for step, metrics in enumerate(rows):
                sink.log(step, metrics)
            logged = time.perf_counter()
            sink.close()
            done = time.perf_counter()
            stored = MetricSeries.objects.filter(run=run).aggregate(n=Sum("count"))["n"] or 0
            in_chunks = MetricChunk.objects.filter(series__run=run).aggregate(n=Sum("n"))["n"] or 0
            return {
                "elapsed_s": round(done - start, 3),
                "log_loop_s": round(logged - start, 3),
                "close_s": round(done - logged, 3),
                "points_per_s": round(total / (done - start)),
                "stored": stored,
                "in_chunks": in_chunks,
            }

        trials = []
        for rep in range(args.repeat):
            t, others = measure_quietly(lambda rep=rep: trial(rep), what=f"trial {rep + 1}")
            t["others_cpu"] = others
            trials.append(t)
            print(
                f"trial {rep + 1}: {total:,} points in {t['elapsed_s']:.2f} s = {t['points_per_s']:,} "
                f"points/s (log loop {t['log_loop_s']:.2f} s, close() {t['close_s']:.2f} s); "
                f"stored {t['stored']:,}, in chunks {t['in_chunks']:,}",
                flush=True,
            )
        interval = settings.ORLAB_SINK_FLUSH_INTERVAL

    rate = statistics.median(t["points_per_s"] for t in trials)
    ok = all(t["stored"] == total == t["in_chunks"] for t in trials)
    row = result(
        "2",
        f"DbSink.log() x {args.steps:,} steps x {args.keys} keys, then close()",
        round(rate),
        "points/s",
        TARGET_POINTS_PER_S,
        "higher",
        mlflow="-",
        note=(
            f"median of {len(trials)} trials of {total:,} points each: "
            + ", ".join(f"{t['points_per_s']:,}" for t in trials)
            + f" points/s; every point verified stored: {ok}; flush interval {interval} s; other processes "
            f"used {max(t['others_cpu'] for t in trials):.0%} of the CPUs at most"
        ),
        steps=args.steps,
        keys=args.keys,
        points_per_trial=total,
        flush_interval_s=interval,
        trials=trials,
    )
    if not ok:
        row["passed"] = False
    return [row]


if __name__ == "__main__":
    sys.exit(cli("orlab bench 2: metric ingestion through the worker sink", run, configure))
