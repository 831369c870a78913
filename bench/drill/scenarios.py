"""The drill's scenarios. Each measures and returns a row of figures; none asserts: a feature that is
missing shows up as a figure ("stayed running > 75 s"), never as a crash of the drill."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from bench.drill.cluster import Cluster
from bench.drill.measure import PeakWatch, Tally, process_tree, sample_identity, synthetic_expected, tally

ENDED = {"succeeded", "failed", "cancelled", "lost", "interrupted"}
RESUMABLE = {"failed", "cancelled", "lost", "interrupted"}
# A synthetic run that logs 4 keys, 2 samples every 5 steps and an evaluation every 25 steps, 20
# steps a second, with a checkpoint every 50 steps (what a resume continues from).
RUN = {"keys": 4, "sleep_per_step": 0.05, "checkpoint_every": 50, "samples_every": 5, "evaluate_every": 25}
FILLER = {"keys": 1, "steps": 1_000_000, "sleep_per_step": 0.1}  # keeps a training slot busy until cancelled


def db(fn: Callable, tries: int = 60):
    """Run an ORM read, reconnecting while the database restarts."""
    from django.db import DatabaseError, connection

    for i in range(tries):
        try:
            return fn()
        except DatabaseError:
            connection.close()
            if i == tries - 1:
                raise
            time.sleep(1)
    return None


class Drill:
    def __init__(self, cluster: Cluster):
        self.c = cluster
        self.http = requests.Session()
        self.rows: list[dict] = []
        self.uploads: list[dict] = []
        self.watched_runs: set[int] = set()

    # --- setup ------------------------------------------------------------------------------------
    def setup(self) -> None:
        import os

        c = self.c
        c.start_postgres()
        c.create_database()
        c.start_redis()
        c.manage("migrate", "--no-input", "-v", "0")
        os.environ.update(c.env)
        import django

        django.setup()
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        from webapp.projects.services import project_create

        user = get_user_model().objects.create_user("drill", password="drill-password")
        self.project = project_create(user=user, name="drill").id
        self.http.headers["Authorization"] = f"Token {Token.objects.create(user=user).key}"
        c.start_web()
        for name in c.worker_specs:
            c.start_worker(name)
        c.start_beat()
        self._wait_workers()

    def _wait_workers(self, timeout: float = 90) -> None:
        from workers.celery import app

        deadline = time.monotonic() + timeout
        want = {f"{n}@drill" for n in self.c.worker_specs}
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=1.0) or []
            if want <= {name for r in replies for name in r}:
                return
            time.sleep(1)
        raise RuntimeError(f"workers did not come up: {self.c.log_tail('train1')}")

    # --- API and database helpers -----------------------------------------------------------------
    def api(self, method: str, path: str, **kw) -> requests.Response | None:
        try:
            return self.http.request(method, self.c.url + path, timeout=kw.pop("timeout", 60), **kw)
        except requests.RequestException:
            return None

    def launch(self, name: str, **config) -> tuple[int | None, int | None]:
        """(HTTP status, run id) of a synthetic run; the id is looked up by name when the answer had none."""
        r = self.api("POST", "/api/runs/", json={"project": self.project, "kind": "synthetic", "name": name,
                                                  "config": config})  # fmt: skip
        code = r.status_code if r is not None else None
        run_id = r.json().get("id") if r is not None and r.status_code == 201 else None
        if run_id is None:
            from webapp.runs.models import Run

            run_id = db(lambda: Run.objects.filter(name=name).values_list("id", flat=True).first())
        if run_id is not None:
            self.watched_runs.add(run_id)
        return code, run_id

    @staticmethod
    def status(run_id: int) -> str | None:
        from webapp.runs.models import Run

        return db(lambda: Run.objects.filter(pk=run_id).values_list("status", flat=True).first())

    def wait(self, run_ids: list[int], pred: Callable[[str | None], bool], timeout: float) -> float | None:
        """Seconds until every run's status satisfies ``pred``, or None after ``timeout``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if all(pred(self.status(r)) for r in run_ids):
                return time.monotonic() - started
            time.sleep(0.5)
        return None

    def points(self, run_id: int) -> int:
        from webapp.runs.models import MetricSeries

        return db(lambda: sum(MetricSeries.objects.filter(run_id=run_id).values_list("count", flat=True)))

    def resume(self, run_id: int) -> str:
        status = self.status(run_id)
        if status not in RESUMABLE:
            return ""
        r = self.api("POST", f"/api/runs/{run_id}/resume/")
        return f"resumed ({r.status_code if r is not None else 'no answer'})"

    @staticmethod
    def outbox_sends() -> str:
        """How often the outbox sent run messages (re-sends show as sends > messages), where it exists."""
        try:
            from django.db.models import Count, Sum

            from webapp.outbox.models import Message
        except ImportError:
            return "no outbox"
        agg = db(lambda: Message.objects.aggregate(n=Count("id"), sends=Sum("sends")))
        return f"outbox: {agg['n']} messages, {agg['sends'] or 0} sends"

    def cancel(self, run_id: int) -> None:
        self.api("POST", f"/api/runs/{run_id}/cancel/")

    def worker_of(self, run_id: int) -> str | None:
        """The worker whose pool runs ``run_id``'s task (Celery's inspect), e.g. "train2"."""
        from workers.celery import app

        try:
            active = app.control.inspect(timeout=2.0).active() or {}
        except Exception:
            return None
        for node, tasks in active.items():
            for t in tasks:
                args = t.get("args") or []
                if isinstance(args, str):
                    try:
                        args = json.loads(args.replace("(", "[").replace(")", "]"))
                    except ValueError:
                        args = []
                if args and args[0] == run_id:
                    return node.split("@")[0]
        return None

    def count_synthetic(self, run_id: int, steps: int) -> tuple[Tally, Tally, Tally]:
        """Points, samples and evaluations of a synthetic run stored vs logged (each exactly once)."""
        from trainers.synthetic.train import key_names
        from webapp.runs.metric_store import series_read
        from webapp.runs.models import Evaluation, Sample

        points, samples, evals = synthetic_expected(steps, key_names(RUN["keys"]), RUN["samples_every"],
                                                    RUN["evaluate_every"])  # fmt: skip
        series = db(lambda: series_read([run_id]))[run_id]
        stored_points = [(k, int(s)) for k, v in series.items() for s in v["steps"]]
        stored_samples = [sample_identity(s, p) for s, p in db(lambda: list(
            Sample.objects.filter(run_id=run_id).values_list("step", "prompt")))]  # fmt: skip
        stored_evals = db(lambda: list(Evaluation.objects.filter(run_id=run_id, benchmark_name="synthetic")
                                      .values_list("step", flat=True)))  # fmt: skip
        return tally(points, stored_points), tally(samples, stored_samples), tally(evals, stored_evals)

    def stuck(self) -> list[str]:
        """Objects left queued/running/importing (runs of this drill, datasets, jobs)."""
        from webapp.datasets.models import Dataset, ScoringJob
        from webapp.runs.models import Evaluation, Run

        out = [f"run {i} {s}" for i, s in db(lambda: list(
            Run.objects.filter(status__in=["queued", "running"]).values_list("id", "status")))]  # fmt: skip
        out += [f"dataset {i} importing" for i in db(lambda: list(
            Dataset.objects.filter(status="importing").values_list("id", flat=True)))]  # fmt: skip
        for model, label in ((ScoringJob, "scoring job"), (Evaluation, "evaluation")):
            out += [f"{label} {i} {s}" for i, s in db(lambda m=model: list(
                m.objects.filter(status__in=["queued", "running"]).values_list("id", "status")))]  # fmt: skip
        return out

    def wait_unstuck(self, timeout: float) -> tuple[float, list[str]]:
        """Seconds waited (at most ``timeout``) until nothing is stuck, and what still is."""
        started = time.monotonic()
        while (left := self.stuck()) and time.monotonic() - started < timeout:
            time.sleep(2)
        return time.monotonic() - started, left

    def settle(self, run_ids: list[int], timeout: float) -> list[str]:
        """Wait for the runs to end (at most ``timeout``); the ones that did not, with their status."""
        self.wait(run_ids, lambda s: s in ENDED, timeout)
        return [f"run {r} {self.status(r)}" for r in run_ids if self.status(r) not in ENDED]

    def record(
        self, scenario: str, figure: str, tallies=(None, None, None), stuck=(), notes: str = ""
    ) -> None:
        p, s, e = (t.text() if t is not None else "-" for t in tallies)
        row = {"scenario": scenario, "figure": figure, "points": p, "samples": s, "evaluations": e,
               "stuck": ", ".join(stuck) or "0", "notes": notes}  # fmt: skip
        self.rows.append(row)
        print(f"  {row}", flush=True)

    # --- scenarios --------------------------------------------------------------------------------
    def worker_sigkill(self, lost_cap: float = 75) -> None:
        """A worker is SIGKILLed mid-run while the other training slot is busy and nobody reads
        the run: how long until the run is lost; then resumed, what its data holds."""
        steps = 600
        _, a = self.launch("sigkill-A", steps=steps, **RUN)
        _, b = self.launch("sigkill-filler", **FILLER)
        self.wait([a, b], lambda s: s == "running", 60)
        time.sleep(6)
        busy = sum(self.status(r) == "running" for r in (a, b))
        node = self.worker_of(a) or "train1"
        self.c.kill(node, signal.SIGKILL)
        t_lost = self.wait([a], lambda s: s != "running", lost_cap)
        after = self.status(a)
        figure = (f"{after} after {t_lost:.1f} s" if t_lost is not None
                  else f"stayed {after} > {lost_cap:.0f} s")  # fmt: skip
        self.c.start_worker(node)
        how = self.resume(a)
        self.cancel(b)
        stuck = self.settle([a, b], 90)
        self.record(
            "worker SIGKILL (time to lost)",
            figure,
            self.count_synthetic(a, steps),
            stuck,
            f"{busy}/2 training slots busy, no reader; then {how or 'not resumed'}: {self.status(a)}",
        )

    def worker_sigterm(self, exit_cap: float = 75) -> None:
        """SIGTERM to a worker's main process mid-run (what `systemctl stop` / a deploy does)."""
        steps = 1000
        _, r = self.launch("sigterm", steps=steps, **RUN)
        self.wait([r], lambda s: s == "running", 60)
        time.sleep(5)
        node = self.worker_of(r) or "train1"
        self.c.kill(node, signal.SIGTERM, group=False)
        t_exit = self.c.wait_exit(node, exit_cap)
        if t_exit is None:
            self.c.stop_group(node)
        time.sleep(1)
        after = self.status(r)
        figure = (f"worker exited after {t_exit:.1f} s, run {after}" if t_exit is not None
                  else f"worker still up after {exit_cap:.0f} s (killed), run {after}")  # fmt: skip
        self.c.start_worker(node)
        how = ""
        if after in RESUMABLE:
            time.sleep(3)  # ORLAB_REQUEUE_INTERRUPTED may have re-queued it already
            how = self.resume(r)
        stuck = self.settle([r], 90)
        self.record(
            "worker SIGTERM",
            figure,
            self.count_synthetic(r, steps),
            stuck,
            f"then {how or 'not resumed'}: {self.status(r)}",
        )

    def database_restart(self, down_s: float = 5.0) -> None:
        """The database goes away for ~5 s while a run logs; the web app is asked during and after."""
        steps = 800
        _, r = self.launch("db-restart", steps=steps, **RUN)
        self.wait([r], lambda s: s == "running", 60)
        time.sleep(4)
        started = time.monotonic()
        self.c.stop_postgres()
        health = self.api("GET", "/healthz", timeout=10)
        health_code = health.status_code if health is not None else "no answer"
        time.sleep(max(0.0, down_s - (time.monotonic() - started)))
        self.c.start_postgres()
        down = time.monotonic() - started
        codes = []
        for _ in range(30):
            resp = self.api("GET", f"/api/runs/?project={self.project}")
            codes.append(resp.status_code if resp is not None else 0)
        errors = sum(1 for x in codes if x >= 500 or x == 0)
        stuck = self.settle([r], 90)
        self.record(
            "database restart during a run",
            f"down {down:.1f} s; run {self.status(r)}",
            self.count_synthetic(r, steps),
            stuck,
            f"/healthz while down: {health_code}; {errors}/30 API requests after it failed (5xx)",
        )

    def broker_restart(self) -> None:
        """Redis (no persistence) is killed and restarted empty with two runs running and one queued;
        a run is launched while it is down."""
        steps = 600
        _, e = self.launch("broker-running-1", steps=steps, **RUN)
        _, f = self.launch("broker-running-2", steps=steps, **RUN)
        self.wait([e, f], lambda s: s == "running", 60)
        _, g = self.launch("broker-queued", steps=100, **RUN)
        time.sleep(2)
        self.c.kill_redis()
        code, h = self.launch("broker-launched-while-down", steps=100, **RUN)
        health = self.api("GET", "/healthz", timeout=10)
        time.sleep(3)
        self.c.start_redis()
        ids = [x for x in (e, f, g, h) if x is not None]
        t_all = self.wait(ids, lambda s: s in ENDED, 150)
        stuck = [f"run {r} {self.status(r)}" for r in ids if self.status(r) not in ENDED]
        totals = [self.count_synthetic(r, steps) for r in (e, f)]
        tallies = tuple(totals[0][i] + totals[1][i] for i in range(3))
        ended = ", ".join(f"{r}:{self.status(r)}" for r in ids)
        ended += f"; {self.outbox_sends()}"
        figure = f"all ended after {t_all:.1f} s" if t_all is not None else "not all ended in 150 s"
        self.record(
            "broker restart (2 running, 1 queued, 1 launched while down)",
            figure,
            tallies,
            stuck,
            f"launch while down: HTTP {code}; /healthz while down: "
            f"{health.status_code if health is not None else 'no answer'}; runs {ended}",
        )

    def concurrent_writers(self, clients: int = 6, batches: int = 20, per_batch: int = 500) -> None:
        """Several clients log into external runs at once (metrics, samples, evaluations), each
        re-sending a few batches as a client retrying after a timeout would."""
        from webapp.runs.models import Evaluation, Sample

        runs = []
        for i in range(clients):
            r = self.api("POST", "/api/runs/", json={"project": self.project, "kind": "external",
                                                      "name": f"writer-{i}", "config": {}})  # fmt: skip
            runs.append(r.json()["id"] if r is not None and r.status_code == 201 else None)
        codes: list[int] = []
        lock = threading.Lock()

        def client(run_id: int, seed: int) -> None:
            s = requests.Session()
            s.headers.update(self.http.headers)
            rng = random.Random(seed)
            sent = []
            for b in range(batches):
                steps = range(b * per_batch, (b + 1) * per_batch)
                sent.append(("metrics", [{"key": k, "step": st, "value": st * 0.5} for st in steps
                                          for k in ("loss", "reward", "kl")]))  # fmt: skip
                sent.append(("samples", {"samples": [
                    {"step": st, "prompt": f"p{st}", "completion": "c", "client_key": f"{st}"}
                    for st in steps[:: per_batch // 25]]}))  # fmt: skip
                sent.append(
                    ("evaluations", {"step": steps[0], "benchmark": "bench", "metrics": {"avg@1": 0.5}})
                )
            retries = rng.sample(sent, 4)
            for kind, body in sent + retries:
                try:
                    resp = s.post(f"{self.c.url}/api/runs/{run_id}/{kind}/", json=body, timeout=120)
                    code = resp.status_code
                except requests.RequestException:
                    code = 0
                with lock:
                    codes.append(code)

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(r, i)) for i, r in enumerate(runs) if r is not None]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        for r in runs:  # external runs end when their client says so
            if r is not None:
                self.api("POST", f"/api/runs/{r}/finish/", json={"status": "succeeded"})
        from webapp.runs.metric_store import series_read

        pts = smp = evs = Tally()
        for r in runs:
            if r is None:
                continue
            series = db(lambda r=r: series_read([r]))[r]
            pts += tally([(k, st) for st in range(batches * per_batch) for k in ("loss", "reward", "kl")],
                         [(k, int(x)) for k, v in series.items() for x in v["steps"]])  # fmt: skip
            smp += tally(
                [f"{st}" for st in range(0, batches * per_batch, per_batch // 25)],
                db(lambda r=r: list(Sample.objects.filter(run_id=r).values_list("client_key", flat=True))),
            )
            evs += tally(
                [b * per_batch for b in range(batches)],
                db(lambda r=r: list(Evaluation.objects.filter(run_id=r).values_list("step", flat=True))),
            )
        bad = sum(1 for x in codes if x >= 500 or x == 0)
        refused = sum(1 for x in codes if 400 <= x < 500)
        self.record(
            f"{clients} concurrent writers (external runs)",
            f"{len(codes)} requests in {elapsed:.1f} s",
            (pts, smp, evs),
            [],
            f"{bad} server errors, {refused} refused (4xx); 4 re-sent batches each",
        )

    # --- uploads ------------------------------------------------------------------------------------
    def _processes(self) -> dict[int, str]:
        out: dict[int, str] = {}
        for name in ["web", *self.c.worker_specs]:
            p = self.c.procs.get(name)
            if p is not None and p.poll() is None:
                tree = process_tree(p.pid)
                for i, pid in enumerate(tree):
                    out[pid] = name if i == 0 else f"{name} child"
        return out

    def upload(self, label: str, path: Path, name: str, kind: str = "preference") -> None:
        from webapp.datasets.models import Dataset

        with PeakWatch(self._processes) as watch:
            posted = time.monotonic()
            with open(path, "rb") as f:
                r = self.api(
                    "POST",
                    "/api/datasets/",
                    files={"file": (path.name, f)},
                    data={"name": name, "kind": kind, "project": str(self.project)},
                    timeout=300,
                )
            code = r.status_code if r is not None else "no answer"
            ds_id = None
            if r is not None and r.headers.get("content-type", "").startswith("application/json"):
                body = r.json()
                ds_id = body.get("id") if isinstance(body, dict) else None
            status = "-"
            # the whole import is watched (a background one too), up to 150 s
            deadline = time.monotonic() + 150
            while ds_id is not None and time.monotonic() < deadline:
                status = db(lambda: Dataset.objects.filter(pk=ds_id).values_list("status", flat=True).first())
                if status != "importing":
                    break
                time.sleep(0.5)
            handled_s = time.monotonic() - posted
            if ds_id is None:
                left = db(lambda: list(Dataset.objects.filter(name=name).values_list("status", flat=True)))
                status = ",".join(left) if left else "no dataset row"
        who, mb = watch.worst()
        killed = "; killed by the drill: " + ", ".join(watch.killed) if watch.killed else ""
        row = {"file": label, "bytes": path.stat().st_size, "http": code, "dataset": status,
               "peak_mb": round(mb), "process": who, "seconds": round(handled_s, 1), "notes": killed.lstrip("; ")}  # fmt: skip
        self.uploads.append(row)
        print(f"  {row}", flush=True)
        for wname in self.c.worker_specs:
            if not self.c.alive(wname):
                self.c.start_worker(wname)
        if not self.c.alive("web"):  # gunicorn replaces a killed worker itself; this is the master
            self.c.start_web()

    def hostile_uploads(self) -> None:
        from bench.drill import hostile_files

        folder = self.c.dir / "uploads"
        folder.mkdir(exist_ok=True)
        for label, path in hostile_files.build(folder):
            self.upload(label, path, name=f"up-{path.stem}")

    def import_worker_sigkill(self, cap: float = 90) -> None:
        """The worker importing a large upload in the background is SIGKILLed mid-import: how long
        until the dataset leaves `importing` (nobody reads it), and whether rows were left."""
        from bench.drill.hostile_files import pairs, write_jsonl
        from webapp.datasets.models import Dataset, PreferencePair

        folder = self.c.dir / "uploads"
        folder.mkdir(exist_ok=True)
        path = write_jsonl(folder / "import-kill.jsonl", pairs(400_000, 5_000_000))
        with open(path, "rb") as f:
            r = self.api("POST", "/api/datasets/", files={"file": (path.name, f)},
                         data={"name": "import-kill", "kind": "preference", "project": str(self.project)},
                         timeout=300)  # fmt: skip
        code = r.status_code if r is not None else "no answer"
        ds_id = r.json().get("id") if r is not None and r.status_code in (201, 202) else None
        if ds_id is None:
            self.record("import worker SIGKILL", f"upload answered {code}, no background import to kill")
            return

        def status():
            return db(lambda: Dataset.objects.filter(pk=ds_id).values_list("status", flat=True).first())

        started = time.monotonic()
        while status() == "importing" and time.monotonic() - started < 30:
            if (
                db(lambda: Dataset.objects.filter(pk=ds_id).values_list("progress", flat=True).first() or 0)
                > 0
            ):
                break  # under way
            time.sleep(0.2)
        before = status()
        node = "short"
        self.c.kill(node, signal.SIGKILL)
        t0 = time.monotonic()
        while status() == "importing" and time.monotonic() - t0 < cap:
            time.sleep(0.5)
        after, waited = status(), time.monotonic() - t0
        self.c.start_worker(node)
        rows = db(lambda: PreferencePair.objects.filter(dataset_id=ds_id).count())
        figure = (f"{after} after {waited:.1f} s" if after != "importing"
                  else f"stayed importing > {cap:.0f} s")  # fmt: skip
        self.record(
            "import worker SIGKILL (400,000-row upload)",
            figure,
            stuck=[] if after != "importing" else [f"dataset {ds_id} importing"],  # fmt: skip
            notes=f"upload HTTP {code}; dataset {before} when killed; {rows} rows left behind",
        )
