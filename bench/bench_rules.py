"""Issue 15 speed: health rules on ingest. 10,000 rules (threshold and z-score, half each) over 1,000
live external runs, on bench_ingest_api's workload (its server, its pre-encoded batches of
``--keys`` keys x steps, 8 keep-alive clients posting as fast as the server answers).

Measured, on the same server and the same runs:

* server CPU seconds (gunicorn's processes + the bench database's PostgreSQL backends, sampled from
  /proc) for the same batches without rules, with the 10,000 rules, and without again (drift check);
  goal: with rules <= 10 % more than without;
* the time from a point's commit to its event row: while the clients post, a probe posts a batch
  with a value every rule of its run flags, every 0.5 s, to a run of its own; the event row's
  ``created_at`` minus the time the probe sent the batch (an upper bound: the commit is later than
  the send) and whether the row exists when the response arrives; goal <= 5 s.

    python -m bench.bench_rules [--runs 1000] [--rules 10000] [--clients 8] [--batch 10000] [--batches 25]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
import threading
import time

import numpy as np
import orjson

from bench.bench_ingest_api import make_bodies
from bench.common import (
    _PG_PIDS_SQL,
    DB_NAME,
    Client,
    CpuWatch,
    ReadmeServer,
    Server,
    _descendants,
    _proc_jiffies,
    bench_database,
    cli,
    result,
    summarize,
)

TICKS = os.sysconf("SC_CLK_TCK")


class ServerCpu(CpuWatch):
    """CPU seconds of the server only: gunicorn's process tree and the bench database's backends."""

    def __init__(self, server_pid: int, interval: float = 0.25):
        super().__init__(interval)
        self.server_pid = server_pid

    def _sample(self, conn) -> None:
        pids = _descendants(self.server_pid)
        if conn is not None:
            with contextlib.suppress(Exception):
                pids |= {r[0] for r in conn.execute(_PG_PIDS_SQL, [DB_NAME]).fetchall()}
        for pid in pids | set(self.last):
            j = _proc_jiffies(pid)
            if j == 0 and pid in self.last:
                continue
            self.first.setdefault(pid, j if not self.started else 0)
            self.last[pid] = j

    @property
    def seconds(self) -> float:
        return sum(max(0, self.last[p] - self.first.get(p, 0)) for p in self.last) / TICKS


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=1000, help="live external runs")
    parser.add_argument("--rules", type=int, default=10_000, help="rules (one-run rules, spread evenly)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--batch", type=int, default=10_000, help="points per request")
    parser.add_argument("--batches", type=int, default=25, help="requests per client and phase")
    parser.add_argument("--keys", type=int, default=10, help="metric keys per step")
    parser.add_argument(
        "--rounds", type=int, default=2, help="with / without rounds after the first baseline"
    )
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--readme-server",
        action="store_true",
        help="serve with the README's command (gunicorn webapp.wsgi -w 4)",
    )
    parser.add_argument("--threads", type=int, default=None)
    # the default bounds fire on about half the batches (1,000 standard-normal points a key a batch
    # cross 3.5 with probability ~0.2 per rule); --threshold 6 --z 8 is alerting that rarely fires
    parser.add_argument("--threshold", type=float, default=3.5, help="threshold rules fire above this")
    parser.add_argument("--z", type=float, default=4.5, help="z-score rules fire beyond this")


def _create_runs(project, user, n: int) -> list[int]:
    from webapp.runs.models import Run

    Run.objects.bulk_create(
        [
            Run(project=project, name=f"live-{i}", kind="external", status="running", created_by=user)
            for i in range(n)
        ]
    )
    return list(Run.objects.filter(project=project).order_by("id").values_list("id", flat=True))


def _create_rules(
    project, user, run_ids: list[int], keys: list[str], n: int, threshold: float = 3.5, z: float = 4.5
) -> None:
    """``n`` rules, each on one run (as a team's per-run rules are) and one of the workload's keys;
    even ones threshold (|x| of a standard normal beyond 3.5: rare episodes), odd ones z-score."""
    from webapp.alerts.models import Rule
    from webapp.alerts.services import bump_version

    rules = []
    for i in range(n):
        run_id = run_ids[i % len(run_ids)]
        key = keys[(i // len(run_ids)) % len(keys)]
        if i % 2 == 0:
            kind, params = "threshold", {"op": ">", "value": threshold}
        else:
            kind, params = "zscore", {"z": z, "direction": "both", "min_points": 20}
        rules.append(
            Rule(
                project=project,
                name=f"r{i}",
                kind=kind,
                key=key,
                params=params,
                run_id=run_id,
                created_by=user,
            )  # fmt: skip
        )
    Rule.objects.bulk_create(rules, batch_size=2000)
    bump_version(project.id)


def run(args: argparse.Namespace) -> list[dict]:
    keys = [f"train/metric_{j:02d}" for j in range(args.keys)]
    per_request = args.batch // args.keys * args.keys
    steps_per_request = per_request // args.keys
    requests = args.clients * args.batches

    server_ = ReadmeServer() if args.readme_server else Server(args.workers, args.threads)
    with bench_database() as fx, server_ as server:
        from webapp.alerts.models import Event, Rule

        run_ids = _create_runs(fx.project, fx.user, args.runs)
        probe_runs = _create_runs_probe(fx)
        next_step = dict.fromkeys(run_ids, 0)
        cursor = [0]
        probe_step = [0]

        def phase(name: str, probe: bool) -> dict:
            """Every client posts ``args.batches`` batches, each to the next run in turn (its next
            steps), as fast as the server answers."""
            plan: list[list[tuple[int, int]]] = [[] for _ in range(args.clients)]
            for r in range(requests):
                run_id = run_ids[cursor[0] % len(run_ids)]
                cursor[0] += 1
                plan[r % args.clients].append((run_id, next_step[run_id]))
                next_step[run_id] += steps_per_request
            seed = cursor[0]
            bodies = [
                [
                    _shift(body, first)
                    for body, (_, first) in zip(
                        make_bodies(seed + c, keys, len(plan[c]), per_request), plan[c], strict=True
                    )
                ]
                for c in range(args.clients)
            ]
            clients = [Client(server.url, fx.token) for _ in range(args.clients)]
            errors: list[str] = []
            stop = threading.Event()
            probes: list[dict] = []

            def client_loop(c: int) -> None:
                try:
                    for (run_id, _), body in zip(plan[c], bodies[c], strict=True):
                        r = clients[c].request(
                            "POST", f"/api/runs/{run_id}/metrics/", body, {"Content-Type": "application/json"}
                        )
                        if r.status != 200:
                            errors.append(f"{r.status} {r.body[:200]!r}")
                            return
                except Exception as exc:
                    errors.append(repr(exc))

            def probe_loop() -> None:
                client = Client(server.url, fx.token)
                while not stop.wait(0.5):
                    step = probe_step[0]  # new steps in every phase: one event row per probe
                    run_id = probe_runs[len(probes) % len(probe_runs)]
                    body = orjson.dumps(
                        [
                            {"key": keys[0], "step": step, "value": 0.0},
                            {"key": keys[0], "step": step + 1, "value": 100.0},
                        ]
                    )
                    sent = dt.datetime.now(dt.UTC)
                    r = client.request(
                        "POST", f"/api/runs/{run_id}/metrics/", body, {"Content-Type": "application/json"}
                    )
                    answered = dt.datetime.now(dt.UTC)
                    if r.status == 200:
                        probes.append({"run": run_id, "step": step + 1, "sent": sent, "answered": answered})
                    probe_step[0] += 2
                client.close()

            threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(args.clients)]
            # the probe posts in every measured phase (its requests cost the server CPU too), its
            # latency is read only where the rules are on
            prober = threading.Thread(target=probe_loop) if name != "warm-up" else None
            with ServerCpu(server.proc.pid) as cpu:
                start = time.perf_counter()
                for t in threads:
                    t.start()
                if prober:
                    prober.start()
                for t in threads:
                    t.join()
                stop.set()
                if prober:
                    prober.join()
                elapsed = time.perf_counter() - start
            for c in clients:
                c.close()
            out = {
                "name": name, "elapsed": elapsed, "cpu_s": cpu.seconds, "others": cpu.others,
                "errors": errors, "points": requests * per_request,
            }  # fmt: skip
            if probe:
                lat, late = [], 0
                for p in probes:
                    row = (
                        Event.objects.filter(run_id=p["run"], step=p["step"])
                        .values_list("created_at", flat=True)
                        .first()
                    )
                    if row is None:
                        late += 1
                        continue
                    lat.append((row - p["sent"]).total_seconds())
                    if row > p["answered"]:
                        late += 1
                out.update(probe_latency_s=lat, probes=len(probes), probes_without_event_at_answer=late)
            print(
                f"{name}: {out['points']:,} points in {elapsed:.1f} s, server CPU {cpu.seconds:.1f} s, "
                f"other processes (the bench's clients included) {cpu.others:.0%}, errors {len(errors)}"
                + (f", probes {len(probes)}, latency {summarize(out['probe_latency_s'])}" if probe else ""),
                flush=True,
            )
            return out

        phase("warm-up", probe=False)  # each worker imports the views and caches its runs
        without = [phase("without rules", probe=False)]
        t0 = time.perf_counter()
        _create_rules(fx.project, fx.user, run_ids, keys, args.rules, args.threshold, args.z)
        _create_probe_rules(fx, probe_runs, keys[0])
        print(f"{Rule.objects.count():,} rules created in {time.perf_counter() - t0:.1f} s", flush=True)
        time.sleep(3)  # past ORLAB_ALERT_RULES_TTL: every process sees the new version
        phase("with rules (warm-up: processes compile them)", probe=False)
        with_rules = []
        pairs: list[tuple[float, float]] = []  # (with, without) CPU of each round, measured back to back
        enabled = True
        # Rounds in ABBA order (with, without | without, with | ...): the server's CPU a phase drifts
        # during a run (every run's tail chunk grows, the shared machine's load moves), and always
        # measuring "without" second would hand the drift to one side; over two rounds it cancels.
        for n in range(args.rounds):
            order = ("with", "without") if n % 2 == 0 else ("without", "with")
            got = {}
            for kind in order:
                if (kind == "with") != enabled:
                    enabled = kind == "with"
                    _set_enabled(fx.project, enabled)
                    if enabled:
                        # not measured: each process compiles the 10,000 rules once after a change
                        # (a one-off per rule change, not a cost of ingest), as in the first warm-up
                        phase("with rules (warm-up after re-enabling)", probe=False)
                if kind == "with":
                    got[kind] = phase(f"with rules, round {n + 1}", probe=True)
                    with_rules.append(got[kind])
                else:
                    got[kind] = phase(f"without rules (disabled), round {n + 1}", probe=False)
                    without.append(got[kind])
            pairs.append((got["with"]["cpu_s"], got["without"]["cpu_s"]))
        events = Event.objects.count()

    def median(xs):
        return float(np.median(xs))

    cpu_without = [p["cpu_s"] for p in without]
    cpu_with = [p["cpu_s"] for p in with_rules]
    # the goal's number: the median over rounds of with / without measured back to back (ABBA order);
    # median(with) / median(without) over all phases is reported beside it
    overhead = median([w / wo for w, wo in pairs]) - 1
    overhead_medians = median(cpu_with) / median(cpu_without) - 1
    lat = [x for p in with_rules for x in p["probe_latency_s"]]
    late = sum(p["probes_without_event_at_answer"] for p in with_rules)
    errors = [e for p in without + with_rules for e in p["errors"]]
    others = max(p["others"] for p in without + with_rules)
    note_common = (
        f"{args.rules:,} rules (threshold > {args.threshold:g}, |z| >= {args.z:g}) over {args.runs:,} runs, "
        f"{requests} batches of {per_request:,} points a phase ({args.clients} clients); {server.description}"
    )
    rows = [
        result(
            "15a",
            "health rules on ingest: server CPU with 10,000 rules vs none",
            round(overhead * 100, 1),
            "% more CPU",
            10,
            "lower",
            note=(
                f"median of the rounds' with/without ratios (ABBA order): "
                f"{', '.join(f'{w / wo - 1:+.1%}' for w, wo in pairs)}; median(with)/median(without) over every "
                f"phase {overhead_medians:+.1%}; server CPU s per phase: without (the first before any rule "
                f"existed) {', '.join(f'{x:.1f}' for x in cpu_without)}; "
                f"with {', '.join(f'{x:.1f}' for x in cpu_with)}; {events:,} events written; {note_common}"
                + (f"; ERRORS {len(errors)}" if errors else "")
            ),
            others_cpu=others,
            cpu_without_s=[round(x, 2) for x in cpu_without],
            cpu_with_s=[round(x, 2) for x in cpu_with],
            round_ratios=[round(w / wo, 4) for w, wo in pairs],
            overhead_of_medians=round(overhead_medians * 100, 1),
            events=events,
            errors=errors[:5],
        ),
        result(
            "15b",
            "health rules: a point's commit to its event row",
            round(max(lat), 3) if lat else None,
            "s",
            5,
            "lower",
            note=(
                f"max over {len(lat)} probes during the with-rules phase (median {summarize(lat).get('median')} "
                f"s; upper bound: time since the probe was sent); "
                f"{late} probes had no event row when answered"
            ),
            others_cpu=others,
            latency_s=summarize(lat),
        ),
    ]
    if errors:
        rows[0]["passed"] = False
    return rows


def _set_enabled(project, enabled: bool) -> None:
    from webapp.alerts.models import Rule
    from webapp.alerts.services import bump_version

    Rule.objects.filter(project=project).update(enabled=enabled)
    bump_version(project.id)
    time.sleep(3)  # past ORLAB_ALERT_RULES_TTL


def _shift(body: bytes, first: int) -> bytes:
    """make_bodies' batch b starts at step b x steps; re-base it on ``first``."""
    points = orjson.loads(body)
    lo = points[0]["step"]
    for p in points:
        p["step"] = p["step"] - lo + first
    return orjson.dumps(points)


def _create_runs_probe(fx) -> list[int]:
    from webapp.runs.models import Run

    runs = [
        Run.objects.create(
            project=fx.project, name=f"probe-{i}", kind="external", status="running", created_by=fx.user
        )
        for i in range(4)
    ]
    return [r.id for r in runs]


def _create_probe_rules(fx, probe_runs: list[int], key: str) -> None:
    from webapp.alerts.models import Rule
    from webapp.alerts.services import bump_version

    Rule.objects.bulk_create(
        [
            Rule(
                project=fx.project,
                name="probe",
                kind="threshold",
                key=key,
                params={"op": ">", "value": 50.0},
                run_id=run_id,
                created_by=fx.user,
            )  # fmt: skip
            for run_id in probe_runs
        ]
    )
    bump_version(fx.project.id)


if __name__ == "__main__":
    sys.exit(cli("orlab bench 15: health rules on ingest", run, configure))
