"""Run a trainer on two gloo ranks on the CPU, as the worker's rank entry does (workers/rank_entry.py):
every rank joins the process group and trains through a RankZeroSink; rank 0 holds a real (recording)
sink. Returns what rank 0's sink saw. A helper for the multi-rank trainer tests, not a test itself."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp

from trainers.base import MemorySink, get_spec
from trainers.common import distributed
from trainers.common.deepspeed_glue import free_port


class RecordingSink(MemorySink):
    """A MemorySink that also lists each checkpoint folder when the checkpoint is recorded (so a test
    sees that every rank had finished writing), and counts the recordings per step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.listings: list[list[str]] = []

    def save_checkpoint(self, step, directory, metrics=None):
        self.listings.append(sorted(p.name for p in Path(directory).iterdir()))
        super().save_checkpoint(step, directory, metrics)


def summarise(sink: RecordingSink, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a test compares, JSON-safe: metrics by name and step, the checkpoints recorded in order."""
    return {
        "metrics": {k: {str(s): v for s, v in series.items()} for k, series in sink.metrics.items()},
        "checkpoints": [[s, str(p)] for s, p, _ in sink.checkpoints],
        "listings": sink.listings,
        "summary": summary or {},
    }


def _rank(
    rank: int,
    port: int,
    kind: str,
    config: dict,
    workdir: str,
    resume: str | None,
    out: str,
    stop: int | None,
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE="2",
    )  # fmt: skip
    distributed.init(timeout_s=120)
    inner = (
        RecordingSink(workdir=Path(workdir), resume_from=Path(resume) if resume else None)
        if rank == 0
        else None
    )
    if inner is not None:
        inner.stop_after_step = stop  # rank 0's sink asks to stop; RankZeroSink tells every rank
    spec = get_spec(kind)
    try:
        summary = spec.train_fn()(spec.validate(config), distributed.RankZeroSink(inner))
        if inner is not None:
            Path(out).write_text(json.dumps(summarise(inner, summary), default=str))
    except BaseException:
        distributed.close(synchronise=False)  # the other rank may never reach the closing barrier
        raise
    distributed.close()


def run_two_ranks(
    kind: str, config: dict, workdir: Path, resume: Path | None = None, stop_after_step: int | None = None
) -> dict[str, Any]:
    """Train ``kind`` on 2 spawned gloo ranks; rank 0's :func:`summarise`. ``stop_after_step``: rank 0's
    sink asks to stop once that step is logged (as a cancel does)."""
    out = workdir.parent / f"{workdir.name}-rank0.json"
    args = (
        free_port(),
        kind,
        config,
        str(workdir),
        str(resume) if resume else None,
        str(out),
        stop_after_step,
    )
    mp.start_processes(_rank, args=args, nprocs=2, start_method="spawn")
    return json.loads(out.read_text())


def run_one_process(kind: str, config: dict, workdir: Path, resume: Path | None = None) -> dict[str, Any]:
    """The same trainer in this process (a world of one), summarised the same way."""
    spec = get_spec(kind)
    sink = RecordingSink(workdir=workdir, resume_from=resume)
    summary = spec.train_fn()(spec.validate(config), sink)
    return json.loads(json.dumps(summarise(sink, summary), default=str))
