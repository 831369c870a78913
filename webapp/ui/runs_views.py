"""The runs list of a project: the runs-table query (webapp.selectors.runs, shared with GET /api/runs/ and
/api/runs/table/), columns, sorting, saved views, the entropy-collapse flag, and the rows built in Python."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods

from trainers.base import all_specs
from webapp.runs import collapse, selectors, services, table
from webapp.runs.models import Run, SavedView
from webapp.selectors.runs import RunTableQuery
from webapp.ui.helpers import _project, format_duration

PAGE_SIZES = (50, 100, 200, 500, 1000)


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
