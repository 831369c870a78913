"""The HTML pages. Thin: read through the selectors (which scope everything to the user's projects),
write through the services, and leave the live parts (charts, status) to the page's JS, which
talks to the REST API."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from urllib.parse import quote, urlencode

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.db.models import Count, OuterRef, Subquery
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods, require_POST
from pydantic import ValidationError

from trainers.base import all_specs, get_spec
from webapp.errors import ServiceError
from webapp.fleet.selectors import launch_check_for
from webapp.projects import services as project_services
from webapp.projects.selectors import project_list
from webapp.runs import collapse, selectors, services, table
from webapp.runs.models import Run, SavedView
from webapp.selectors.runs import RunTableQuery
from webapp.ui import run_panels
from webapp.ui.fleet_panel import fleet_context
from webapp.ui.forms import LaunchForm, ProjectCreateForm, preset_fill

PAGE_SIZES = (50, 100, 200, 500, 1000)
MAX_COMPARE = 100


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


def _error_text(exc: ServiceError) -> str:
    return exc.text()


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
#
# The runs table (webapp.runs.table): filters (status, kind, group, tag, search and config values:
# ?config.lr__gt=1e-6), columns (?col=metric:<key>:<agg> / ?col=config:<path>; without any, the last
# value of each kind's primary metrics), sorting by any column (?ordering=[-]<name or column>),
# saved views (POST action=save-view / delete-view) and the entropy-collapse flag.

# Builder inputs of the filters form: turned into canonical parameters by a redirect.
BUILDER_FIELDS = ("cf_path", "cf_op", "cf_value", "add_col", "add_col_key", "add_col_agg", "add_col_n")
CF_OPS = (("exact", "="), ("ne", "≠"), ("gt", ">"), ("gte", "≥"), ("lt", "<"), ("lte", "≤"), ("in", "in"),
          ("exists", "exists"))  # fmt: skip
COL_AGGS = (("last", "last"), ("best_min", "min"), ("best_max", "max"), ("mean_last", "mean of last N"))


def _table_query(request: HttpRequest, project) -> RunTableQuery:
    """The runs-table query (webapp.selectors.runs, shared with GET /api/runs/ and /api/runs/table/),
    read the page's way: bad parameters are listed and ignored; the project is the page's."""
    params = request.GET.copy()
    params.pop("project", None)  # the page's project, always
    runs = selectors.run_list(user=request.user).filter(project=project)
    query = RunTableQuery.parse(params, runs, strict=False)
    query.filters.pop("project", None)
    return query


def _qs(items: list[tuple[str, str]]) -> str:
    return "?" + urlencode(items) if items else "?"


def _default_columns(kinds) -> list:
    keys: list[str] = []
    for kind in kinds:
        for key in selectors.primary_metrics(kind):
            if key not in keys:
                keys.append(key)
    return [table.parse_column(f"metric:{k}:last") for k in keys]


def _builder_redirect(request: HttpRequest, project) -> HttpResponse:
    """The filters form's "add a config filter" and "add a column" inputs -> canonical parameters."""
    params = request.GET
    items = [
        (k, v)
        for k in params
        for v in params.getlist(k)
        if k not in BUILDER_FIELDS and k != "page" and (v.strip() or k.startswith(table.CONFIG_PREFIX))
    ]
    for path, op, value in zip(
        params.getlist("cf_path"), params.getlist("cf_op"), params.getlist("cf_value"), strict=False
    ):
        path = path.strip().removeprefix("config.")
        if path:
            name = f"config.{path}" + (f"__{op}" if op and op != "exact" else "")
            items.append((name, value.strip() if op != "exists" else (value.strip() or "true")))
    key = params.get("add_col_key", "").strip()
    if key:
        if not any(k == "col" for k, _ in items):  # keep the default columns in view
            kinds = _table_query(request, project).qs.order_by().values_list("kind", flat=True).distinct()
            items += [("col", c.spec) for c in _default_columns(sorted(kinds))]
        if params.get("add_col") == "config":
            spec = f"config:{key.removeprefix('config.')}"
        else:
            agg = params.get("add_col_agg", "last")
            if agg == "mean_last":
                agg = f"mean_last_{params.get('add_col_n', '').strip() or 50}"
            spec = f"metric:{key}:{agg}"
        if ("col", spec) not in items:
            items.append(("col", spec))
    return redirect(reverse("project", args=[project.pk]) + _qs(items))


def _saved_view_post(request: HttpRequest, project) -> HttpResponse:
    action = request.POST.get("action")
    query = request.POST.get("query", "").lstrip("?").replace("\x00", "")  # PostgreSQL text holds no NUL
    if action == "save-view":
        name = request.POST.get("name", "").replace("\x00", "").strip()[:100]
        if not name:
            messages.error(request, "Give the view a name.")
        else:
            SavedView.objects.update_or_create(
                project=project, user=request.user, name=name, defaults={"query": query[:4000]}
            )
            messages.success(request, f"Saved view “{name}”.")
    elif action == "delete-view":
        deleted, _ = SavedView.objects.filter(
            project=project, user=request.user, pk=request.POST.get("view") or 0
        ).delete()
        if deleted:
            messages.success(request, "View deleted.")
    return redirect(reverse("project", args=[project.pk]) + ("?" + query if query else ""))


@require_http_methods(["GET", "POST"])
def project_runs(request: HttpRequest, pk: int) -> HttpResponse:
    project = _project(request, pk)
    if request.method == "POST":
        return _saved_view_post(request, project)
    if any(k in request.GET for k in BUILDER_FIELDS):
        return _builder_redirect(request, project)
    services.runs_mark_lost()
    query = _table_query(request, project)
    errors, filters, config_filters = query.errors, query.filters, query.config_filters
    explicit_cols, page_size, ordering = query.columns, query.page_size, query.ordering
    deferred = ("traceback", "summary", "dataset_versions", "error")
    if not any(c.kind == "config" for c in explicit_cols):
        deferred += ("config",)
    paged = {}

    def paginate(items):
        paged["page"] = Paginator(items, page_size).get_page(request.GET.get("page"))
        return paged["page"].object_list

    # a mean_last_N column is sorted in Python (within the page only beyond PYTHON_SORT_LIMIT runs)
    runs, sort_note = query.rows(paginate, defer=deferred)
    page = paged["page"]

    implicit = not explicit_cols
    columns_shown = explicit_cols or _default_columns(dict.fromkeys(r.kind for r in runs))
    rule = collapse.Rule.from_settings()
    metric_keys = {c.key for c in columns_shown if c.kind == "metric"}
    series = table.series_rows([r.id for r in runs], metric_keys | set(rule.keys))
    values = table.column_values(runs, columns_shown, series=series)
    flags = {
        rid: v for rid, v in collapse.verdicts([r.id for r in runs], rule, series=series).items() if v.flagged
    }

    run_url = reverse("run", args=[0])[:-2]  # "/runs/" + id + "/": one reverse() for the whole page
    rows = []
    for run in runs:
        cells = []
        for col in columns_shown:
            cell = values[run.id][col.spec]
            title = f"step {cell.step}" if cell.step is not None else ""
            cells.append((cell.text, title, col.kind))
        verdict = flags.get(run.id)
        rows.append(mark_safe(_run_row_html(run, run_url, cells, verdict.message if verdict else "")))  # noqa: S308 (escaped inside)

    def link(items_ordering: str) -> str:
        return _qs(query.link_items(ordering=items_ordering))

    def sort_link(name: str, first_desc: bool = False) -> tuple[str, str]:
        current = ordering.lstrip("-") == name
        if current:
            next_order = name if ordering.startswith("-") else f"-{name}"
        else:
            next_order = f"-{name}" if first_desc else name
        arrow = ("▼" if ordering.startswith("-") else "▲") if current else ""
        return link(next_order), arrow

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
        url, arrow = sort_link(name, first_desc=name in ("started", "duration"))
        columns.append({"label": label, "name": name, "url": url, "arrow": arrow, "num": name == "duration"})

    extra_columns = []
    for col in columns_shown:
        url, arrow = sort_link(col.spec, first_desc=col.kind == "metric" and col.agg in ("max", "last"))
        remaining = [c for c in explicit_cols if c.spec != col.spec]
        extra_columns.append(
            {
                "spec": col.spec,
                "label": col.key if implicit else col.label,
                "kind": col.kind,
                "url": url,
                "arrow": arrow,
                "remove_url": "" if implicit else _qs(query.link_items(columns=remaining)),
            }
        )

    base_items = query.link_items()
    chips = []
    for f in config_filters:
        others = [g for g in config_filters if g is not f]
        chips.append(
            {
                "text": f.describe(),
                "url": _qs(query.link_items(config_filters=others)),
            }
        )
    current_query = urlencode(base_items)
    saved = [
        {
            "id": v.id,
            "name": v.name,
            "url": "?" + v.query if v.query else "?",
            "active": v.query == current_query,
        }
        for v in SavedView.objects.filter(project=project, user=request.user)
    ]
    kinds_groups = list(
        selectors.run_list(user=request.user).filter(project=project)
        .order_by().values_list("kind", "group").distinct()[:2000]
    )  # fmt: skip
    context = {
        "project": project,
        "rows": rows,
        "page": page,
        "columns": columns,
        "extra_columns": extra_columns,
        "implicit_columns": implicit,
        "explicit_cols": explicit_cols,
        "filters": filters,
        "config_filters": config_filters,
        "config_chips": chips,
        "errors": errors,
        "sort_note": sort_note,
        "ordering": ordering,
        "page_size": page_size,
        "page_sizes": PAGE_SIZES,
        "statuses": Run.Status.values,
        "kinds": sorted({k for k, _ in kinds_groups} | {s.kind for s in all_specs()}),
        "groups": sorted({g for _, g in kinds_groups if g})[:500],
        "cf_ops": CF_OPS,
        "col_aggs": COL_AGGS,
        "saved_views": saved,
        "current_query": current_query,
        "collapse_rule": rule.describe(),
        "flagged_count": len(flags),
        "prev_url": _qs(base_items + [("page", str(page.previous_page_number()))])
        if page.has_previous()
        else "",
        "next_url": _qs(base_items + [("page", str(page.next_page_number()))]) if page.has_next() else "",
        "filtered": any(filters.values()) or bool(config_filters),
        "table_data": {
            "fields_api": reverse("api-run-fields") + f"?project={project.pk}",
            "columns": [{"spec": c["spec"], "url": c["url"], "arrow": c["arrow"]} for c in extra_columns],
        },
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
            except ServiceError as exc:
                form.add_errors(exc.field_errors, exc.message)
        else:  # also show what the trainer thinks of the rest
            try:
                services.config_validate(spec.kind, form.config)
            except ServiceError as exc:
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
        named_sweep = spec.sweep_presets.get(request.GET.get("sweep", ""))
        if named_sweep is not None:  # ?sweep=<name>: its base preset, and its grid in the sweep rows
            preset = named_sweep.get("preset", "")
        if preset and preset not in spec.presets:
            messages.warning(request, f"Unknown preset {preset!r}; showing the defaults.")
            preset = ""
        form = LaunchForm(schema, initial=_initial_config(spec, preset))
        if named_sweep is not None:
            for row, (path, values) in zip(form.sweep, named_sweep["grid"].items(), strict=False):
                row.path, row.values = path, ", ".join(str(v) for v in values)

    presets = {
        name: {**preset_fill(form.nodes, _initial_config(spec, name)), "hardware": _hardware(spec, name)}
        for name in spec.presets
    }
    fleet, fleet_data = fleet_context(form, default_queue=spec.queue)
    context = {
        "fleet": fleet,
        "fleet_data": fleet_data,
        "run_queues": settings.ORLAB_RUN_QUEUES,
        "project": project,
        "spec": spec,
        "specs": specs,
        "form": form,
        "preset": preset,
        "presets": presets,
        "preset_hardware": _hardware(spec, preset),
        "clone_of": clone_of,
        "sweep_choices": form.sweep_choices(),
        "sweep_presets": list(spec.sweep_presets),
        "schema_description": schema.get("description", ""),
    }
    return render(request, "ui/launch.html", context)


def _hardware(spec, preset: str) -> str:
    """What a preset says it needs (TrainerSpec.preset_hardware), shown under the preset picker."""
    return (spec.preset_hardware.get(preset) or {}).get("summary", "") if preset else ""


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
    panels, panels_data = run_panels.panels_context(request, run)
    page_data.update(panels_data)
    context = {
        **panels,
        "run": run,
        "project": run.project,
        "spec": spec,
        "keys": keys,
        "duration": format_duration(run.duration),
        "config_json": json.dumps(run.config, indent=2, sort_keys=True),
        "summary_json": json.dumps(run.summary, indent=2) if run.summary else "",
        "checkpoints": selectors.checkpoint_list(run),
        "page_data": page_data,
        "launch_check": launch_check_for(run),
    }
    return render(request, "ui/run.html", context)


@require_POST
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = selectors.run_get(user=request.user, pk=pk)
    try:
        run = services.run_request_cancel(run)
    except ServiceError as exc:
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
    except ServiceError as exc:
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
    except ServiceError as exc:
        messages.error(request, f"Could not clone: {_error_text(exc)}")
        return redirect("run", pk=run.pk)
    messages.success(request, f"Launched {clone.name}.")
    return redirect("run", pk=clone.pk)


# --- compare --------------------------------------------------------------------------------------
#
# The page state lives in the URL (so a view can be shared): ?runs=1,2,3 &key=<metric> (repeated)
# &smooth=<0..0.999> &x=step|wall|rel|key &xkey=<counter key> &log=1|0 &logx=1 &group=<config path>
# | ~<path> (every differing field but that one, e.g. ~seed: mean over seeds) | @group (the runs'
# group) &band=minmax|std|none &legend=config|name &all=1 (whole config diff) &evals=avg|pass|both
# &hide=<run ids>. The server renders the controls and the config diff; compare.js fetches the
# series (GET /api/compare/, downsampled with M4 to MAX_POINTS per series), smooths (debiased EMA),
# aligns and groups them, draws, exports, and keeps running runs live.

COMPARE_MAX_POINTS = 1500
DEFAULT_SMOOTH = 0.6
MAX_DEFAULT_KEYS = 6
X_MODES = ("step", "wall", "rel", "key")
BANDS = ("minmax", "std", "none")
LEGENDS = ("config", "name")
EVAL_METRICS = ("both", "avg", "pass")
MAX_LABEL_FIELDS = 3


def _compare_runs(request: HttpRequest) -> list[Run]:
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
    if any(not 0 < i < 2**63 for i in ids):
        raise Http404("no such run")
    found = {
        r.id: r for r in selectors.run_list(user=request.user).filter(pk__in=ids).select_related("project")
    }
    if len(found) != len(ids):
        raise Http404("no such run")
    return [found[i] for i in ids]


def _compare_state(params, keys: list[str], default_keys: list[str]) -> dict:
    def choice(name: str, options: tuple, default: str) -> str:
        value = params.get(name, default)
        return value if value in options else default

    try:
        smooth = float(params.get("smooth", DEFAULT_SMOOTH))
    except ValueError:
        smooth = DEFAULT_SMOOTH
    smooth = min(max(smooth, 0.0), 0.999) if math.isfinite(smooth) else DEFAULT_SMOOTH
    chosen = [k for k in dict.fromkeys(params.getlist("key")) if k in keys]
    x = choice("x", X_MODES, "step")
    xkey = params.get("xkey", "")
    if x == "key" and xkey not in keys:
        x, xkey = "step", ""
    log = params.get("log")
    hide = []
    for part in params.get("hide", "").split(","):
        if part.strip().isdigit():
            hide.append(int(part))
    return {
        "keys": chosen or default_keys,
        "smooth": round(smooth, 3),
        "x": x,
        "xkey": xkey if x == "key" else "",
        "log": True if log == "1" else False if log == "0" else None,
        "logx": params.get("logx") == "1",
        "group": params.get("group", ""),
        "band": choice("band", BANDS, "minmax"),
        "legend": choice("legend", LEGENDS, "config"),
        "all": params.get("all") == "1",
        "evals": choice("evals", EVAL_METRICS, "both"),
        "hide": hide,
    }


def _same(values: list) -> bool:
    encoded = {json.dumps(v, sort_keys=True, default=str) for v in values}
    return len(encoded) <= 1


def config_diff(runs: list[Run]) -> tuple[list[dict], list[str]]:
    """Rows {path, values (display text per run), differs} over the union of the runs' flattened
    configs, differing rows first; and the differing paths."""
    flat = [table.flatten_config(r.config or {}) for r in runs]
    missing = object()
    paths = sorted(set().union(*flat)) if flat else []
    rows, differing = [], []
    for path in paths:
        raw = [f.get(path, missing) for f in flat]
        differs = len(runs) > 1 and not _same([("<missing>" if v is missing else v) for v in raw])
        if differs:
            differing.append(path)
        rows.append(
            {
                "path": path,
                "values": ["—" if v is missing else table.display_value(v) for v in raw],
                "differs": differs,
            }
        )
    rows.sort(key=lambda r: (not r["differs"], r["path"]))
    return rows, differing


def _short_names(paths: list[str]) -> dict[str, str]:
    """The last segment of each path, or the whole path where two would read the same."""
    last = [p.rsplit(".", 1)[-1] for p in paths]
    return {p: (s if last.count(s) == 1 else p) for p, s in zip(paths, last, strict=True)}


def run_labels(runs: list[Run], differing: list[str]) -> dict[int, str]:
    """Legend names from the config fields that differ (``lr=1e-06, seed=2``); the run name when
    nothing (or too much) differs; ``#id`` added where two labels would still be equal."""
    fields = differing[:MAX_LABEL_FIELDS]
    short = _short_names(fields)
    labels = {}
    for run in runs:
        if not fields or len(differing) > 2 * MAX_LABEL_FIELDS:
            labels[run.id] = run.name
            continue
        parts = []
        for path in fields:
            value = table.config_value(run.config or {}, path.split("."), default=None)
            parts.append(f"{short[path]}={table.display_value(value) if value is not None else '—'}")
        more = "…" if len(differing) > len(fields) else ""
        labels[run.id] = ", ".join(parts) + more
    counts: dict[str, int] = {}
    for label in labels.values():
        counts[label] = counts.get(label, 0) + 1
    return {rid: (f"{label} #{rid}" if counts[label] > 1 else label) for rid, label in labels.items()}


def compare(request: HttpRequest) -> HttpResponse:
    runs = _compare_runs(request)
    ids = [r.id for r in runs]
    keys = selectors.metric_keys_union(runs)
    primary = [k for run in runs for k in selectors.primary_metrics(run.kind) if k in keys]
    default_keys = list(dict.fromkeys(primary))[:MAX_DEFAULT_KEYS] or keys[:MAX_DEFAULT_KEYS]
    state = _compare_state(request.GET, keys, default_keys)
    log_keys = {k for run in runs if (spec := _spec(run.kind)) for k in spec.log_scale_metrics}
    diff_rows, differing = config_diff(runs)
    labels = run_labels(runs, differing)
    rule = collapse.Rule.from_settings()
    flags = {rid: v for rid, v in collapse.verdicts(ids, rule).items() if v.flagged}
    evaluations = table.evaluations_of(ids) if runs else []

    short = _short_names(differing)
    group_options = []
    if any(r.group for r in runs):
        group_options.append({"value": "@group", "label": "run group"})
    for path in differing:
        group_options.append({"value": path, "label": f"same {short[path]}"})
    for path in differing:
        name = short[path]
        group_options.append({"value": f"~{path}", "label": f"all but {name} (mean over {name})"})
    if state["group"] and state["group"] not in {o["value"] for o in group_options}:
        state["group"] = ""

    page_data = {
        "runs": [
            {
                "id": r.id,
                "name": r.name,
                "status": r.status,
                "url": reverse("run", args=[r.pk]),
                "label": labels.get(r.id, r.name),
                "group": r.group,
                "config": {
                    p: table.display_value(table.config_value(r.config or {}, p.split(".")))
                    for p in differing
                },
                "collapse": flags[r.id].as_dict() | {"message": flags[r.id].message}
                if r.id in flags
                else None,
            }
            for r in runs
        ],
        "key": state["keys"][0] if state["keys"] else "",
        "keys": keys,
        "log_keys": sorted(log_keys),
        "state": state,
        "defaults": {"smooth": DEFAULT_SMOOTH, "keys": default_keys},
        "differing": differing,
        "group_options": group_options,
        "evaluations": evaluations,
        "max_points": COMPARE_MAX_POINTS,
        "compare_api": reverse("api-compare"),
        "series_api": reverse("api-compare-series"),
        "table_api": reverse("api-run-table"),
        "evaluations_api": reverse("api-compare-evaluations"),
        "run_api": reverse("api-run", args=[0]),
    }
    projects = {r.project for r in runs}
    context = {
        "runs": runs,
        "run_rows": [
            {
                "run": r,
                "label": labels.get(r.id, r.name),
                "collapse": flags[r.id].message if r.id in flags else "",
            }
            for r in runs
        ],
        "keys": keys,
        "chosen": state["keys"],
        "key": page_data["key"],
        "state": state,
        "x_modes": (("step", "step"), ("wall", "wall time"), ("rel", "relative time")),
        "group_options": group_options,
        "diff_rows": diff_rows,
        "differing_count": len(differing),
        "flags": [(r, flags[r.id]) for r in runs if r.id in flags],
        "collapse_rule": rule.describe(),
        "has_evaluations": bool(evaluations),
        "runs_param": ",".join(str(i) for i in ids),
        "page_data": page_data,
        "project": projects.pop() if len(projects) == 1 else None,
    }
    return render(request, "ui/compare.html", context)


# --- settings: API token --------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def api_token(request: HttpRequest) -> HttpResponse:
    """The user's API token (one per user, rest_framework.authtoken): create, regenerate, revoke."""
    from rest_framework.authtoken.models import Token

    if request.method == "POST":
        action = request.POST.get("action")
        if action in ("create", "regenerate"):
            Token.objects.filter(user=request.user).delete()
            Token.objects.create(user=request.user)
            messages.success(
                request,
                "New API token created; the old one no longer works."
                if action == "regenerate"
                else "API token created.",
            )
        elif action == "revoke":
            deleted, _ = Token.objects.filter(user=request.user).delete()
            if deleted:
                messages.success(request, "API token revoked: scripts using it now get 401.")
        return redirect("api-token")
    token = Token.objects.filter(user=request.user).first()
    context = {
        "token": token,
        "api_url": request.build_absolute_uri("/api/"),
        "base_url": request.build_absolute_uri("/").rstrip("/"),
    }
    return render(request, "ui/api_token.html", context)


def _run_row_html(run: Run, run_url: str, cells: list[tuple[str, str, str]], collapse_note: str) -> str:
    """One row of the runs table, built in Python: with 1,000 rows the template engine spent ~190 ms
    on the row loop alone (bench/RESULTS.md, target <= 200 ms for the whole page). Every value is
    escaped here; the template prints the finished rows."""
    e = escape
    started = run.started_at.strftime("%Y-%m-%d %H:%M:%S") if run.started_at else "—"
    started_iso = run.started_at.isoformat() if run.started_at else ""
    group = (
        f'<a href="?group={e(quote(run.group, safe="/"))}" class="muted">{e(run.group)}</a>'
        if run.group
        else ""
    )
    tags = "".join(
        f'<a class="tag" href="?tag={e(quote(str(t), safe="/"))}">{e(t)}</a>' for t in run.tags or []
    )
    flag = (
        f' <span class="flag-collapse" data-testid="collapse-flag" title="{e(collapse_note)}">⚠ entropy collapse</span>'
        if collapse_note
        else ""
    )
    cell_html = "".join(
        f'<td class="{"num " if kind == "metric" else ""}mono"{f" title={chr(34)}{e(title)}{chr(34)}" if title else ""}>'
        f"{e(text)}</td>"
        for text, title, kind in cells
    )
    return (
        f'<tr data-testid="run-row" data-run-id="{run.id}"{" class=" + chr(34) + "collapsed-run" + chr(34) if collapse_note else ""}>'
        f'<td class="check"><input type="checkbox" name="runs" value="{run.id}" class="run-select"></td>'
        f'<td><span class="badge status-{e(run.status)}">{e(run.status)}</span></td>'
        f'<td class="name"><a href="{run_url}{run.id}/" data-testid="run-link">{e(run.name)}</a>{flag}</td>'
        f"<td>{e(run.kind)}</td><td>{group}</td><td>{tags}</td>"
        f'<td class="nowrap" title="{started_iso}">{started}</td>'
        f'<td class="nowrap num">{e(format_duration(run.duration) or "—")}</td>'
        f"{cell_html}</tr>"
    )
