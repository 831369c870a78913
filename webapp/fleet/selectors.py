"""Reads of the worker registry. Only fresh reports count: reported within ORLAB_WORKER_STALE_AFTER
seconds by a worker that has not shut down. The fleet is small (tens of workers), so queue membership
is filtered in Python, which also works on the embedded SQLite database (no JSON containment there)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from webapp.fleet.models import LaunchCheck, WorkerReport


def fresh_reports(queue: str | None = None) -> list[WorkerReport]:
    """Fresh reports, by worker name; only those of workers consuming ``queue`` when given."""
    cutoff = timezone.now() - timedelta(seconds=settings.ORLAB_WORKER_STALE_AFTER)
    reports = WorkerReport.objects.filter(reported_at__gte=cutoff, stopped_at__isnull=True).order_by("name")
    return [r for r in reports if queue is None or r.consumes(queue)]


def queue_models(reports: Iterable[WorkerReport]) -> list[dict[str, Any]]:
    """The catalogue entries of ``reports`` merged by name (sorted), each with ``workers``: the names
    of the workers that have it."""
    merged: dict[str, dict[str, Any]] = {}
    for report in reports:
        for entry in report.catalogue:
            item = merged.setdefault(entry["name"], {**entry, "workers": []})
            item["workers"].append(report.name)
    return [merged[name] for name in sorted(merged)]


def fleet_by_queue(queues: Iterable[str] = ()) -> list[dict[str, Any]]:
    """[{queue, workers, models}] for ``queues`` plus every queue a fresh worker consumes, in order:
    the given queues first. A queue without workers has empty lists (nothing has reported)."""
    reports = fresh_reports()
    names = list(dict.fromkeys([*queues, *sorted({q for r in reports for q in r.queues})]))
    out = []
    for queue in names:
        members = [r for r in reports if r.consumes(queue)]
        out.append({"queue": queue, "workers": members, "models": queue_models(members)})
    return out


def launch_check_for(run) -> LaunchCheck | None:
    return LaunchCheck.objects.filter(run=run).first()


def launch_check_summary(run) -> dict[str, Any] | None:
    """{queue, workers, checked} for the API's run detail; None for runs made before the registry
    (and external runs, which no worker runs)."""
    check = launch_check_for(run)
    if check is None:
        return None
    return {"queue": check.queue, "workers": check.workers, "checked": check.checked}
