"""Issue 11 (point 11): peak memory of the process handling an upload, for hostile files.

Target: peak RSS <= 512 MB above the process's idle size for any file up to the upload limit
(webapp.datasets.services.max_upload_bytes, 1 GB by default).

Every file goes through the real server path: a multipart POST /api/datasets/ to gunicorn (one
worker process, one thread) on a throw-away database (bench/common.py). Before each upload the
worker's peak RSS is reset (/proc/<pid>/clear_refs, "5") and its RSS read (idle); after the answer
its VmHWM is the peak. A file above the in-request size (8 MB) is only stored by the web process
(202); its import is what a Celery worker runs (workers.tasks.import_dataset), measured here in a
fresh subprocess the same way (idle = RSS after Django and pyarrow are loaded, peak = VmHWM).

    python -m bench.bench_upload_memory [--big-mb 1024] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

TARGET_MB = 512
ROOT = Path(__file__).resolve().parent.parent
# Our own database and Redis db: other engineers' benchmarks may run at the same time.
os.environ.setdefault("ORLAB_BENCH_DB", "orlab_bench_upload")
os.environ.setdefault("ORLAB_BENCH_BROKER", "redis://127.0.0.1:6379/5")

from bench.common import _TMP, PY, Server, bench_database, bench_env, machine_info  # noqa: E402

GOOD = {"prompt": "What is 2 plus 2?", "chosen": "It is 4.", "rejected": "It is 5."}


# --- hostile files ----------------------------------------------------------------------------------


def _repeat(path: Path, head: bytes, fill: bytes, n: int, tail: bytes) -> Path:
    """head + fill * n + tail, written a MB at a time."""
    block = fill * max(1, (1 << 20) // len(fill))
    with open(path, "wb") as f:
        f.write(head)
        left = n
        while left > 0:
            k = min(left, len(block) // len(fill))
            f.write(block[: k * len(fill)])
            left -= k
        f.write(tail)
    return path


def build(kind: str, folder: Path, big: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = folder / kind
    if kind == "deep.json":  # the finding: 200 KB drove a web worker to 19.6 GB
        return _repeat(p, b"", b"[", 100_000, b"]" * 100_000)
    if kind == "deep-line.jsonl":
        return _repeat(
            p, json.dumps(GOOD).encode() + b'\n{"prompt": ', b"[", 100_000, b"]" * 100_000 + b"}\n"
        )
    if kind == "huge-line.jsonl":  # one line of `big` bytes, no newline
        return _repeat(p, b'{"prompt": "p", "rejected": "r", "chosen": "', b"a", big - 200, b'"}')
    if kind == "huge-item.json":
        return _repeat(p, b'[{"prompt": "p", "rejected": "r", "chosen": "', b"a", big - 200, b'"}]')
    if kind == "huge-field.csv":  # one quoted field spanning many lines
        return _repeat(p, b'prompt,chosen,rejected\np,"', b"a" * 99 + b"\n", (big - 200) // 100, b'",r\n')
    if kind == "wide.csv":
        return _repeat(p, b"", b"c,", 1_000_000, b"c\n" + b"1," * 1_000_000 + b"1\n")
    if kind == "huge-cell.parquet":  # the finding: 10 KB holding a 300 MB cell needed 1.27 GB
        table = pa.table({"prompt": ["p"], "chosen": ["a" * 300_000_000], "rejected": ["r"]})
        pq.write_table(table, p, compression="zstd", use_dictionary=False)
        return p
    if kind == "dict-bomb.parquet":  # 4,000 rows sharing one 1 MB dictionary value: 8 GB decoded
        # Built dictionary-encoded (a plain array would take those 8 GB here).
        n = 4000
        value = pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), pa.array(["b" * (1 << 20)]))
        prompts = pa.array([f"q{i}" for i in range(n)])
        pq.write_table(
            pa.table({"prompt": prompts, "chosen": value, "rejected": value}), p, compression="zstd"
        )
        return p
    if kind == "dict-valid.parquet":  # 1,500 valid rows sharing one 1 MB chosen value: 1.5 GB to import
        n = 1500  # the drill's dictionary bomb (bench/drill/hostile_files.py)
        value = pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), pa.array(["b" * (1 << 20)]))
        table = pa.table(
            {"prompt": [f"q{i}" for i in range(n)], "chosen": value, "rejected": [f"r{i}" for i in range(n)]}
        )
        pq.write_table(table, p, compression="zstd")
        return p
    if kind == "nested-bomb.parquet":  # one row: 5,000 messages sharing one 1 MB value (5 GB decoded)
        n = 5000
        content = pa.DictionaryArray.from_arrays(pa.array([0] * n, pa.int32()), pa.array(["c" * (1 << 20)]))
        msgs = pa.StructArray.from_arrays([pa.array(["assistant"] * n), content], names=["role", "content"])
        chosen = pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), msgs)
        table = pa.table({"prompt": pa.array(["p"]), "chosen": chosen, "rejected": pa.array(["r"])})
        pq.write_table(table, p, compression="zstd")
        return p
    if kind == "null-bomb.parquet":  # one row holding a list of 40 million nulls, in about 1 KB
        n = 40_000_000
        chosen = pa.ListArray.from_arrays(pa.array([0, n], pa.int32()), pa.nulls(n, pa.string()))
        pq.write_table(
            pa.table({"prompt": ["p"], "chosen": chosen, "rejected": ["r"]}), p, compression="zstd"
        )
        return p
    if kind == "valid-40MB.jsonl":
        subprocess.run(
            [PY, "-m", "bench.pair_data", str(p), "75000"], cwd=ROOT, check=True, capture_output=True
        )
        return p
    if kind == "valid-40MB.parquet":
        src = build("valid-40MB.jsonl", folder, big)
        with open(src) as f:
            rows = [r for r in map(json.loads, f) if isinstance(r["chosen"], str)]  # one type a column
        for r in rows:
            r["tag"] = uuid.uuid4().hex  # another file than the JSONL (the duplicate check)
        pq.write_table(pa.Table.from_pylist(rows), p, row_group_size=20000)
        src.unlink()
        return p
    raise ValueError(kind)


KINDS = [
    "deep.json", "deep-line.jsonl", "huge-cell.parquet", "dict-bomb.parquet", "dict-valid.parquet", "nested-bomb.parquet", "null-bomb.parquet",
    "wide.csv", "huge-line.jsonl", "huge-item.json", "huge-field.csv", "valid-40MB.jsonl", "valid-40MB.parquet",
]  # fmt: skip


# --- the server side ------------------------------------------------------------------------------


def _status(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def _worker_pid(server: Server) -> int:
    from bench.common import _descendants

    pids = _descendants(server.proc.pid) - {server.proc.pid}
    assert len(pids) == 1, pids
    return pids.pop()


def _post(server: Server, token: str, project: int, path: Path, name: str) -> tuple[int, dict]:
    """A streamed multipart upload: the file is never held in this process's memory whole."""
    boundary = uuid.uuid4().hex
    fields = {"name": name, "kind": "preference", "project": str(project)}
    pre = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    )
    pre += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    post = f"\r\n--{boundary}--\r\n".encode()

    def body():
        yield pre
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
        yield post

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=900)
    conn.request(
        "POST", "/api/datasets/", body=body(),
        headers={"Authorization": f"Token {token}", "Content-Type": f"multipart/form-data; boundary={boundary}",
                 "Content-Length": str(len(pre) + path.stat().st_size + len(post))},
    )  # fmt: skip
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(data)
    except ValueError:
        return resp.status, {"body": data[:300].decode(errors="replace")}


def measure_request(server: Server, token: str, project: int, path: Path, name: str) -> dict:
    pid = _worker_pid(server)
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS to the current RSS
    idle = _status(pid)["VmRSS"]
    t0 = time.perf_counter()
    code, body = _post(server, token, project, path, name)
    peak = _status(pid)["VmHWM"]
    return {"http": code, "seconds": round(time.perf_counter() - t0, 2), "idle_mb": idle / 2**20,
            "peak_mb": peak / 2**20, "delta_mb": (peak - idle) / 2**20, "body": body}  # fmt: skip


# --- the worker side (a background import) --------------------------------------------------------


def _import_child(dataset_id: str, path: str) -> None:
    """In a fresh process: what the Celery worker runs for the dataset the upload created, measured."""
    from bench.common import setup_django

    setup_django()
    import pyarrow.parquet  # noqa: F401 (loaded by a worker that has imported Parquet before: idle)

    from webapp.datasets.models import Dataset
    from workers.tasks import import_dataset

    ds = Dataset.objects.get(pk=int(dataset_id))
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork and exec
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    idle = _status(os.getpid())["VmRSS"]
    t0 = time.perf_counter()
    import_dataset(ds.id, path)
    seconds = time.perf_counter() - t0
    peak = _status(os.getpid())["VmHWM"]
    ds = Dataset.objects.get(pk=ds.id)
    print(json.dumps({"seconds": round(seconds, 2), "idle_mb": idle / 2**20, "peak_mb": peak / 2**20,
                      "delta_mb": (peak - idle) / 2**20, "status": ds.status, "error": ds.error[:200],
                      "rows": ds.row_count, "file_left": Path(path).exists()}))  # fmt: skip


def measure_worker(path: Path, dataset_id: int) -> dict:
    copy = path.with_name(f"bg-{path.name}")
    os.link(path, copy)
    out = subprocess.run(
        [PY, "-m", "bench.bench_upload_memory", "--child", str(dataset_id), str(copy)],
        cwd=ROOT, env=bench_env(), capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    copy.unlink(missing_ok=True)
    if out.returncode:
        return {"error": out.stderr[-500:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- main -------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--big-mb",
        type=int,
        default=1024,
        help="size of the huge-line/item/field files (the upload limit: 1 GB)",
    )
    parser.add_argument("--only", nargs="*", default=None, help="these kinds only")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _import_child(*args.child)
        return 0
    info = machine_info()
    print(json.dumps(info))
    big = args.big_mb << 20
    folder = _TMP / "upload-memory"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    with bench_database() as fx:
        server = Server(workers=1, threads=1).start()
        try:
            # warm up: the worker has imported each format once (its libraries are part of idle)
            warm = folder / "warm.jsonl"
            warm.write_text(json.dumps(GOOD) + "\n")
            measure_request(server, fx.token, fx.project.id, warm, "warm")
            import pyarrow as pa
            import pyarrow.parquet as pq

            warm = folder / "warm.parquet"
            pq.write_table(pa.Table.from_pylist([{**GOOD, "prompt": "warm"}]), warm)
            measure_request(server, fx.token, fx.project.id, warm, "warm")
            for i, kind in enumerate(args.only or KINDS):
                path = build(kind, folder, big)
                size = path.stat().st_size
                req = measure_request(server, fx.token, fx.project.id, path, f"up{i}")
                row = {"file": kind, "bytes": size, "request": req}
                if req["http"] == 202:
                    row["worker"] = measure_worker(path, req["body"]["id"])
                path.unlink()
                rows.append(row)
                w = row.get("worker", {})
                print(
                    f"{kind:22s} {size / 2**20:9.1f} MB  request: HTTP {req['http']} +{req['delta_mb']:.0f} MB "
                    f"(idle {req['idle_mb']:.0f})  " + (
                        f"worker: {w.get('status')} +{w.get('delta_mb', 0):.0f} MB (idle {w.get('idle_mb', 0):.0f}) "
                        f"{w.get('seconds')} s, file left: {w.get('file_left')}" if w else "")
                    + f"  | {str(w.get('error') or req['body'].get('errors') or req['body'].get('status'))[:150]}",
                    flush=True,
                )  # fmt: skip
        finally:
            server.stop()
    worst = max(max(r["request"]["delta_mb"], r.get("worker", {}).get("delta_mb", 0)) for r in rows)
    print(
        f"worst peak above idle: {worst:.0f} MB (target <= {TARGET_MB} MB): {'PASS' if worst <= TARGET_MB else 'FAIL'}"
    )
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "date": dt.datetime.now(dt.UTC).isoformat(),
                                         "results": rows, "worst_delta_mb": worst}, indent=1, default=str))  # fmt: skip
    return 0 if worst <= TARGET_MB else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
