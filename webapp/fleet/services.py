"""Writes of the worker registry: a worker's report (upserted per worker name), its clean shutdown,
and the record of what a launch was checked against."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.utils import timezone

from webapp.fleet.models import LaunchCheck, WorkerReport


def report_upsert(
    *,
    name: str,
    host: str,
    queues: Sequence[str],
    slots: int,
    gpus: Sequence[Mapping[str, Any]] = (),
    visible_gpus: int | None = None,
    packages: Mapping[str, str | None] | None = None,
    catalogue: Sequence[Mapping[str, Any]] = (),
    notes: Sequence[str] = (),
    started_at: datetime | None = None,
) -> WorkerReport:
    """Store a worker's report as its current state. ``packages`` maps torch/vllm/deepspeed to a
    version string ("" when importable but of unknown version, None or absent when not importable)."""
    packages = dict(packages or {})
    now = timezone.now()
    defaults = {
        "host": host,
        "queues": sorted(set(queues)),
        "slots": max(1, int(slots)),
        "gpus": [dict(g) for g in gpus],
        "visible_gpus": len(gpus) if visible_gpus is None else int(visible_gpus),
        "torch_version": packages.get("torch") or "",
        "has_vllm": packages.get("vllm") is not None,
        "vllm_version": packages.get("vllm") or "",
        "has_deepspeed": packages.get("deepspeed") is not None,
        "deepspeed_version": packages.get("deepspeed") or "",
        "catalogue": [dict(e) for e in catalogue],
        "notes": list(notes),
        "reported_at": now,
        "stopped_at": None,
    }
    if started_at is not None:
        defaults["started_at"] = started_at
    report, _ = WorkerReport.objects.update_or_create(
        name=name, defaults=defaults, create_defaults={"started_at": now, **defaults}
    )
    return report


def report_stopped(name: str) -> None:
    """A worker shut down cleanly: its report is stale at once (no launch is checked against it)."""
    WorkerReport.objects.filter(name=name, stopped_at__isnull=True).update(stopped_at=timezone.now())


def launch_check_record(run, *, queue: str, workers: Sequence[str]) -> LaunchCheck:
    """The newest check of the run's config (a resume checks again and replaces the launch's)."""
    check, _ = LaunchCheck.objects.update_or_create(
        run=run, defaults={"queue": queue, "workers": list(workers)}
    )
    return check
