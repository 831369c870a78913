from __future__ import annotations

import json
import logging
import math
import os
import tarfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import requests

log = logging.getLogger("orlab_client")

DEFAULT_SPOOL = Path(os.environ.get("ORLAB_SPOOL_DIR", Path.home() / ".orlab" / "spool"))
MAX_POINTS_PER_REQUEST = 50_000
MAX_SAMPLES_PER_REQUEST = 10_000  # the server's limit per POST /api/runs/{id}/samples/


class OrlabError(Exception):
    """The server refused a request (4xx): retrying will not help. ``errors`` has its field errors."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        self.errors = body.get("errors", {}) if isinstance(body, dict) else {}
        super().__init__(f"HTTP {status}: {body}")


class AuthError(OrlabError):
    """The server refused the API token (401): a wrong or revoked ``ORLAB_TOKEN``."""

    def __init__(self, status: int, body: Any):
        super().__init__(status, body)
        detail = body.get("detail", body) if isinstance(body, dict) else body
        self.args = (f"orlab refused the API token (HTTP {status}: {detail}); check ORLAB_TOKEN",)


class Unreachable(Exception):
    """The server could not be reached (connection error, timeout or 5xx) after every retry."""


class Client:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        spool_dir: str | os.PathLike | None = None,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.5,
    ):
        self.url = (url or os.environ.get("ORLAB_URL", "http://127.0.0.1:8000")).rstrip("/")
        token = token or os.environ.get("ORLAB_TOKEN")
        if not token:
            raise ValueError("an API token is needed: Client(url, token=...) or ORLAB_TOKEN")
        self.spool_dir = Path(spool_dir or os.environ.get("ORLAB_SPOOL_DIR") or DEFAULT_SPOOL)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._session = requests.Session()
        self._session.headers.update({"Authorization": f"Token {token}", "Content-Type": "application/json"})

    # --- HTTP with retries -----------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, *, retries: int | None = None) -> Any:
        """JSON request with exponential backoff on connection errors, timeouts and 5xx.
        Raises OrlabError on 4xx, Unreachable when every try failed."""
        data = None if body is None else json.dumps(body, allow_nan=False)
        return self._with_retries(
            method,
            path,
            lambda: self._session.request(method, self.url + path, data=data, timeout=self.timeout),
            retries,
        )

    def _with_retries(self, method: str, path: str, send, retries: int | None = None) -> Any:
        """Call ``send()`` (one HTTP try returning a response) with exponential backoff on connection
        errors, timeouts and 5xx; the JSON body of the first answer below 400, OrlabError on 4xx."""
        retries = self.retries if retries is None else retries
        last: Exception | None = None
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                resp = send()
            except requests.RequestException as exc:
                last = exc
                continue
            if resp.status_code >= 500:
                last = Unreachable(f"HTTP {resp.status_code} from {path}")
                continue
            body_out = resp.json() if resp.content else None
            if resp.status_code == 401:
                raise AuthError(resp.status_code, body_out)
            if resp.status_code >= 400:
                raise OrlabError(resp.status_code, body_out)
            return body_out
        raise Unreachable(f"{method} {path}: {last}") from last

    # --- runs --------------------------------------------------------------------------------------
    def create_run(
        self,
        *,
        project: int,
        name: str,
        config: dict | None = None,
        group: str = "",
        tags: list[str] | None = None,
        flush_interval: float = 1.0,
    ) -> Run:
        """Create a run of kind ``external`` (it trains here, orlab only records it)."""
        body = {"project": project, "name": name, "kind": "external", "config": config or {}, "group": group}
        body["tags"] = tags or []
        data = self.request("POST", "/api/runs/", body)
        return Run(self, data["id"], flush_interval=flush_interval)

    def run(self, run_id: int, *, flush_interval: float = 1.0) -> Run:
        """Attach to an existing run (e.g. a restarted training process)."""
        return Run(self, run_id, flush_interval=flush_interval)

    # --- the offline spool -------------------------------------------------------------------------
    def spool_path(self, run_id: int) -> Path:
        host = self.url.split("://", 1)[-1].replace("/", "_").replace(":", "_")
        return self.spool_dir / host / f"run-{run_id}.jsonl"

    def spooled_files(self) -> list[Path]:
        host = self.url.split("://", 1)[-1].replace("/", "_").replace(":", "_")
        return sorted((self.spool_dir / host).glob("run-*.jsonl"))

    def sync(self) -> dict[str, int]:
        """Send every spooled record in order. A file is deleted only once all of it was accepted;
        re-sending is harmless (the server skips what it already has)."""
        sent = files = 0
        for path in self.spooled_files():
            records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            for record in records:
                self._send_record(record)
                sent += 1
            path.unlink()
            files += 1
        return {"files": files, "records": sent}

    def pack_checkpoint(self, run_id: int, step: int, directory: str | os.PathLike) -> Path:
        """A tar file of ``directory`` in the spool folder (links followed: a Hugging Face cache
        folder links to its blobs, and orlab accepts files and folders only)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"log_checkpoint takes the local folder of a checkpoint; {directory} is not one")
        out = self.spool_path(run_id).parent / "checkpoints"
        out.mkdir(parents=True, exist_ok=True)
        final = out / f"run-{run_id}-step-{step}-{uuid.uuid4().hex[:8]}.tar"
        partial = final.with_name(final.name + ".partial")
        try:
            with tarfile.open(partial, "w", dereference=True) as tar:
                tar.add(directory, arcname=".")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.rename(final)  # a spooled record never names a half-written archive
        return final

    def upload_checkpoint(self, run_id: int, body: dict) -> None:
        """POST the archive of a checkpoint record as a tar body (streamed from disk), then delete it.
        A missing archive was sent already (a re-sent spool record)."""
        if "archive" not in body:
            # spooled by an older client, which sent paths: orlab takes uploads only now
            log.warning("dropping a spooled checkpoint record of step %s that names a path", body.get("step"))
            return
        archive = Path(body["archive"])
        if not archive.exists():
            return
        params = {"step": str(body["step"])}
        if body.get("metrics"):
            params["metrics"] = json.dumps(body["metrics"], allow_nan=False)
        try:
            self._send_file(f"/api/runs/{run_id}/checkpoints/", archive, params)
        except OrlabError:
            archive.unlink(missing_ok=True)  # refused for good: retrying cannot help
            raise
        archive.unlink(missing_ok=True)

    def _send_file(self, path: str, archive: Path, params: dict) -> Any:
        def send():
            with open(archive, "rb") as f:  # a file object: requests streams it with its length
                return self._session.post(
                    self.url + path,
                    params=params,
                    data=f,
                    headers={"Content-Type": "application/x-tar"},
                    timeout=(self.timeout, max(self.timeout, 300.0)),
                )

        return self._with_retries("POST", path, send)

    def _send_record(self, record: dict) -> None:
        run_id, kind, body = record["run"], record["type"], record["body"]
        if kind == "checkpoint":
            self.upload_checkpoint(run_id, body)
            return
        paths = {
            "metrics": "metrics",
            "samples": "samples",
            "evaluation": "evaluations",
            "checkpoint": "checkpoints",
            "finish": "finish",
        }
        try:
            self.request("POST", f"/api/runs/{run_id}/{paths[kind]}/", body)
        except OrlabError as exc:
            if kind == "finish" and exc.status == 400 and "status" in exc.errors:
                return  # already finished: the record did its job earlier
            raise


class Run:
    """A run being logged. ``log`` only appends to memory; a background thread sends batches."""

    def __init__(self, client: Client, run_id: int, *, flush_interval: float = 1.0):
        self.client = client
        self.id = run_id
        self.flush_interval = flush_interval
        self._lock = threading.Lock()
        self._points: list[dict] = []
        self._records: list[tuple[str, Any]] = []  # samples / checkpoints, in order
        self._offline = False
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"orlab-run-{run_id}", daemon=True)
        self._thread.start()

    # --- logging API -------------------------------------------------------------------------------
    def log(self, step: int, metrics: dict[str, float], wall_time: float | None = None) -> None:
        wall = time.time() if wall_time is None else wall_time
        points = [
            {"key": k, "step": int(step), "value": _json_number(v), "wall_time": wall}
            for k, v in metrics.items()
        ]
        with self._lock:
            self._points.extend(points)

    def log_samples(self, step: int, samples: list[dict]) -> None:
        """Rollouts at ``step``: dicts of the sample record (``prompt``, ``completion``, and any of
        ``reward``, ``advantage``, ``verdict``, ``length``, ``truncated``, ``group_index``,
        ``member_index``, ``finish_reason``, ``rewards``, ``extracted_answer``, ``expected_answer``,
        ``data_source``, ``phase``, ``checkpoint_step``, ``attempt``, ``group_status``, ``tokens``,
        ``extra``; other keys land in ``extra``). NaN/inf become null, numpy values plain numbers;
        each sample gets a client key, so a re-sent batch is stored once. Sent in requests of at
        most MAX_SAMPLES_PER_REQUEST."""
        batch = uuid.uuid4().hex
        rows = [
            {"step": int(step), "client_key": f"{batch}:{i}", **_sample_json(s)}
            for i, s in enumerate(samples)
        ]
        with self._lock:
            for i in range(0, len(rows), MAX_SAMPLES_PER_REQUEST):
                self._records.append(("samples", {"samples": rows[i : i + MAX_SAMPLES_PER_REQUEST]}))

    def log_evaluation(
        self, step: int, benchmark: str, metrics: dict[str, float], protocol: dict | None = None
    ) -> None:
        """An evaluation the script ran itself at ``step`` (e.g. pass@1 on a held-out set). One per
        (step, benchmark): logging it again replaces it."""
        body = {
            "step": int(step),
            "benchmark": benchmark,
            # numbers, and "<name>_ci" intervals [lo, hi] (trainers.eval reports both)
            "metrics": {
                k: [_json_number(x) for x in v] if isinstance(v, list | tuple) else _json_number(v)
                for k, v in metrics.items()
            },
            "protocol": dict(protocol or {}),
        }
        with self._lock:
            self._records.append(("evaluation", body))

    def log_checkpoint(
        self, step: int, directory: str | os.PathLike, metrics: dict[str, float] | None = None
    ) -> None:
        """Upload checkpoint ``step``: the files of the local folder ``directory``. They are packed at
        once into a tar file in the spool folder (so the script may overwrite or delete the folder
        right after), which the background thread uploads into orlab's artifact store and then
        deletes (kept, and sent by ``sync``, while orlab is unreachable). orlab never takes a path:
        its workers only read files it stores itself."""
        archive = self.client.pack_checkpoint(self.id, int(step), directory)
        body = {
            "step": int(step),
            "archive": str(archive),
            "metrics": {k: _json_number(v) for k, v in (metrics or {}).items()},
        }
        with self._lock:
            self._records.append(("checkpoint", body))

    def flush(self) -> None:
        """Send (or spool) everything logged so far, from the calling thread."""
        with self._lock:
            points, records = self._points, self._records
            self._points, self._records = [], []
        for i in range(0, len(points), MAX_POINTS_PER_REQUEST):
            self._deliver("metrics", points[i : i + MAX_POINTS_PER_REQUEST])
        for kind, body in records:
            self._deliver(kind, body)

    def finish(self) -> None:
        self._end({"status": "succeeded"})

    def fail(self, error: str = "") -> None:
        self._end({"status": "failed", "error": error})

    @property
    def offline(self) -> bool:
        """True once something had to be spooled (run ``orlab-client sync`` later, or call sync())."""
        return self._offline

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.finish()
        else:
            self.fail(f"{exc_type.__name__}: {exc}")

    # --- internals ---------------------------------------------------------------------------------
    def _end(self, body: dict) -> None:
        self._closed.set()
        self._thread.join(timeout=60)
        self.flush()
        self._deliver("finish", body)

    def _deliver(self, kind: str, body: Any) -> None:
        record = {"run": self.id, "type": kind, "body": body}
        if not self._offline:
            try:
                self.client._send_record(record)
                return
            except Unreachable as exc:
                log.warning("orlab unreachable (%s); spooling to %s", exc, self.client.spool_path(self.id))
                self._offline = True
        self._spool(record)

    def _spool(self, record: dict) -> None:
        path = self.client.spool_path(self.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _loop(self) -> None:
        while not self._closed.wait(self.flush_interval):
            try:
                self.flush()
                if self._offline:
                    self._try_recover()
            except OrlabError:
                log.exception("orlab refused a batch of run %s", self.id)
            except Exception:
                log.exception("orlab client background flush failed")

    def _try_recover(self) -> None:
        """Back online? Send the spool (in order), then go on sending directly."""
        try:
            self.client.request("GET", f"/api/runs/{self.id}/", retries=0)
        except Unreachable:
            return
        path = self.client.spool_path(self.id)
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    self.client._send_record(json.loads(line))
            path.unlink()
        self._offline = False


def _json_number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


_JSON_AS_IS = frozenset({str, int, bool, type(None)})


def _sample_json(value, depth: int = 0):
    """A sample as JSON can carry it: non-finite floats as null, numpy scalars/arrays (anything with
    ``tolist``) as plain numbers and lists, tuples as lists; ``reference`` (an older name) as
    ``expected_answer``."""
    if depth == 0 and isinstance(value, dict) and "reference" in value and "expected_answer" not in value:
        value = {**value, "expected_answer": value["reference"]}
        del value["reference"]
    if type(value) is dict:
        # the common sample, a flat dict of str / int / float: one pass without a call per value
        # (this function was a third of a trainer's CPU when logging 1,000-sample batches)
        out = {}
        for k, v in value.items():
            t = type(v)
            if t in _JSON_AS_IS:
                out[k if type(k) is str else str(k)] = v
            elif t is float:
                out[k if type(k) is str else str(k)] = v if v - v == 0.0 else None  # inf - inf, nan: nan
            else:
                out[k if type(k) is str else str(k)] = _sample_json(v, depth + 1)
        return out
    if isinstance(value, bool) or value is None or isinstance(value, int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist") and not isinstance(value, dict | list | tuple):  # numpy
        return _sample_json(value.tolist(), depth + 1)
    if isinstance(value, dict):
        return {str(k): _sample_json(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sample_json(v, depth + 1) for v in value]
    return value
