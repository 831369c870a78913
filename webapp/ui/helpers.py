"""What the page modules share: the project of a URL, a trainer spec, how durations read, query
strings, a service error as one line."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

from django.http import Http404, HttpRequest
from django.shortcuts import get_object_or_404

from trainers.base import get_spec
from webapp.datasets.models import Dataset
from webapp.errors import ServiceError
from webapp.projects.selectors import project_list

# --- helpers --------------------------------------------------------------------------------------

EXCERPT_CHARS = 240  # a prompt's excerpt in the dataset pages' lists


def _project(request: HttpRequest, pk: int):
    return get_object_or_404(project_list(user=request.user), pk=pk)


def _spec(kind: str):
    try:
        return get_spec(kind)
    except KeyError:
        return None


def format_duration(delta: timedelta | None) -> str:
    if delta is None:
        return ""
    seconds = max(delta.total_seconds(), 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def _query(params: dict) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(clean) if clean else "?"


def _error_text(exc: ServiceError) -> str:
    return exc.text()


def _datasets(user):
    return Dataset.objects.filter(project__in=project_list(user=user))


def _dataset(request: HttpRequest, pk: int, *, kind: str | None = None) -> Dataset:
    dataset = get_object_or_404(
        _datasets(request.user).select_related("project", "parent", "created_by", "source_run"), pk=pk
    )
    if kind is not None and dataset.kind != kind:
        raise Http404(f"dataset {dataset.pk} holds {dataset.kind}, not {kind}")
    return dataset
