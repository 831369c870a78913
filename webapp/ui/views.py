"""The HTML pages. Thin: read through the selectors (which scope everything to the user's projects),
write through the services, and leave the live parts (charts, status) to the page's JS, which
talks to the REST API."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from urllib.parse import urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import IntegrityError, connection
from django.db.models import Count, F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Now
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from pydantic import ValidationError

from trainers.base import all_specs, get_spec
from webapp.projects import services as project_services
from webapp.projects.selectors import project_list
from webapp.runs import selectors, services
from webapp.runs.models import Run
from webapp.runs.services import RunError
from webapp.ui.forms import LaunchForm, ProjectCreateForm, preset_fill

PAGE_SIZES = (50, 100, 200, 500, 1000)
MAX_PAGE_SIZE = 1000
MAX_COMPARE = 100
# Sortable columns of the runs list: ?ordering=<name> or -<name>.
ORDERINGS = {
    "name": "name",
    "status": "status",
    "kind": "kind",
    "group": "group",
    "started": "started_at",
    "created": "created_at",
    "duration": "duration_db",
}


# --- helpers --------------------------------------------------------------------------------------


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


def format_value(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def _query(params: dict) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return "?" + urlencode(clean) if clean else "?"


def _error_text(exc: RunError) -> str:
    details = "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in exc.field_errors.items())
    return f"{exc.message} ({details})" if details else exc.message


# --- projects ---------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def project_index(request: HttpRequest) -> HttpResponse:
    form = ProjectCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = project_services.project_create(
                user=request.user,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
            )
        except IntegrityError:
            form.add_error("name", "a project with this name already exists")
        else:
            messages.success(request, f"Project {project.name} created.")
            return redirect("project", pk=project.pk)
    newest = Run.objects.filter(project=OuterRef("pk")).order_by("-created_at", "-id")
    projects = (
        project_list(user=request.user)
        .annotate(
            run_count=Count("runs", distinct=True),
            newest_run_id=Subquery(newest.values("id")[:1]),
            newest_run_name=Subquery(newest.values("name")[:1]),
            newest_run_status=Subquery(newest.values("status")[:1]),
            newest_run_at=Subquery(newest.values("created_at")[:1]),
        )
        .order_by("name")
    )
    return render(request, "ui/projects.html", {"projects": projects, "form": form})


# --- runs list ----------------------------------------------------------------------------------


def _filtered_runs(request: HttpRequest, project):
    params = request.GET
    filters = {k: params.get(k, "").strip() for k in ("status", "kind", "group", "tag", "q")}
    qs = selectors.run_list(user=request.user).filter(project=project)
    if filters["status"] in Run.Status.values:
        qs = qs.filter(status=filters["status"])
    else:
        filters["status"] = ""
    if filters["kind"]:
        qs = qs.filter(kind=filters["kind"])
    if filters["group"]:
        qs = qs.filter(group=filters["group"])
    if tag := filters["tag"]:
        qs = (
            qs.filter(tags__contains=[tag])
            if connection.vendor == "postgresql"
            else qs.filter(tags__icontains=f'"{tag}"')
        )
    if q := filters["q"]:
        qs = qs.filter(Q(name__icontains=q) | Q(group__icontains=q))
    return qs, filters


def _ordering(raw: str) -> tuple[str, list]:
    name = raw.lstrip("-")
    if name not in ORDERINGS:
        return "-created", [F("created_at").desc(), F("id").desc()]
    field = F(ORDERINGS[name])
    desc = raw.startswith("-")
    expr = field.desc(nulls_last=True) if desc else field.asc(nulls_last=True)
    return raw, [expr, F("id").desc() if desc else F("id").asc()]


def project_runs(request: HttpRequest, pk: int) -> HttpResponse:
    project = _project(request, pk)
    services.runs_mark_lost()
    qs, filters = _filtered_runs(request, project)
    ordering, order_by = _ordering(request.GET.get("ordering", ""))
    if ordering.lstrip("-") == "duration":
        qs = qs.annotate(duration_db=Coalesce(F("finished_at"), Now()) - F("started_at"))
    qs = qs.order_by(*order_by).defer("config", "traceback", "summary", "dataset_versions", "error")
    try:
        page_size = min(max(int(request.GET.get("page_size", 50)), 1), MAX_PAGE_SIZE)
    except ValueError:
        page_size = 50
    page = Paginator(qs, page_size).get_page(request.GET.get("page"))
    runs = list(page.object_list)
    last = selectors.last_values(runs)

    metric_columns: list[str] = []
    for run in runs:
        for key in selectors.primary_metrics(run.kind):
            if key not in metric_columns:
                metric_columns.append(key)
    rows = [
        {
            "run": run,
            "duration": format_duration(run.duration),
            "metrics": [
                (
                    format_value(last[run.id][k]["value"]) if k in last[run.id] else "",
                    last[run.id].get(k, {}).get("step"),
                )
                for k in metric_columns
            ],
        }
        for run in runs
    ]

    base = {**filters, "page_size": page_size if page_size != 50 else ""}
    columns = []
    for label, name in (
        ("Status", "status"),
        ("Name", "name"),
        ("Kind", "kind"),
        ("Group", "group"),
        ("Tags", None),
        ("Started", "started"),
        ("Duration", "duration"),
    ):
        if name is None:
            columns.append({"label": label})
            continue
        current = ordering.lstrip("-") == name
        descending = ordering.startswith("-")
        next_order = name if current and descending else f"-{name}" if current else name
        if not current and name in ("started", "duration"):
            next_order = f"-{name}"  # newest / longest first on the first click
        columns.append(
            {
                "label": label,
                "name": name,
                "url": _query({**base, "ordering": next_order}),
                "arrow": ("▼" if descending else "▲") if current else "",
                "num": name == "duration",
            }
        )
    page_params = {**base, "ordering": ordering if ordering != "-created" else ""}
    project_runs_qs = selectors.run_list(user=request.user).filter(project=project)
    context = {
        "project": project,
        "rows": rows,
        "page": page,
        "columns": columns,
        "metric_columns": metric_columns,
        "filters": filters,
        "ordering": ordering,
        "page_size": page_size,
        "page_sizes": PAGE_SIZES,
        "statuses": Run.Status.values,
        "kinds": sorted(
            set(project_runs_qs.order_by().values_list("kind", flat=True).distinct())
            | {s.kind for s in all_specs()}
        ),
        "groups": list(
            project_runs_qs.exclude(group="")
            .order_by("group")
            .values_list("group", flat=True)
            .distinct()[:500]
        ),
        "prev_url": _query({**page_params, "page": page.previous_page_number()})
        if page.has_previous()
        else "",
        "next_url": _query({**page_params, "page": page.next_page_number()}) if page.has_next() else "",
        "filtered": any(filters.values()),
    }
    return render(request, "ui/runs.html", context)


# --- launch ---------------------------------------------------------------------------------------


def _initial_config(spec, preset: str | None) -> dict:
    """A preset, validated so every default shows; or the trainer's defaults."""
    raw = spec.presets.get(preset) if preset else None
    try:
        return spec.validate(raw or {}).model_dump(mode="json")
    except ValidationError:  # a config with required fields has no complete default
        return dict(raw or {})


@require_http_methods(["GET", "POST"])
def launch(request: HttpRequest, pk: int) -> HttpResponse:
    project = _project(request, pk)
    specs = all_specs()
    if not specs:
        raise Http404("no trainer is registered")
    source = request.POST if request.method == "POST" else request.GET
    clone_of = selectors.run_get(user=request.user, pk=source["clone"]) if source.get("clone") else None
    kind = source.get("kind") or (clone_of.kind if clone_of else specs[0].kind)
    spec = _spec(kind)
    if spec is None:
        raise Http404(f"unknown trainer kind {kind!r}")
    schema = spec.json_schema()
    preset = ""

    if request.method == "POST":
        form = LaunchForm(schema, data=request.POST)
        preset = request.POST.get("preset", "")
        if form.is_valid():
            try:
                return _launch(request, project, spec, form, clone_of)
            except RunError as exc:
                form.add_errors(exc.field_errors, exc.message)
        else:  # also show what the trainer thinks of the rest
            try:
                services.config_validate(spec.kind, form.config)
            except RunError as exc:
                form.add_errors(exc.field_errors)
    elif clone_of is not None:
        form = LaunchForm(
            schema,
            initial=clone_of.config,
            meta={
                "name": f"{clone_of.name} (clone)",
                "group": clone_of.group,
                "tags": ", ".join(clone_of.tags),
                "queue": clone_of.queue,
            },
        )
    else:
        # No ?preset: start from the trainer's first preset; ?preset= (empty) gives the bare defaults.
        preset = request.GET.get("preset", next(iter(spec.presets), ""))
        if preset and preset not in spec.presets:
            messages.warning(request, f"Unknown preset {preset!r}; showing the defaults.")
            preset = ""
        form = LaunchForm(schema, initial=_initial_config(spec, preset))

    presets = {name: preset_fill(form.nodes, _initial_config(spec, name)) for name in spec.presets}
    context = {
        "project": project,
        "spec": spec,
        "specs": specs,
        "form": form,
        "preset": preset,
        "presets": presets,
        "clone_of": clone_of,
        "sweep_choices": form.sweep_choices(),
        "schema_description": schema.get("description", ""),
    }
    return render(request, "ui/launch.html", context)


def _launch(request: HttpRequest, project, spec, form: LaunchForm, clone_of: Run | None) -> HttpResponse:
    common = {
        "user": request.user,
        "project": project,
        "name": form.meta["name"],
        "kind": spec.kind,
        "config": form.config,
        "group": form.meta["group"],
        "tags": form.tags,
    }
    if form.grid:
        runs = services.sweep_create(grid=form.grid, queue=form.meta["queue"] or None, **common)
        messages.success(request, f"Launched a sweep of {len(runs)} runs in group {runs[0].group}.")
        return redirect(reverse("project", args=[project.pk]) + _query({"group": runs[0].group}))
    run = services.run_create(queue=form.meta["queue"] or None, parent=clone_of, **common)
    messages.success(request, f"Launched run {run.name}.")
    return redirect("run", pk=run.pk)


# --- one run --------------------------------------------------------------------------------------


def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    services.runs_mark_lost()
    run = selectors.run_get(user=request.user, pk=pk)
    spec = _spec(run.kind)
    keys = selectors.metric_keys(run)
    primary = list(spec.primary_metrics) if spec else []
    keys = [k for k in primary if k in keys] + [k for k in keys if k not in primary]
    page_data = {
        "id": run.id,
        "status": run.status,
        "keys": keys,
        "primary": primary,
        "log_keys": list(spec.log_scale_metrics) if spec else [],
        "run_api": reverse("api-run", args=[run.pk]),
        "metrics_api": reverse("api-run-metrics", args=[run.pk]),
        "checkpoints_api": reverse("api-run-checkpoints", args=[run.pk]),
    }
    context = {
        "run": run,
        "project": run.project,
        "spec": spec,
        "keys": keys,
        "duration": format_duration(run.duration),
        "config_json": json.dumps(run.config, indent=2, sort_keys=True),
        "summary_json": json.dumps(run.summary, indent=2) if run.summary else "",
        "checkpoints": selectors.checkpoint_list(run),
        "page_data": page_data,
    }
    return render(request, "ui/run.html", context)


@require_POST
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = selectors.run_get(user=request.user, pk=pk)
    try:
        run = services.run_request_cancel(run)
    except RunError as exc:
        messages.error(request, f"Could not cancel: {_error_text(exc)}")
    else:
        if run.status == Run.Status.CANCELLED:
            messages.success(request, "Run cancelled.")
        else:
            messages.info(request, "Cancellation requested; the trainer stops at its next step.")
    return redirect("run", pk=run.pk)


@require_POST
def run_resume(request: HttpRequest, pk: int) -> HttpResponse:
    run = selectors.run_get(user=request.user, pk=pk)
    try:
        run = services.run_resume(run)
    except RunError as exc:
        messages.error(request, f"Could not resume: {_error_text(exc)}")
    else:
        messages.success(request, f"Run queued again as attempt {run.attempt}.")
    return redirect("run", pk=run.pk)


@require_POST
def run_clone(request: HttpRequest, pk: int) -> HttpResponse:
    """Relaunch a copy as it is (the Clone link opens the launch form prefilled instead)."""
    run = selectors.run_get(user=request.user, pk=pk)
    try:
        clone = services.run_clone(run, user=request.user)
    except RunError as exc:
        messages.error(request, f"Could not clone: {_error_text(exc)}")
        return redirect("run", pk=run.pk)
    messages.success(request, f"Launched {clone.name}.")
    return redirect("run", pk=clone.pk)


# --- compare --------------------------------------------------------------------------------------


def compare(request: HttpRequest) -> HttpResponse:
    raw = [
        part
        for value in request.GET.getlist("runs") + request.GET.getlist("run")
        for part in value.split(",")
    ]
    try:
        ids = list(dict.fromkeys(int(x) for x in raw if x.strip()))
    except ValueError:
        raise Http404("runs must be comma-separated ids") from None
    if len(ids) > MAX_COMPARE:
        messages.warning(request, f"Showing the first {MAX_COMPARE} runs.")
        ids = ids[:MAX_COMPARE]
    found = {
        r.id: r for r in selectors.run_list(user=request.user).filter(pk__in=ids).select_related("project")
    }
    if len(found) != len(ids):
        raise Http404("no such run")
    runs = [found[i] for i in ids]
    keys = selectors.metric_keys_union(runs)
    key = request.GET.get("key", "")
    if key not in keys:
        primary = [k for run in runs for k in selectors.primary_metrics(run.kind) if k in keys]
        key = primary[0] if primary else (keys[0] if keys else "")
    log_keys = {k for run in runs if (spec := _spec(run.kind)) for k in spec.log_scale_metrics}
    page_data = {
        "runs": [
            {"id": r.id, "name": r.name, "status": r.status, "url": reverse("run", args=[r.pk])} for r in runs
        ],
        "key": key,
        "keys": keys,
        "log_keys": sorted(log_keys),
        "compare_api": reverse("api-compare"),
        "run_api": reverse("api-run", args=[0]),
    }
    projects = {r.project for r in runs}
    context = {
        "runs": runs,
        "keys": keys,
        "key": key,
        "runs_param": ",".join(str(i) for i in ids),
        "page_data": page_data,
        "project": projects.pop() if len(projects) == 1 else None,
    }
    return render(request, "ui/compare.html", context)
