"""Issue 14's speeds: rollout samples (the RL sample record) at 1M samples, beside Trackio.

1. Ingest, 2 KB completions, ``--clients`` 4 clients, batches of ``--batch`` 1,000 samples (>= 20,000
   samples/s): a) POST /api/runs/{id}/samples/ over HTTP to the README's server (``gunicorn
   webapp.wsgi -w 4``), one external run per client, pre-encoded bodies; b) the worker's sink
   (workers.sinks.DbSink.log_samples, then close()), one process per client (4 trainers), each its
   own run. Throughput = samples stored (verified by counting) / time from the start barrier to the
   last response / the last close().
2. One run with ``--samples`` (default 1,000,000) samples of a realistic RL shape: 5,000 prompts x
   200 steps, each step ``G`` groups of n=8 over a random subset of the prompts (G = samples / 1,600),
   solve probability rising with the step per prompt difficulty (unsolved / learning / saturated
   prompts), GRPO advantages, mixed verdicts (correct / wrong / no_answer), lognormal lengths around
   2 KB, ~2 % truncated (finish_reason length), rewards {accuracy, format}. Loaded by
   ``webapp.runs.samples.record_rows`` (the ingest's own COPY path, one step per batch, 4 loader
   processes), not over HTTP. Then over the README's server, median of ``--repeat`` warm requests
   after the first (cold) one, server time from the Server-Timing header (webapp.middleware):
   first page (default order) <= 150 ms, group view <= 100 ms, word search first page <= 300 ms
   (a planted word in ~2 % of completions, and a rare one in ~0.05 %), substring search
   ``\\boxed{42}`` first page <= 500 ms, prompt x step matrix <= 500 ms.
   With ``--explain``: EXPLAIN (ANALYZE, BUFFERS) of every SQL statement over 20 ms of those requests,
   taken in-process inside the same transaction (so the selector's planner settings apply).
3. Storage of the completions: pg_column_size summed over the run's completions (and the whole
   table's heap + TOAST) against the same text compressed with zstd level 3 (the zstd CLI, one
   stream over all completions; <= 1.5x); every index's size apart.
4. Trackio (``--trackio-python``, a bench-only venv: ``python3.11 -m venv /tmp/trackio-venv &&
   /tmp/trackio-venv/bin/pip install trackio``), the same samples logged as ``trackio.Trace``
   objects (a list of traces per step under one key: its Traces tab), then its own server
   (``trackio.show``) answers the requests its Traces tab makes: POST /api/get_traces with limit 50
   (first page, newest first: its default), the same with ``search=telescoping`` and
   ``search=\\boxed{42}`` (Trackio has one search: a LIKE over a lower-cased text column). Wall time
   (Trackio sends no Server-Timing). ``--trackio-samples`` (default: all) logs fewer.

    python -m bench.bench_samples [--samples 1000000 | --quick] [--explain] [--skip-trackio]

``--quick``: 50,000 samples (prompts scale down: samples / 200), fewer ingest batches. Run it with
its own database and broker on a shared machine: ORLAB_BENCH_DB=orlab_bench_x
ORLAB_BENCH_BROKER=redis://127.0.0.1:6379/N ORLAB_BENCH_MAX_WAIT=0.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from bench.common import (
    ROOT,
    Client,
    CpuWatch,
    ReadmeServer,
    bench_database,
    cli,
    result,
    summarize,
    timed_requests,
)

TARGET_INGEST = 20_000.0
TARGET_FIRST_PAGE_MS = 150.0
TARGET_GROUP_MS = 100.0
TARGET_WORD_MS = 300.0
TARGET_SUBSTRING_MS = 500.0
TARGET_MATRIX_MS = 500.0
TARGET_STORAGE_RATIO = 1.5
STEPS = 200
N_PER_GROUP = 8
WORD_COMMON = "telescoping"  # planted in ~2 % of completions
WORD_RARE = "eigenvalue"  # planted in ~0.05 %
SUBSTRING = "\\boxed{42}"
SOURCES = ("gsm8k", "math", "aime", "olympiad")


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


# --- the synthetic RL run ------------------------------------------------------------------------------


class Shape:
    """prompts x steps x groups of n; the text generator (Zipf over a made-up vocabulary, so the text
    compresses about as well as English prose does)."""

    def __init__(self, samples: int, seed: int = 0):
        self.steps = STEPS
        self.n = N_PER_GROUP
        self.groups = max(1, samples // (self.steps * self.n))
        self.prompts = max(self.groups, min(5_000, samples // 200))
        self.total = self.groups * self.steps * self.n
        rng = np.random.default_rng(seed)
        letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
        freq = np.array([12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4,
                         2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07])  # fmt: skip
        freq = freq / freq.sum()
        words = set()
        while len(words) < 6000:
            k = int(rng.integers(1, 11))
            words.add("".join(rng.choice(letters, size=k, p=freq)))
        words -= {WORD_COMMON, WORD_RARE}
        vocab = sorted(words)
        vocab[:12] = ["the", "of", "and", "we", "is", "=", "+", "so", "x", "then", "to", "a"]
        self.vocab = np.array(vocab, dtype=object)
        ranks = np.arange(1, len(vocab) + 1)
        p = 1.0 / ranks**1.05
        self.p = p / p.sum()
        self.cdf = np.cumsum(self.p)
        self.cdf[-1] = 1.0
        self.difficulty = rng.normal(-1.0, 2.0, self.prompts)
        self.answers = rng.integers(0, 1000, self.prompts)
        self.answers[np.arange(self.prompts) % 100 == 7] = 42  # 1 % of prompts: \boxed{42}
        self.prompt_texts = []
        for i in range(self.prompts):
            body = " ".join(self.vocab[np.searchsorted(self.cdf, rng.random(60))])
            self.prompt_texts.append(f"Problem {i}: {body}. Give the answer in \\boxed{{}}.")
        self.sources = [SOURCES[i % len(SOURCES)] for i in range(self.prompts)]

    def digest(self, i: int) -> str:
        return hashlib.sha256(self.prompt_texts[i].encode()).hexdigest()

    def step_samples(self, step: int, seed: int = 0) -> list[dict]:
        """The ``groups`` x ``n`` sample dicts of one step (what a trainer logs)."""
        rng = np.random.default_rng([seed, step])
        chosen = rng.choice(self.prompts, size=self.groups, replace=False)
        g, n = self.groups, self.n
        solve = 1 / (1 + np.exp(-(self.difficulty[chosen] + 4.0 * step / self.steps)))
        correct = rng.random((g, n)) < solve[:, None]
        chars = np.clip(rng.lognormal(math.log(1900), 0.35, (g, n)), 300, 4000).astype(int)
        truncated = chars >= 4000
        correct &= ~truncated
        err = rng.random((g, n)) < 0.001
        wrong_ans = rng.integers(0, 1000, (g, n))
        common = rng.random((g, n)) < 0.02
        rare = rng.random((g, n)) < 0.0005
        acc = correct.astype(float)
        fmt = np.where(truncated, 0.0, 0.1)
        reward = acc + fmt
        mean, std = reward.mean(axis=1, keepdims=True), reward.std(axis=1, keepdims=True)
        adv = (reward - mean) / (std + 1e-4)
        counts = (chars // 5).ravel()
        all_words = self.vocab[np.searchsorted(self.cdf, rng.random(int(counts.sum())))]
        ends = np.cumsum(counts)
        out = []
        for a in range(g):
            p = int(chosen[a])
            for b in range(n):
                target = int(chars[a, b])
                k = a * n + b
                words = all_words[ends[k] - counts[k] : ends[k]]
                if common[a, b]:
                    words[len(words) // 3] = WORD_COMMON
                if rare[a, b]:
                    words[len(words) // 2] = WORD_RARE
                text = " ".join(words)
                if truncated[a, b]:
                    text = text[:target]
                    verdict, extracted = "no_answer", ""
                else:
                    extracted = str(self.answers[p] if correct[a, b] else wrong_ans[a, b])
                    verdict = "correct" if correct[a, b] else "wrong"
                    text = f"{text[: max(0, target - 40)]}. Therefore the answer is \\boxed{{{extracted}}}."
                out.append(
                    {
                        "step": step,
                        "prompt": self.prompt_texts[p],
                        "completion": text,
                        "reward": float(reward[a, b]),
                        "advantage": float(adv[a, b]),
                        "verdict": verdict,
                        "length": len(text) // 4,
                        "truncated": bool(truncated[a, b]),
                        "group_index": a,
                        "member_index": b,
                        "finish_reason": "error" if err[a, b] else ("length" if truncated[a, b] else "stop"),
                        "rewards": {"accuracy": float(acc[a, b]), "format": float(fmt[a, b])},
                        "extracted_answer": extracted,
                        "expected_answer": str(self.answers[p]),
                        "data_source": self.sources[p],
                    }
                )
        return out


def flat_batches(shape: Shape, batches: int, size: int, seed: int) -> list[list[dict]]:
    """``batches`` batches of ``size`` samples (consecutive steps' samples, re-stepped so every batch
    is one step of its own run)."""
    pool: list[dict] = []
    out = []
    step = 0
    while len(out) < batches:
        while len(pool) < size:
            pool.extend(shape.step_samples(step % shape.steps, seed=seed))
            step += 1
        batch, pool = pool[:size], pool[size:]
        for i, s in enumerate(batch):
            s["step"] = len(out)
            s["group_index"], s["member_index"] = divmod(i, shape.n)
        out.append(batch)
    return out


# --- loading the big run (record_rows, 4 processes) ------------------------------------------------------


def _load_worker(run_id: int, samples: int, steps: list[int], zstd_path: str | None, q) -> None:
    from bench.common import setup_django

    setup_django()
    from django.db import connection

    from webapp.runs.samples import normalize, record_rows

    shape = Shape(samples)
    zproc = None
    zout = open(zstd_path, "wb") if zstd_path else None  # noqa: SIM115 (closed after the loop)
    if zout is not None:
        zproc = subprocess.Popen(["zstd", "-3", "-q", "-c"], stdin=subprocess.PIPE, stdout=zout)
    t0 = time.perf_counter()
    raw = 0
    for step in steps:
        batch = shape.step_samples(step)
        rows = [normalize(s, i) for i, s in enumerate(batch)]
        record_rows(run_id, rows)
        if zproc is not None:
            data = "".join(r["completion"] for r in rows).encode()
            raw += len(data)
            zproc.stdin.write(data)
    if zproc is not None:
        zproc.stdin.close()
        zproc.wait()
        zout.close()
    connection.close()
    q.put({"steps": len(steps), "seconds": time.perf_counter() - t0, "raw_bytes": raw})


# the completions' text indexes of each version: GIN on runs_sample (before 0013), on SampleSearch (after)
FAST_LOAD_INDEXES = ("sample_completion_fts", "sample_completion_trgm", "samplesearch_tsv")


def load_big_run(run_id: int, shape: Shape, samples: int, procs: int, fast: bool = False) -> dict:
    """Prompts first (so loaders never race to create them), then the steps spread over ``procs``
    processes, each through record_rows. Also pipes every completion through ``zstd -3``.
    ``fast``: the completions' full-text and trigram GIN indexes are dropped for the load and built
    again afterwards (their definitions read from pg_indexes; the build time is reported)."""
    from django.db import connection

    from webapp.runs.models import RolloutPrompt

    dropped: dict[str, str] = {}
    if fast:
        with connection.cursor() as cur:
            cur.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY(%s)",
                [list(FAST_LOAD_INDEXES)],
            )
            dropped = dict(cur.fetchall())
            for name in dropped:
                cur.execute(f'DROP INDEX "{name}"')

    RolloutPrompt.objects.bulk_create(
        [
            RolloutPrompt(
                run_id=run_id,
                digest=shape.digest(i),
                text=shape.prompt_texts[i],
                expected_answer=str(shape.answers[i]),
                data_source=shape.sources[i],
            )
            for i in range(shape.prompts)
        ],
        batch_size=1000,
    )
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    tmp = Path(tempfile.mkdtemp(prefix="orlab-bench-zstd-"))
    workers = []
    t0 = time.perf_counter()
    for k in range(procs):
        steps = list(range(k, shape.steps, procs))
        p = ctx.Process(target=_load_worker, args=(run_id, samples, steps, str(tmp / f"{k}.zst"), q))
        p.start()
        workers.append(p)
    done = [q.get() for _ in workers]
    for p in workers:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"a loader exited with {p.exitcode}")
    elapsed = time.perf_counter() - t0
    zbytes = sum(f.stat().st_size for f in tmp.glob("*.zst"))
    for f in tmp.glob("*.zst"):
        f.unlink()
    tmp.rmdir()
    search = search_catch_up([run_id])  # the loaders' indexer threads died with them: the rest, here
    print(f"search index after the load: {search} ({uptime()})", flush=True)
    index_build: dict[str, float] = {}
    if dropped:
        with connection.cursor() as cur:
            cur.execute("SET maintenance_work_mem = '256MB'")
            for name, ddl in dropped.items():
                t = time.perf_counter()
                cur.execute(ddl)
                index_build[name] = round(time.perf_counter() - t, 1)
        print(f"GIN indexes rebuilt: {index_build} s ({uptime()})", flush=True)
    return {
        "search": search,
        "fast_load": bool(dropped),
        "index_build_s": index_build,
        "seconds": round(elapsed, 1),
        "rate": round(shape.total / elapsed),
        "raw_bytes": sum(d["raw_bytes"] for d in done),
        "zstd3_bytes_in_4_streams": zbytes,
    }


# --- ingest: API and sink --------------------------------------------------------------------------------


def ingest_api(server, fx, shape: Shape, args) -> dict:
    import orjson

    from webapp.runs.models import Sample

    bodies = []
    t = time.perf_counter()
    for c in range(args.clients):
        bodies.append(
            [
                orjson.dumps({"samples": b})
                for b in flat_batches(shape, args.ingest_batches, args.batch, 100 + c)
            ]
        )
    mb = sum(len(b) for bs in bodies for b in bs) / 2**20
    print(f"API ingest: encoded {mb:.0f} MiB of JSON in {time.perf_counter() - t:.1f} s", flush=True)
    clients = [Client(server.url, fx.token) for _ in range(args.clients)]
    run_ids = []
    for i, client in enumerate(clients):
        r = client.request(
            "POST",
            "/api/runs/",
            orjson.dumps({"project": fx.project.id, "name": f"ingest-api-{i}", "kind": "external"}),
            {"Content-Type": "application/json"},
        )
        if r.status != 201:
            raise RuntimeError(f"creating run -> {r.status}: {r.body[:300]!r}")
        run_ids.append(r.json()["id"])
    # warm-up: each worker imports the views (a small batch, another step)
    warm = shape.step_samples(0, seed=999)[: shape.n]
    for s in warm:
        s["step"] = 10**6
    for client, run_id in zip(clients, run_ids, strict=True):
        r = client.request(
            "POST",
            f"/api/runs/{run_id}/samples/",
            orjson.dumps({"samples": warm}),
            {"Content-Type": "application/json"},
        )
        if r.status != 200:
            raise RuntimeError(f"warm-up -> {r.status}: {r.body[:300]!r}")
    barrier = threading.Barrier(args.clients + 1)
    written = [0] * args.clients
    server_ms: list[float] = []
    errors: list[str] = []

    def loop(i: int) -> None:
        barrier.wait()
        try:
            for body in bodies[i]:
                r = clients[i].request(
                    "POST", f"/api/runs/{run_ids[i]}/samples/", body, {"Content-Type": "application/json"}
                )
                if r.status != 200:
                    errors.append(f"client {i}: {r.status} {r.body[:300]!r}")
                    return
                written[i] += r.json()["written"]
                server_ms.append(r.server_ms)
        except Exception as exc:
            errors.append(f"client {i}: {exc!r}")

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(args.clients)]
    for th in threads:
        th.start()
    load0 = uptime()
    with CpuWatch() as watch:
        barrier.wait()
        t0 = time.perf_counter()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t0
    for c in clients:
        c.close()
    sent = args.clients * args.ingest_batches * args.batch
    stored = Sample.objects.filter(run_id__in=run_ids).exclude(step=10**6).count()
    if errors:
        print("errors:\n  " + "\n  ".join(errors[:5]), file=sys.stderr)
    return {
        "sent": sent,
        "acknowledged": sum(written),
        "stored": stored,
        "seconds": round(elapsed, 2),
        "rate": round(stored / elapsed),
        "server_ms_per_batch": summarize(server_ms),
        "json_mib": round(mb, 1),
        "errors": errors[:5],
        "run_ids": run_ids,
        "others_cpu": watch.others,
        "uptime_before": load0,
        "uptime_after": uptime(),
    }


def _sink_worker(run_id: int, samples: int, batches: int, size: int, seed: int, barrier, q) -> None:
    from bench.common import setup_django

    setup_django()
    from workers.sinks import DbSink

    shape = Shape(samples)
    data = flat_batches(shape, batches, size, seed)
    sink = DbSink(run_id, attempt=1)
    barrier.wait()
    t0 = time.time()
    for step, batch in enumerate(data):
        sink.log_samples(step, batch)
    sink.flush()  # every sample stored (and found by a search: not-yet-indexed rows are rechecked)
    stored = time.time()
    sink.close()  # since 0013 also the run's search vectors still queued
    q.put({"start": t0, "stored": stored, "end": time.time()})


def ingest_sink(fx, shape: Shape, samples: int, args) -> dict:
    from django.utils import timezone

    from webapp.runs.models import Run, Sample

    run_ids = []
    for i in range(args.clients):
        now = timezone.now()
        run_ids.append(
            Run.objects.create(
                project=fx.project, name=f"ingest-sink-{i}", kind="synthetic", status=Run.Status.RUNNING,
                attempt=1, heartbeat_at=now, started_at=now, created_by=fx.user,
            ).id
        )  # fmt: skip
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    barrier = ctx.Barrier(args.clients + 1)
    procs = [
        ctx.Process(
            target=_sink_worker,
            args=(run_ids[i], samples, args.ingest_batches, args.batch, 200 + i, barrier, q),
        )
        for i in range(args.clients)
    ]
    for p in procs:
        p.start()
    load0 = uptime()
    with CpuWatch() as watch:
        barrier.wait(timeout=900)
        times = [q.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    start, end = min(t["start"] for t in times), max(t["end"] for t in times)
    flushed = max(t["stored"] for t in times)
    sent = args.clients * args.ingest_batches * args.batch
    stored = Sample.objects.filter(run_id__in=run_ids).count()
    return {
        "sent": sent,
        "stored": stored,
        "seconds": round(flushed - start, 2),
        "rate": round(stored / (flushed - start)),  # to the last flush(): every sample committed
        "with_close_s": round(end - start, 2),
        "rate_with_close": round(stored / (end - start)),
        "per_process_s": [round(t["stored"] - t["start"], 2) for t in times],
        "close_s": [round(t["end"] - t["stored"], 2) for t in times],
        "run_ids": run_ids,
        "others_cpu": watch.others,
        "uptime_before": load0,
        "uptime_after": uptime(),
    }


# --- storage ---------------------------------------------------------------------------------------------


def storage(run_id: int, zstd_bytes: int, raw_bytes: int) -> dict:
    from django.db import connection

    from webapp.runs.models import Sample

    table = Sample._meta.db_table
    with connection.cursor() as cur:
        # what the text costs (migration 0017: a zstd frame per completion + the run's dictionaries; rows
        # stored before keep their text in ``completion``): all three, against the same zstd -3 baseline
        cur.execute(
            f"SELECT count(*), sum(octet_length(completion)), sum(pg_column_size(completion)), "
            f"sum(coalesce(pg_column_size(completion_z), 0)), count(*) FILTER (WHERE completion_dict <> 0), "
            f"sum(pg_column_size(t.*)) FROM {table} t WHERE run_id = %s",
            [run_id],
        )
        n, legacy_text_bytes, legacy_stored_bytes, frame_bytes, with_dictionary, row_bytes = cur.fetchone()
        cur.execute(
            "SELECT count(*), coalesce(sum(pg_column_size(data)), 0) FROM runs_sampletextdictionary WHERE run_id = %s",
            [run_id],
        )
        dictionaries, dictionary_bytes = cur.fetchone()
        stored_bytes = int(legacy_stored_bytes) + int(frame_bytes) + int(dictionary_bytes)
        text_bytes = raw_bytes or int(legacy_text_bytes)  # the text itself is no longer in a column
        cur.execute(
            "SELECT pg_relation_size(c.oid), pg_table_size(c.oid), coalesce(pg_relation_size(c.reltoastrelid), 0), "
            "pg_indexes_size(c.oid), pg_total_relation_size(c.oid) FROM pg_class c WHERE c.relname = %s",
            [table],
        )
        heap, table_size, toast, indexes, total = cur.fetchone()
        cur.execute(
            "SELECT i.relname, pg_relation_size(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_class t ON t.oid = x.indrelid WHERE t.relname = %s ORDER BY 2 DESC",
            [table],
        )
        index_sizes = {name: size for name, size in cur.fetchall()}
        cur.execute(
            "SELECT attcompression FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'completion'",
            [table],
        )
        compression = cur.fetchone()[0] or "default (default_toast_compression)"
        cur.execute(
            "SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'completion_z'",
            [table],
        )
        frame_storage = {"e": "external", "x": "extended", "m": "main", "p": "plain"}.get(
            (cur.fetchone() or [""])[0]
        )
        cur.execute("SHOW default_toast_compression")
        default_compression = cur.fetchone()[0]
        # the completions' search vectors (migration 0013: a table of their own, an index by nature)
        cur.execute(
            "SELECT pg_table_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c WHERE c.relname = 'runs_samplesearch'"
        )
        search = cur.fetchone()
    return {
        "search_table_bytes": search[0] if search else None,
        "search_indexes_bytes": search[1] if search else None,
        "samples": n,
        "completion_text_bytes": int(text_bytes),
        "completion_stored_bytes": int(stored_bytes),  # frames + leftover text + dictionaries
        "completion_frames_bytes": int(frame_bytes),
        "completion_legacy_text_stored_bytes": int(legacy_stored_bytes),
        "dictionary_bytes": int(dictionary_bytes),
        "dictionaries": dictionaries,
        "rows_with_dictionary": with_dictionary,
        "row_bytes": int(row_bytes),
        "zstd3_bytes": zstd_bytes,
        "zstd_raw_bytes": raw_bytes,
        "ratio_column_vs_zstd": round(stored_bytes / zstd_bytes, 2),
        "heap_bytes": heap,
        "toast_bytes": toast,
        "table_bytes": table_size,
        "indexes_bytes": indexes,
        "total_bytes": total,
        "index_sizes": index_sizes,
        "column_compression": compression,
        "frame_column_storage": frame_storage,
        "default_toast_compression": default_compression,
    }


# --- EXPLAIN ANALYZE of the reads' slow statements --------------------------------------------------------


def explain_slow(paths: dict[str, str], token: str, threshold_ms: float = 20.0) -> dict[str, list]:
    """Each path once in-process (django.test.Client); every statement slower than ``threshold_ms``
    explained right after it ran, in the same transaction (the selector's planner settings hold)."""
    from django.db import connection
    from django.test import Client as DjangoClient

    client = DjangoClient()
    out: dict[str, list] = {}
    busy = [False]
    found: list[dict] = []

    def wrapper(execute, sql, params, many, context):
        t = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            ms = (time.perf_counter() - t) * 1000
            if not busy[0] and not many and ms >= threshold_ms and sql.lstrip().upper().startswith("SELECT"):
                busy[0] = True
                try:
                    with connection.cursor() as cur:
                        cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                        plan = "\n".join(r[0] for r in cur.fetchall())
                    found.append({"ms": round(ms, 1), "sql": sql[:2000], "plan": plan})
                except Exception as exc:
                    found.append({"ms": round(ms, 1), "sql": sql[:2000], "plan": f"(EXPLAIN failed: {exc})"})
                finally:
                    busy[0] = False

    for name, path in paths.items():
        found = []
        client.get(path, headers={"Authorization": f"Token {token}"})  # warm
        found.clear()
        with connection.execute_wrapper(wrapper):
            status = client.get(path, headers={"Authorization": f"Token {token}"}).status_code
        out[name] = [{"status": status}, *found]
    return out


# --- Trackio ---------------------------------------------------------------------------------------------

TRACKIO_SCRIPT = r"""
import json, os, sys, time, urllib.request
sys.path.insert(0, sys.argv[1])
from bench.bench_samples import Shape
samples, limit, repeat, out = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
queries = json.loads(sys.argv[6])
import sqlite3
import trackio
shape = Shape(samples)
db = os.path.join(os.environ["TRACKIO_DIR"], "bench.db")
def stored():  # traces trackio's writer thread has committed (trackio.log only queues them)
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT max(rowid) FROM traces").fetchone()[0] or 0
    except sqlite3.Error:
        return -1
res = {"trackio_version": trackio.__version__ if hasattr(trackio, "__version__") else "?"}
t0 = time.perf_counter()
run = trackio.init(project="bench", name="rollouts")
logged = 0
for step in range(shape.steps):
    if logged >= limit:
        break
    # at most 10,000 traces queued ahead of the writer: unthrottled, 1M queued traces hold ~15 GB
    while step and 0 <= stored() < logged - 10_000:
        time.sleep(0.2)
    traces = []
    for s in shape.step_samples(step):
        meta = {k: s[k] for k in ("reward", "advantage", "verdict", "length", "truncated", "group_index",
                                  "member_index", "finish_reason", "extracted_answer", "expected_answer",
                                  "data_source")}
        meta["rewards"] = s["rewards"]
        traces.append(trackio.Trace(messages=[{"role": "user", "content": s["prompt"]},
                                              {"role": "assistant", "content": s["completion"]}], metadata=meta))
    trackio.log({"rollouts": traces}, step=step)
    logged += len(traces)
trackio.finish()  # waits 30 s at most for the writer thread: past that, the reads below would race it
if getattr(run, "_local_sender_thread", None) is not None:
    run._local_sender_thread.join()
res["logged"] = logged
with sqlite3.connect(db) as c:
    res["stored"] = c.execute("SELECT count(*) FROM traces").fetchone()[0]
res["log_seconds"] = round(time.perf_counter() - t0, 1)  # to the last trace committed
app = trackio.show(project="bench", open_browser=False, block_thread=False, server_port=int(sys.argv[7]))
url = f"http://127.0.0.1:{sys.argv[7]}"
for _ in range(200):
    try:
        urllib.request.urlopen(url + "/version", timeout=5).read(); break
    except Exception:
        time.sleep(0.3)
def call(body):
    req = urllib.request.Request(url + "/api/get_traces", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t = time.perf_counter()
    data = urllib.request.urlopen(req, timeout=600).read()
    return (time.perf_counter() - t) * 1000, data
res["queries"] = {}
for name, extra in queries.items():
    body = {"project": "bench", "run": "rollouts", "limit": 50, "offset": 0, **extra}
    cold, data = call(body)
    warm = sorted(call(body)[0] for _ in range(repeat))
    n = len(json.loads(data)["data"])
    res["queries"][name] = {"cold_ms": round(cold, 1), "median_ms": round(warm[len(warm) // 2], 1),
                            "min_ms": round(warm[0], 1), "rows": n, "bytes": len(data), "body": body}
db = os.path.join(os.environ["TRACKIO_DIR"], "bench.db")
res["db_bytes"] = os.path.getsize(db) if os.path.exists(db) else None
res["dir_bytes"] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.environ["TRACKIO_DIR"]) for f in fs)
json.dump(res, open(out, "w"))
os._exit(0)
"""


def trackio_side(args, samples: int) -> dict:
    py = Path(args.trackio_python)
    if not py.exists():
        return {
            "error": f"{py} missing: python3.11 -m venv /tmp/trackio-venv && /tmp/trackio-venv/bin/pip install trackio"
        }
    limit = args.trackio_samples or samples
    tmp = Path(tempfile.mkdtemp(prefix="orlab-bench-trackio-"))
    out = tmp / "result.json"
    queries = {
        "first_page": {},
        "word": {"search": WORD_COMMON},
        "word_rare": {"search": WORD_RARE},
        "substring": {"search": SUBSTRING},
    }
    from bench.common import free_port

    env = dict(
        os.environ, TRACKIO_DIR=str(tmp / "trackio"), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False"
    )
    env.pop("PYTHONPATH", None)
    script = tmp / "trackio_bench.py"
    script.write_text(TRACKIO_SCRIPT)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(py), str(script), str(ROOT), str(samples), str(limit), str(args.repeat), str(out),
         json.dumps(queries), str(free_port())],
        env=env, capture_output=True, text=True, timeout=args.trackio_timeout,
    )  # fmt: skip
    took = time.perf_counter() - t0
    if proc.returncode != 0 or not out.exists():
        res = {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout)[-2000:]}"}
    else:
        res = json.loads(out.read_text())
    res["seconds"] = round(took, 1)
    res["uptime_after"] = uptime()
    subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return res


# --- the script --------------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--samples", type=int, default=1_000_000, help="samples of the big run")
    parser.add_argument("--quick", action="store_true", help="50,000 samples, 5 ingest batches per client")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000, help="samples per ingest request / log_samples")
    parser.add_argument("--ingest-batches", type=int, default=10, help="batches per ingest client")
    parser.add_argument("--loaders", type=int, default=4, help="processes loading the big run")
    parser.add_argument(
        "--fast-load",
        action="store_true",
        help="load the big run without the completions' GIN indexes, then build them (timed)",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the reads' slow statements")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument(
        "--ingest-only", action="store_true", help="only the ingest measurements, on an empty database"
    )
    parser.add_argument("--skip-trackio", action="store_true")
    parser.add_argument(
        "--keep-db",
        action="store_true",
        help="keep the bench database (a 1M load takes ~10 min) for re-measuring",
    )
    parser.add_argument("--trackio-python", default="/tmp/trackio-venv/bin/python")
    parser.add_argument("--trackio-samples", type=int, default=0, help="log at most this many (0: all)")
    parser.add_argument("--trackio-timeout", type=int, default=3600)


def search_catch_up(run_ids: list[int]) -> dict:
    """After an ingest: the search index's lag (samples queued, not yet in SampleSearch) and the time
    this process takes to index what is left (webapp.runs.sample_search; absent in older code)."""
    try:
        from webapp.runs import sample_search
    except ImportError:
        return {"indexer": "none (full-text GIN written by the insert)"}
    queued = sum(sample_search.lag(r) for r in run_ids)
    t = time.perf_counter()
    indexed = sum(sample_search.index_pending(run_id=r) for r in run_ids)
    return {
        "queued_at_end": queued,
        "indexed_after": indexed,
        "catch_up_s": round(time.perf_counter() - t, 2),
    }


def run_ingest_only(args: argparse.Namespace) -> list[dict]:
    """``--ingest-only``: the two ingest measurements on an empty database (no big run, no reads)."""
    shape = Shape(args.samples)
    rows: list[dict] = []
    with bench_database() as fx:
        with ReadmeServer(workers=4) as server:
            api = ingest_api(server, fx, shape, args)
        api["search"] = search_catch_up(api.pop("run_ids"))
        print(f"API ingest: {json.dumps(api)}", flush=True)
        rows.append(
            result(
                "14.1", f"POST /api/runs/{{id}}/samples/, {args.clients} clients x {args.batch:,}-sample batches, "
                "2 KB completions (empty database)", api["rate"], "samples/s", TARGET_INGEST, "higher",
                note=f"{api['stored']:,} of {api['sent']:,} in {api['seconds']} s; search index {api['search']}",
                **api,
            )
        )  # fmt: skip
        sink = ingest_sink(fx, shape, args.samples, args)
        sink["search"] = search_catch_up(sink.pop("run_ids"))
        print(f"sink ingest: {json.dumps(sink)}", flush=True)
        rows.append(
            result(
                "14.1", f"DbSink.log_samples, {args.clients} processes x {args.batch:,}-sample batches, to the last flush()",
                sink["rate"], "samples/s", TARGET_INGEST, "higher",
                note=(
                    f"{sink['stored']:,} of {sink['sent']:,} stored in {sink['seconds']} s (to the last flush()); "
                    f"with close() {sink['with_close_s']} s = {sink['rate_with_close']:,}/s; search index {sink['search']}"
                ),
                **sink,
            )
        )  # fmt: skip
    return rows


def run(args: argparse.Namespace) -> list[dict]:
    if args.ingest_only:
        return run_ingest_only(args)
    if args.quick:
        args.samples = 50_000
        args.ingest_batches = min(args.ingest_batches, 5)
    shape = Shape(args.samples)
    n = shape.total
    size = f"{n:,}-sample run ({shape.prompts:,} prompts x {shape.steps} steps, {shape.groups} groups of {shape.n})"
    rows: list[dict] = []
    details: dict = {"shape": size}
    with bench_database(keep=args.keep_db) as fx:
        from django.db import connection
        from django.utils import timezone

        from webapp.runs.models import Run

        now = timezone.now()
        big = Run.objects.create(
            project=fx.project, name="rollouts-big", kind=Run.EXTERNAL, status=Run.Status.SUCCEEDED,
            started_at=now, finished_at=now, created_by=fx.user,
        )  # fmt: skip
        print(f"loading the {size} ({uptime()})", flush=True)
        load = load_big_run(big.id, shape, args.samples, args.loaders, fast=args.fast_load)
        print(f"loaded in {load['seconds']} s = {load['rate']:,} samples/s ({uptime()})", flush=True)
        t = time.perf_counter()
        with connection.cursor() as cur:
            cur.execute("VACUUM ANALYZE")
        load["vacuum_analyze_s"] = round(time.perf_counter() - t, 1)
        details["load"] = load

        st = storage(big.id, load["zstd3_bytes_in_4_streams"], load["raw_bytes"])
        print(f"storage: {json.dumps(st)}", flush=True)
        rows.append(
            result(
                "14.3", f"completion storage vs zstd -3 ({n:,} samples)", st["ratio_column_vs_zstd"], "x",
                TARGET_STORAGE_RATIO, "lower",
                note=(
                    f"zstd frames {st['completion_frames_bytes'] / 2**20:,.1f} MiB + leftover text "
                    f"{st['completion_legacy_text_stored_bytes'] / 2**20:,.1f} MiB + {st['dictionaries']} "
                    f"dictionaries {st['dictionary_bytes'] / 2**10:,.0f} KiB ({st['rows_with_dictionary']:,} of "
                    f"{st['samples']:,} rows with one) = {st['completion_stored_bytes'] / 2**20:,.0f} MiB for "
                    f"{st['completion_text_bytes'] / 2**20:,.0f} MiB of text; zstd -3 (4 streams) "
                    f"{st['zstd3_bytes'] / 2**20:,.0f} MiB; table heap+TOAST {st['table_bytes'] / 2**20:,.0f} MiB "
                    f"({st['table_bytes'] / st['zstd3_bytes']:.2f}x, every column); indexes "
                    f"{st['indexes_bytes'] / 2**20:,.0f} MiB; compression {st['column_compression']} "
                    f"(default {st['default_toast_compression']})"
                ),
                **st,
            )
        )  # fmt: skip

        mid_step, mid_group = shape.steps // 2, shape.groups // 2
        base = f"/api/runs/{big.id}"
        paths = {
            "first_page": (f"{base}/samples/", TARGET_FIRST_PAGE_MS, "first page of samples (default order)"),
            "group": (f"{base}/samples/groups/{mid_step}/{mid_group}/", TARGET_GROUP_MS, "group view"),
            "word": (f"{base}/samples/?q={WORD_COMMON}", TARGET_WORD_MS, f"word search q={WORD_COMMON} (~2 %)"),
            "word_rare": (f"{base}/samples/?q={WORD_RARE}", TARGET_WORD_MS, f"word search q={WORD_RARE} (~0.05 %)"),
            "substring": (f"{base}/samples/?contains={quote(SUBSTRING)}", TARGET_SUBSTRING_MS,
                          f"substring search contains={SUBSTRING}"),
            "matrix": (f"{base}/prompts/", TARGET_MATRIX_MS,
                       f"prompt x step matrix ({shape.prompts:,} prompts x {shape.steps} steps)"),
        }  # fmt: skip
        with ReadmeServer(workers=4) as server:
            client = Client(server.url, fx.token)
            for key, (path, goal, label) in paths.items():
                load0 = uptime()
                first = client.request("GET", path)
                if first.status != 200:
                    raise RuntimeError(f"GET {path} -> {first.status}: {first.body[:500]!r}")
                m = timed_requests(client, path, warmup=args.warmup, repeat=args.repeat)
                m["cold_server_ms"] = first.server_ms
                m["cold_wall_ms"] = round(first.wall_ms, 1)
                body = first.json()
                m["answer"] = (
                    {"count": body.get("count"), "count_capped": body.get("count_capped"),
                     "rows": len(body.get("results", []))}
                    if isinstance(body, dict) and "results" in body else {"keys": sorted(body)[:12]}
                    if isinstance(body, dict) else {}
                )  # fmt: skip
                m["uptime"] = load0
                print(f"{key}: {path} -> {json.dumps(m)}", flush=True)
                rows.append(
                    result(
                        "14.2", f"{label}, {n:,} samples", m["server_ms"].get("median"), "ms", goal, "lower",
                        note=(
                            f"server time median of {m['requests']} warm (p90 {m['server_ms'].get('p90')}); cold "
                            f"first {m['cold_server_ms']} ms server / {m['cold_wall_ms']} ms wall; wall median "
                            f"{m['wall_ms'].get('median')} ms; {m['response_bytes']:,} bytes; answer {m['answer']}; "
                            f"{load0.split('load average:')[-1].strip()} load"
                        ),
                        path=path, **{k: v for k, v in m.items() if k != "others_cpu"}, others_cpu=m["others_cpu"],
                    )
                )  # fmt: skip
            if args.explain:
                details["explain"] = explain_slow({k: v[0] for k, v in paths.items()}, fx.token)
                for k, items in details["explain"].items():
                    for it in items[1:]:
                        print(
                            f"--- EXPLAIN {k} ({it['ms']} ms):\n{it['sql'][:600]}\n{it['plan']}", flush=True
                        )

            if not args.skip_ingest:
                api = ingest_api(server, fx, shape, args)
                api["search"] = search_catch_up(api.pop("run_ids"))
                print(f"API ingest: {json.dumps(api)}", flush=True)
                ok = not api["errors"] and api["stored"] == api["sent"]
                rows.append(
                    result(
                        "14.1", f"POST /api/runs/{{id}}/samples/, {args.clients} clients x {args.batch:,}-sample "
                        "batches, 2 KB completions", api["rate"], "samples/s", TARGET_INGEST, "higher",
                        note=(
                            f"{api['stored']:,} of {api['sent']:,} stored in {api['seconds']} s; server time per "
                            f"batch median {api['server_ms_per_batch'].get('median')} ms; {api['json_mib']} MiB JSON; "
                            f"{server.description}; beside a {n:,}-sample run; "
                            f"{api['uptime_before'].split('load average:')[-1].strip()} load"
                            + ("" if ok else f"; ERRORS {api['errors'][:2]}")
                        ),
                        **api,
                    )
                )  # fmt: skip
                if not ok:
                    rows[-1]["passed"] = False
        if not args.skip_ingest:
            sink = ingest_sink(fx, shape, args.samples, args)
            sink["search"] = search_catch_up(sink.pop("run_ids"))
            print(f"sink ingest: {json.dumps(sink)}", flush=True)
            ok = sink["stored"] == sink["sent"]
            rows.append(
                result(
                    "14.1", f"DbSink.log_samples, {args.clients} processes x {args.batch:,}-sample batches, "
                    "to the last flush()", sink["rate"], "samples/s", TARGET_INGEST, "higher",
                    note=(
                        f"{sink['stored']:,} of {sink['sent']:,} stored in {sink['seconds']} s (per process "
                        f"{sink['per_process_s']}); with close() (the run's search vectors) {sink['with_close_s']} s; "
                        "normalize() in the trainer's thread included; "
                        f"{sink['uptime_before'].split('load average:')[-1].strip()} load"
                    ),
                    **sink,
                )
            )  # fmt: skip
            if not ok:
                rows[-1]["passed"] = False
        rows.append(
            result(
                "14.2", f"fixture load through record_rows ({args.loaders} processes, one step per batch)",
                load["rate"], "samples/s", None, "higher",
                note=(
                    f"{n:,} samples in {load['seconds']} s; VACUUM ANALYZE {load['vacuum_analyze_s']} s"
                    + (f"; GIN indexes dropped for the load, then built in {load['index_build_s']} s" if load["fast_load"] else "")
                ), **load,
            )
        )  # fmt: skip

    if not args.skip_trackio:
        print(f"Trackio: logging {args.trackio_samples or n:,} traces ({uptime()})", flush=True)
        tr = trackio_side(args, args.samples)
        print(f"Trackio: {json.dumps(tr)}", flush=True)
        details["trackio"] = tr
        for key, label, _goal in (
            ("first_page", "first page (get_traces, limit 50, newest first)", TARGET_FIRST_PAGE_MS),
            ("word", f"search={WORD_COMMON}", TARGET_WORD_MS),
            ("word_rare", f"search={WORD_RARE}", TARGET_WORD_MS),
            ("substring", f"search={SUBSTRING}", TARGET_SUBSTRING_MS),
        ):
            q = (tr.get("queries") or {}).get(key)
            rows.append(
                result(
                    "14.4", f"Trackio {label}, {tr.get('logged', 0):,} traces", q and q["median_ms"], "ms", None,
                    "lower",
                    note=(
                        f"wall time of POST /api/get_traces on trackio.show()'s server, median of {args.repeat} "
                        f"warm; cold {q['cold_ms']} ms; {q['rows']} rows, {q['bytes']:,} bytes"
                        if q else f"not measured: {tr.get('error', '?')[:300]}"
                    ),
                    **(q or {}),
                )
            )  # fmt: skip
        if tr.get("logged"):
            rows.append(
                result(
                    "14.4", f"Trackio logging {tr['logged']:,} traces (trackio.log of a list per step)",
                    round(tr["logged"] / tr["log_seconds"]), "samples/s", None, "higher",
                    note=f"{tr['log_seconds']} s; its SQLite {tr.get('db_bytes')} bytes, directory {tr.get('dir_bytes')} bytes",
                )
            )  # fmt: skip
    for r in rows:
        r["details"].setdefault("context", details["shape"])
    rows[0]["details"]["run_details"] = details
    return rows


if __name__ == "__main__":
    sys.exit(cli("orlab bench 14: rollout samples", run, configure))
