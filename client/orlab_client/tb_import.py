"""``orlab-client import-tb LOGDIR --project P``: TensorBoard event files into orlab.

Every directory under LOGDIR that holds event files (``*tfevents*``) is one run, named by its path
relative to LOGDIR. Its files are streamed in name order (their names start with the time they were
opened) through the tensorboard package's own reader (``RawEventFileLoader`` with the read-time
migrations ``EventFileLoader`` applies: ``data_compat`` and ``dataclass_compat``), every record, no
reservoir sampling. Scalars become metrics (key = tag, with the event's step and wall time), text
summaries become samples (``prompt`` = the tag, ``completion`` = the text); other plugins
(histograms, images, hparams, ...) are counted and skipped.

Memory stays bounded: points and samples go out in batches as they are read. Re-importing is
idempotent: the run is found again by its source (``config.tensorboard.source``, the run
directory's absolute path), metrics are unique per (run, key, step) on the server and samples carry
a client key derived from (tag, step, wall time, index); a log directory that grew since (training
went on) adds only what is new. Needs the ``tensorboard`` extra: ``pip install "orlab-client[tensorboard]"``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from orlab_client.client import Client, OrlabError

POINTS_PER_REQUEST = 5_000
SAMPLES_PER_REQUEST = 200
RECORD_OVERHEAD = 16  # a TFRecord's length (8), its CRC (4) and the data's CRC (4)


@dataclass
class RunResult:
    name: str
    run_id: int
    created: bool
    points: int = 0
    samples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def _tensorboard():
    try:
        from tensorboard import data_compat, dataclass_compat
        from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
        from tensorboard.compat.proto import event_pb2
        from tensorboard.util import tensor_util
    except ImportError:
        raise SystemExit(
            'orlab-client import-tb needs the tensorboard package: pip install "orlab-client[tensorboard]"'
        ) from None
    return RawEventFileLoader, event_pb2, data_compat, dataclass_compat, tensor_util


def find_runs(logdir: Path) -> list[tuple[str, list[Path]]]:
    """(run name, its event files in name order) for each directory holding event files."""
    logdir = logdir.resolve()
    runs = []
    for folder, _dirs, files in sorted(os.walk(logdir)):
        events = sorted(Path(folder) / f for f in files if "tfevents" in f)
        if events:
            rel = Path(folder).relative_to(logdir).as_posix()
            runs.append((logdir.name if rel == "." else rel, events))
    return runs


def iter_values(
    files: list[Path], on_bytes: Callable[[int], None]
) -> Iterator[tuple[str, float, int, str, object]]:
    """(plugin, wall_time, step, tag, value) of every summary value of ``files``, in order. A tag's
    plugin is remembered from the first value that names it (later ones may not repeat it)."""
    RawEventFileLoader, event_pb2, data_compat, dataclass_compat, tensor_util = _tensorboard()
    initial_metadata: dict = {}  # dataclass_compat's per-run state, as EventFileLoader keeps it
    plugins: dict[str, str] = {}
    for path in files:
        for record in RawEventFileLoader(str(path)).Load():
            on_bytes(len(record) + RECORD_OVERHEAD)
            event = data_compat.migrate_event(event_pb2.Event.FromString(record))
            for ev in dataclass_compat.migrate_event(event, initial_metadata):
                if not ev.HasField("summary"):
                    continue
                for value in ev.summary.value:
                    plugin = value.metadata.plugin_data.plugin_name or plugins.get(value.tag, "")
                    if plugin:
                        plugins.setdefault(value.tag, plugin)
                    if plugin in ("scalars", "text") and value.HasField("tensor"):
                        data = tensor_util.make_ndarray(value.tensor)
                    else:
                        data = None
                    yield (
                        plugin or value.WhichOneof("value") or "unknown",
                        ev.wall_time,
                        ev.step,
                        value.tag,
                        data,
                    )


def _text(data) -> str:
    items = data.reshape(-1).tolist() if getattr(data, "ndim", 0) else [data.item()]
    return "\n".join(i.decode("utf-8", "replace") if isinstance(i, bytes) else str(i) for i in items)


def _find_or_create(client: Client, project: int, name: str, source: str) -> tuple[int, bool, str]:
    query = urlencode(
        {
            "project": project,
            "kind": "external",
            "config.tensorboard.source": json.dumps(source),
            "ordering": "id",
        }
    )
    found = client.request("GET", f"/api/runs/?{query}")["results"]
    if found:
        return found[0]["id"], False, found[0]["status"]
    body = {
        "project": project,
        "name": name,
        "kind": "external",
        "config": {"tensorboard": {"source": source}},
        "tags": ["tensorboard"],
    }
    data = client.request("POST", "/api/runs/", body)
    return data["id"], True, data.get("status", "")


def import_run(
    client: Client, project: int, name: str, files: list[Path], on_bytes: Callable[[int], None]
) -> RunResult:
    source = str(files[0].parent.resolve())
    run_id, created, status = _find_or_create(client, project, name, source)
    result = RunResult(name=name, run_id=run_id, created=created)
    points: list[dict] = []
    samples: list[dict] = []

    def send_points():
        if points:
            client.request("POST", f"/api/runs/{run_id}/metrics/", points)
            result.points += len(points)
            points.clear()

    def send_samples():
        if samples:
            client.request("POST", f"/api/runs/{run_id}/samples/", {"samples": samples})
            result.samples += len(samples)
            samples.clear()

    for plugin, wall, step, tag, data in iter_values(files, on_bytes):
        if step < 0 or plugin not in ("scalars", "text") or data is None:
            result.skipped[plugin] = result.skipped.get(plugin, 0) + 1
            continue
        if plugin == "scalars":
            value = float(data)
            points.append(
                {
                    "key": tag[:255],
                    "step": int(step),
                    "value": value if math.isfinite(value) else None,
                    "wall_time": wall,
                }
            )
            if len(points) >= POINTS_PER_REQUEST:
                send_points()
        else:
            key = hashlib.sha256(f"{tag}\0{step}\0{wall!r}".encode()).hexdigest()[:40]
            samples.append(
                {"step": int(step), "prompt": tag, "completion": _text(data), "client_key": f"tb:{key}",
                 "extra": {"tensorboard_tag": tag}}
            )  # fmt: skip
            if len(samples) >= SAMPLES_PER_REQUEST:
                send_samples()
    send_points()
    send_samples()
    if status not in ("succeeded", "failed", "cancelled"):
        try:
            client.request("POST", f"/api/runs/{run_id}/finish/", {"status": "succeeded"})
        except OrlabError as exc:
            if not (exc.status == 400 and "status" in exc.errors):
                raise
    return result


class _Progress:
    """tqdm over the bytes of all event files when tqdm is there, else a line per run."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="B", unit_scale=True, desc="import-tb", file=sys.stderr)
            except ImportError:
                pass

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def import_logdir(
    client: Client, logdir: str | os.PathLike, project: int, *, progress: bool = True
) -> list[RunResult]:
    logdir = Path(logdir)
    if not logdir.is_dir():
        raise ValueError(f"{logdir} is not a directory")
    _tensorboard()
    runs = find_runs(logdir)
    if not runs:
        raise ValueError(f"no TensorBoard event files (*tfevents*) under {logdir}")
    bar = _Progress(sum(f.stat().st_size for _, files in runs for f in files), progress)
    results = []
    try:
        for name, files in runs:
            result = import_run(client, project, name, files, bar.update)
            results.append(result)
            skipped = ", ".join(f"{n} {k}" for k, n in sorted(result.skipped.items()))
            bar.note(
                f"{'created' if result.created else 'updated'} run {result.run_id} {name!r}: "
                f"{result.points} points, {result.samples} samples"
                + (f" (skipped: {skipped})" if skipped else "")
            )
    finally:
        bar.close()
    return results
