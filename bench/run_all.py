"""`make bench`: every benchmark, one after the other, each in its own process (its own throw-away
database, its own gunicorn), then one table and bench/results.json.

    python -m bench.run_all [--only bench_read_metrics ...] [--strict] [--no-wait]

Exit status: 1 when a script crashed (or, with --strict, when a target was missed), else 0.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import PY, ROOT, fmt_goal, fmt_pass, fmt_value, machine_info, print_machine, print_table

SCRIPTS = [
    "bench_ingest_api", "bench_ingest_sink", "bench_read_metrics", "bench_runs_list", "bench_rl_step",
    "bench_import", "bench_pair_search",
]  # fmt: skip
# bench_mlflow_api is run on its own (python -m bench.bench_mlflow_api): it needs MLflow's server in a
# venv of its own (see its docstring), which `make bench` does not install.
RESULTS = Path(__file__).resolve().parent / "results.json"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", nargs="*", choices=SCRIPTS, help="run only these scripts")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    info = machine_info()
    print_machine(info)
    rows: list[dict] = []
    runs: dict[str, dict] = {}
    crashed = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="orlab-bench-") as tmp:
        for name in args.only or SCRIPTS:
            out = Path(tmp) / f"{name}.json"
            cmd = [PY, "-m", f"bench.{name}", "--json", str(out)] + (["--no-wait"] if args.no_wait else [])
            print(f"\n$ {' '.join(cmd[1:3])}", flush=True)
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, cwd=ROOT)
            try:
                rc = proc.wait()
            except KeyboardInterrupt:  # the script got the Ctrl-C too: let it clean up
                proc.wait(timeout=120)
                raise
            except BaseException:  # SIGTERM: pass it on, the script stops gunicorn, drops its database
                proc.terminate()
                proc.wait(timeout=120)
                raise
            took = round(time.perf_counter() - t0, 1)
            if rc != 0 or not out.exists():
                crashed.append(name)
                runs[name] = {"returncode": rc, "seconds": took}
                continue
            data = json.loads(out.read_text())
            runs[name] = {
                "returncode": rc,
                "seconds": took,
                "cpu_busy_before": data["machine"].get("cpu_busy_before"),
                "loadavg_before": data["machine"].get("loadavg_before"),
                "loadavg_after": data["machine"].get("loadavg_after"),
            }
            for row in data["results"]:
                row["script"] = name
                rows.append(row)

    print(f"\n== orlab benchmarks: all results ({time.perf_counter() - started:.0f} s) ==")
    print_machine(info)
    print_table(rows)
    if crashed:
        print(f"CRASHED: {', '.join(crashed)} (see the output above)")
    args.out.write_text(
        json.dumps(
            {
                "machine": info,
                "scripts": runs,
                "results": rows,
                "table": [
                    {
                        "target": r["target"],
                        "benchmark": r["name"],
                        "measured": fmt_value(r["measured"], r["unit"]),
                        "goal": fmt_goal(r),
                        "pass": fmt_pass(r),
                        "mlflow": r["mlflow"],
                    }
                    for r in rows
                ],
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    print(f"wrote {args.out}")
    missed = [r for r in rows if r["passed"] is False]
    return 1 if crashed or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
