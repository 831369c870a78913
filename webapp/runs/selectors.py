"""Reads. Every query starts from the projects the user belongs to: that is the access check."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet
from django.http import Http404

from trainers.base import get_spec
from webapp.projects.selectors import project_list
from webapp.runs.models import Checkpoint, MetricSeries, Run


def run_list(*, user) -> QuerySet[Run]:
    return Run.objects.filter(project__in=project_list(user=user))


def run_get(*, user, pk) -> Run:
    try:
        return run_list(user=user).select_related("project").get(pk=int(pk))
    except (Run.DoesNotExist, ValueError, TypeError):
        raise Http404("no such run") from None


def primary_metrics(kind: str) -> tuple[str, ...]:
    try:
        return get_spec(kind).primary_metrics
    except KeyError:
        return ()


def last_values(runs: Iterable[Run], keys_by_run: dict[int, Iterable[str]] | None = None) -> dict[int, dict]:
    """{run_id: {key: last value}} for each run's primary metrics (or the given keys), in one query."""
    runs = list(runs)
    wanted = {r.id: set(keys_by_run[r.id]) if keys_by_run else set(primary_metrics(r.kind)) for r in runs}
    all_keys = set().union(*wanted.values()) if wanted else set()
    out: dict[int, dict] = {r.id: {} for r in runs}
    if not all_keys:
        return out
    rows = MetricSeries.objects.filter(run_id__in=list(wanted), key__in=all_keys).values_list(
        "run_id", "key", "last_step", "last_value"
    )
    for run_id, key, step, value in rows:
        if key in wanted[run_id]:
            out[run_id][key] = {"step": step, "value": value}
    return out


def metric_keys(run: Run) -> list[str]:
    return sorted(MetricSeries.objects.filter(run=run).values_list("key", flat=True))


def metric_keys_union(runs: Iterable[Run]) -> list[str]:
    """The keys logged by any of ``runs``, in one query."""
    return sorted(set(MetricSeries.objects.filter(run__in=list(runs)).values_list("key", flat=True)))


def checkpoint_list(run: Run) -> QuerySet[Checkpoint]:
    return Checkpoint.objects.filter(run=run).order_by("step")
