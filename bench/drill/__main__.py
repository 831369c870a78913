"""`make drill`: fault and hostile-input drill of a whole orlab deployment that it starts itself.

    .venv/bin/python -m bench.drill [--only sigkill,sigterm,db,broker,writers,import,uploads] [--out FILE] [--keep]

It starts its own PostgreSQL cluster and Redis server on free ports in a temporary directory (never
the machine's shared ones), gunicorn, four Celery workers (two training slots on `cpu`, one for
`control`'s housekeeping, one for `short` and `eval`) and beat, runs the scenarios and prints a table of figures.
It measures and never asserts: a missing feature shows as its figure. About 10 minutes."""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime

from bench.drill.cluster import ROOT, Cluster
from bench.drill.measure import markdown_table
from bench.drill.scenarios import Drill

WORKERS = {
    "train1": ["-Q", "cpu", "--concurrency=1"],
    "train2": ["-Q", "cpu", "--concurrency=1"],
    "control": ["-Q", "control", "--concurrency=1"],  # housekeeping: a light worker of its own
    "short": ["-Q", "short,eval", "--concurrency=1"],
}
SCENARIOS = {
    "sigkill": Drill.worker_sigkill,
    "sigterm": Drill.worker_sigterm,
    "db": Drill.database_restart,
    "broker": Drill.broker_restart,
    "writers": Drill.concurrent_writers,
    "import": Drill.import_worker_sigkill,
    "uploads": Drill.hostile_uploads,
}


def machine() -> str:
    cpus = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.read().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        mem = 0.0
    return f"{cpus} CPUs, {mem:.1f} GiB, {platform.platform()}, Python {platform.python_version()}, code: {code()}"


def code() -> str:
    """Which code ran: the checkout's HEAD and how many tracked files differ from it, or
    ORLAB_DRILL_CODE (set it when running from an export of a commit, which has no .git)."""
    import os

    if os.environ.get("ORLAB_DRILL_CODE"):
        return os.environ["ORLAB_DRILL_CODE"]
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    if not head:
        return "not a git checkout"
    dirty = subprocess.run([*git, "status", "--porcelain", "-uno"], capture_output=True, text=True).stdout
    changed = len(dirty.splitlines())
    return f"HEAD {head}" + (f" + {changed} uncommitted files" if changed else "")


def report(drill: Drill, started: datetime, elapsed: float) -> str:
    head = ["scenario", "figure", "points lost / duplicated", "samples lost / duplicated",
            "evaluations lost / duplicated", "stuck after", "notes"]  # fmt: skip
    rows = [[r["scenario"], r["figure"], r["points"], r["samples"], r["evaluations"], r["stuck"], r["notes"]]
            for r in drill.rows]  # fmt: skip
    up_head = [
        "upload",
        "bytes",
        "HTTP",
        "dataset",
        "handled in (s)",
        "peak RSS above idle (MB)",
        "process",
        "notes",
    ]
    up_rows = [[u["file"], f"{u['bytes']:,}", u["http"], u["dataset"], u["seconds"], u["peak_mb"], u["process"], u["notes"]]
               for u in drill.uploads]  # fmt: skip
    parts = [
        f"drill of {started:%Y-%m-%d %H:%M} UTC, {elapsed / 60:.1f} min; {machine()}",
        "",
        markdown_table(head, rows),
    ]
    if up_rows:
        parts += ["", markdown_table(up_head, up_rows)]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.drill", description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated: " + ",".join(SCENARIOS))
    ap.add_argument("--out", help="also write the table (markdown) to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs) afterwards")
    args = ap.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(unknown)}")
    started, t0 = datetime.now(UTC), time.monotonic()
    cluster = Cluster(WORKERS)
    drill = Drill(cluster)
    print(f"drill: deployment in {cluster.dir} (postgres :{cluster.pg_port}, redis :{cluster.redis_port}, "
          f"web :{cluster.web_port})", flush=True)  # fmt: skip
    try:
        drill.setup()
        for name in chosen:
            print(f"drill: {name} ...", flush=True)
            try:
                SCENARIOS[name](drill)
            except Exception as exc:  # a scenario that breaks is a figure too, and the others still run
                traceback.print_exc()
                drill.record(name, f"drill error: {type(exc).__name__}: {exc}"[:200])
        # the housekeeping may still be ending what a scenario left (an import whose process died); 60 s
        waited, left = drill.wait_unstuck(60)
        drill.record("end of drill: objects left", f"{len(left)} stuck after {waited:.0f} s", stuck=left)
    finally:
        cluster.close(keep=args.keep)
        if args.keep:
            print(f"drill: logs kept in {cluster.dir}/logs", flush=True)
    text = report(drill, started, time.monotonic() - t0)
    print("\n" + text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
