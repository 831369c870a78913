"""What the API's resource modules share: the ?fields= of run lists, query parameters read the
API's way (a bad one is a 400 naming it), and the objects a URL names, scoped to the user's projects
(anything else is a 404)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter

from webapp.api.errors import WorkerRunConflict
from webapp.datasets.models import Dataset
from webapp.projects.models import Project
from webapp.projects.selectors import project_list
from webapp.runs import selectors, services
from webapp.runs.models import Checkpoint, Run

LIST_FIELDS = ("config",)  # what ?fields= can add to a list's runs


def list_fields(request) -> set[str]:
    """?fields=config: what a list endpoint adds to each run. A run's config can be large (up to
    256 KB), so lists leave it out unless asked; an unknown name is a 400."""
    raw = request.query_params.get("fields")
    if raw is None:
        return set()
    names = {f.strip() for f in raw.split(",")}
    if unknown := names - set(LIST_FIELDS):
        raise services.RunError(
            "invalid query",
            {"fields": [f"unknown field {sorted(unknown)[0]!r}; one of {', '.join(LIST_FIELDS)}"]},
        )
    return names


FIELDS_PARAMETER = OpenApiParameter(
    "fields",
    str,
    enum=list(LIST_FIELDS),
    description="config: include each run's config (left out of lists by default)",
)


def _bool_param(request, name: str) -> bool:
    """true/1 or false/0 (absent: false); anything else is a 400 naming the parameter."""
    raw = request.query_params.get(name)
    if raw is None:
        return False
    if raw.lower() in ("1", "true"):
        return True
    if raw.lower() in ("0", "false"):
        return False
    raise services.RunError("invalid query", {name: ["must be true or false"]})


def _int_param(request, name: str, lo: int, hi: int) -> int | None:
    """An optional integer query parameter: None when absent; given, one integer in [lo, hi] (an
    empty or repeated one is a 400: schemathesis' negative_data_rejection found both accepted)."""
    values = request.query_params.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise services.RunError("invalid query", {name: ["an integer, given once"]})
    raw = values[0]
    try:
        value = int(raw)
    except ValueError:
        raise services.RunError("invalid query", {name: ["must be an integer"]}) from None
    if not lo <= value <= hi:
        raise services.RunError("invalid query", {name: [f"must be between {lo} and {hi}"]})
    return value


def _keys_param(request) -> list[str] | None:
    raw = request.query_params.get("keys")
    return [k for k in raw.split(",") if k] if raw else None


def _resolve_project(user, project_id) -> Project:
    try:
        return project_list(user=user).get(pk=project_id)
    except Project.DoesNotExist:
        # Same answer for "does not exist" and "not yours": no probing of other teams' ids.
        raise services.RunError("unknown project", {"project": ["no such project among yours"]}) from None


def _external_run_for_write(request, pk) -> Run:
    """The run a client writes results into. Only an external run: a worker run's results come from
    its worker, and a client's write would race it (the first write of a step wins, so the worker's
    real values would be dropped). 409 Conflict: the request is well formed, the run's kind refuses it."""
    run = selectors.run_get(user=request.user, pk=pk)
    if run.kind != Run.EXTERNAL:
        raise WorkerRunConflict()
    return run


def _dataset_for(request, pk) -> Dataset:
    try:
        return Dataset.objects.filter(project__in=project_list(user=request.user)).get(pk=pk)
    except Dataset.DoesNotExist:
        raise Http404("no such dataset") from None


def _checkpoint_for(request, pk) -> Checkpoint:
    try:
        return Checkpoint.objects.select_related("run").get(
            pk=pk, run__project__in=project_list(user=request.user)
        )
    except Checkpoint.DoesNotExist:
        raise Http404("no such checkpoint") from None
