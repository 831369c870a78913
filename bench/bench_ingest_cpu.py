"""Issue 12's ingest budget in CPU, not wall-clock: the CPU time per point of the metric write path
(``webapp.runs.metric_store.metrics_record``) as it is now and as it was at ``--baseline`` (default
0891473, before the summaries), alternating, in one process on a throw-away database. CPU = this
process's CPU time plus its PostgreSQL backend's (from /proc), so the load of other processes on a
shared machine matters much less than it does for the wall-clock benches (bench_ingest_api,
bench_ingest_sink).

W1: the API bench's batches, 10 keys x 1,000 steps a call, 25 calls a run, 2 runs (the tail chunk
grows at every call). W2: the sink bench's flushes, 10 keys x 50,000 steps a call, 3 calls.

    .venv/bin/python -m bench.bench_ingest_cpu [--baseline 0891473] [--rounds 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("ORLAB_BENCH_DB", "orlab_bench_ingest_cpu")

from bench import common  # noqa: E402

KEYS = [f"k{j}" for j in range(10)]


def baseline_module(commit: str):
    """webapp/runs/metric_store.py of ``commit``, imported under another name (same models)."""
    source = subprocess.run(
        ["git", "show", f"{commit}:webapp/runs/metric_store.py"],
        cwd=common.ROOT,
        check=True,
        capture_output=True,
    ).stdout
    path = Path(tempfile.gettempdir()) / f"metric_store_{commit}.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(f"metric_store_{commit}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    with common.bench_database() as fx:
        from django.db import connection

        from webapp.runs import metric_store
        from webapp.runs.models import Run

        old = baseline_module(args.baseline)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]
        tick = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()
            return time.process_time() + (int(fields[11]) + int(fields[12])) / tick

        rng = np.random.default_rng(0)

        def new_run() -> int:
            return Run.objects.create(project=fx.project, name="ingest", kind="external", config={}).id

        def w1(store) -> float:
            points, c0 = 0, cpu()
            for _ in range(2):
                rid = new_run()
                for b in range(25):
                    steps = np.arange(b * 1000, (b + 1) * 1000)
                    cols = {
                        k: store.Columns.of(steps, rng.standard_normal(1000), 1.7e9 + steps) for k in KEYS
                    }
                    points += store.metrics_record(rid, cols)
            return (cpu() - c0) / points * 1e9

        def w2(store) -> float:
            rid, points, c0 = new_run(), 0, cpu()
            for b in range(3):
                steps = np.arange(b * 50_000, (b + 1) * 50_000)
                cols = {k: store.Columns.of(steps, rng.standard_normal(50_000), 1.7e9 + steps) for k in KEYS}
                points += store.metrics_record(rid, cols)
            return (cpu() - c0) / points * 1e9

        got: dict[str, dict[str, list[float]]] = {
            "now": {"W1": [], "W2": []},
            "baseline": {"W1": [], "W2": []},
        }
        for rnd in range(args.rounds):
            for label, store in (("now", metric_store), ("baseline", old)):
                a, b = w1(store), w2(store)
                got[label]["W1"].append(round(a))
                got[label]["W2"].append(round(b))
                print(
                    f"round {rnd} {label}: W1 {a:,.0f} ns/point, W2 {b:,.0f} ns/point; "
                    f"load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        for work in ("W1", "W2"):
            now, before = min(got["now"][work]), min(got["baseline"][work])
            rows.append(
                common.result(
                    "ingest-cpu",
                    f"{work}: CPU per point now / at {args.baseline} (best of {args.rounds})",
                    round(now / before, 2),
                    "x",
                    1.1,
                    "lower",
                    note=f"now {got['now'][work]} ns/point, baseline {got['baseline'][work]} ns/point",
                    now=got["now"][work],
                    baseline=got["baseline"][work],
                )
            )
    return rows


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", default="0891473", help="commit whose metric_store is the baseline")
    parser.add_argument("--rounds", type=int, default=2)


if __name__ == "__main__":
    sys.exit(
        common.cli("orlab bench: CPU per point of the metric write path, now vs a baseline", run, configure)
    )
