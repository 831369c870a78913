"""The runs list of a project: the runs-table query (webapp.selectors.runs, shared with GET /api/runs/ and
/api/runs/table/), columns, sorting, saved views, the entropy-collapse flag, and the rows built in Python."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.templatetags.static import static
from django.urls import reverse
from django.utils.html import escape
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_http_methods

from trainers.base import all_specs
from webapp.runs import collapse, selectors, services, table
from webapp.runs.models import Run, SavedView
from webapp.selectors.runs import BASE_COLUMNS as SHOW_BASE_COLUMNS
from webapp.selectors.runs import RunTableQuery
from webapp.ui.helpers import _project, format_duration

PAGE_SIZES = (50, 100, 200, 500, 1000)
#: The base columns after the (always shown, sticky) name: ?show= ids -> header labels.
BASE_COLUMNS = {name: name.capitalize() for name in SHOW_BASE_COLUMNS}


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
            if any(k == "show" for k, _ in items):  # a chooser layout in force: the new column shows, last
                items.append(("show", spec))
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
    # The chooser's layout (?show=, saved with the view): the columns shown, in order; the rest hidden.
    all_ids = [*BASE_COLUMNS, *(c.spec for c in columns_shown)]
    layout = [i for i in query.show if i in all_ids] if query.show else all_ids
    visible_cols = [c for c in columns_shown if c.spec in layout]
    rule = collapse.Rule.from_settings()
    metric_keys = {c.key for c in visible_cols if c.kind == "metric"}
    series = table.series_rows([r.id for r in runs], metric_keys | set(rule.keys))
    values = table.column_values(runs, visible_cols, series=series)
    flags = {
        rid: v for rid, v in collapse.verdicts([r.id for r in runs], rule, series=series).items() if v.flagged
    }
    best_ids = query.best_ids if query.best_col is not None else set()

    run_url = reverse("run", args=[0])[:-2]  # "/runs/" + id + "/": one reverse() for the whole page
    rows = []
    for run in runs:
        cells = {}
        for col in visible_cols:
            cell = values[run.id][col.spec]
            title = f"step {cell.step}" if cell.step is not None else ""
            cells[col.spec] = (cell.text, title, col.kind)
        verdict = flags.get(run.id)
        rows.append(
            mark_safe(  # noqa: S308 (escaped inside)
                _run_row_html(
                    run, run_url, layout, cells, verdict.message if verdict else "", run.id in best_ids
                )
            )
        )

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

    name_url, name_arrow = sort_link("name")
    name_column = {"label": "Name", "name": "name", "url": name_url, "arrow": name_arrow}
    base_heads = {}
    for name, label in BASE_COLUMNS.items():
        if name == "tags":
            base_heads[name] = {"id": name, "base": True, "label": label}
            continue
        url, arrow = sort_link(name, first_desc=name in ("started", "duration"))
        base_heads[name] = {
            "id": name, "base": True, "label": label, "name": name, "url": url, "arrow": arrow,
            "num": name == "duration",
        }  # fmt: skip

    extra_heads = {}
    for col in columns_shown:
        url, arrow = sort_link(col.spec, first_desc=col.kind == "metric" and col.agg in ("max", "last"))
        remaining = [c for c in explicit_cols if c.spec != col.spec]
        extra_heads[col.spec] = {
            "id": col.spec,
            "spec": col.spec,
            "label": col.key if implicit else col.label,
            "kind": col.kind,
            "url": url,
            "arrow": arrow,
            "remove_url": ""
            if implicit
            else _qs(query.link_items(columns=remaining, show=[i for i in query.show if i != col.spec])),
        }
    heads = {**base_heads, **extra_heads}
    header = [heads[i] for i in layout]
    extra_columns = [h for h in header if not h.get("base")]
    # The chooser lists every column: the shown ones in their order, then the hidden ones.
    chooser = [{**heads[i], "shown": True} for i in layout] + [
        {**heads[i], "shown": False} for i in all_ids if i not in layout
    ]
    for item in chooser:
        if not item.get("base"):
            item["label"] = extra_heads[item["id"]]["label"] if implicit else item["label"]

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
        "name_column": name_column,
        "header": header,
        "extra_columns": extra_columns,
        "chooser": chooser,
        "chooser_items": query.link_items(show=[]),
        "best": {
            "column": query.best_col.spec if query.best_col is not None else "",
            "dir": query.best_dir,
            "only": query.best_only,
            "count": len(best_ids),
            "choices": _best_choices(columns_shown, query.best_col),
        },
        "filter_hidden": [(k, v) for k, v in query.link_items() if k in ("show",)],
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
            "table_api": reverse("api-run-table")
            + _qs([("project", str(project.pk))] + _view_filters(query)),
            "group": filters.get("group", ""),
            "plotly_js": static("vendor/plotly.min.js"),  # loaded only when the sweep view is drawn
        },
    }
    return render(request, "ui/runs.html", context)


def _best_choices(columns, current) -> list[tuple[str, str]]:
    """The columns "best per group" can rank by: the table's columns, and the current choice."""
    choices = [(c.spec, c.label) for c in columns]
    if current is not None and current.spec not in dict(choices):
        choices.append((current.spec, current.label))
    return choices


def _view_filters(query: RunTableQuery) -> list[tuple[str, str]]:
    """The query's filters (and best-per-group choice) without columns, layout, order or page size:
    what selects the runs in view, for the parallel-coordinates view's fetch."""
    keep = ("col", "show", "ordering", "page_size")
    return [(k, v) for k, v in query.link_items(project=False) if k not in keep]


# The base cells of a row, one function per ?show= name (looked up once per cell, no per-row closures:
# 1,000 rows x 13 columns are built per page).
def _status_cell(run: Run) -> str:
    return f'<td><span class="badge status-{escape(run.status)}">{escape(run.status)}</span></td>'


def _kind_cell(run: Run) -> str:
    return f"<td>{escape(run.kind)}</td>"


def _group_cell(run: Run) -> str:
    if not run.group:
        return "<td></td>"
    g = escape(run.group)
    return (
        f'<td class="group"><a href="?group={escape(quote(run.group, safe="/"))}" class="muted trunc" '
        f'title="{g}" data-testid="run-group">{g}</a></td>'
    )


def _tags_cell(run: Run) -> str:
    e = escape
    return "<td>" + "".join(
        f'<a class="tag" href="?tag={e(quote(str(t), safe="/"))}">{e(t)}</a>' for t in run.tags or []
    ) + "</td>"  # fmt: skip


def _started_cell(run: Run) -> str:
    if not run.started_at:
        return '<td class="nowrap" title="">—</td>'
    return f'<td class="nowrap" title="{run.started_at.isoformat()}">{run.started_at.strftime("%Y-%m-%d %H:%M:%S")}</td>'


def _duration_cell(run: Run) -> str:
    return f'<td class="nowrap num">{escape(format_duration(run.duration) or "—")}</td>'


def _value_cell(text: str, title: str, kind: str) -> str:
    title_attr = f' title="{escape(title)}"' if title else ""
    return f'<td class="{"num " if kind == "metric" else ""}mono"{title_attr}>{escape(text)}</td>'


_BASE_CELLS = {
    "status": _status_cell,
    "kind": _kind_cell,
    "group": _group_cell,
    "tags": _tags_cell,
    "started": _started_cell,
    "duration": _duration_cell,
}


def _run_row_html(
    run: Run, run_url: str, layout: list[str], cells: dict[str, tuple[str, str, str]], collapse_note: str,
    best: bool = False,
) -> str:  # fmt: skip
    """One row of the runs table, built in Python: with 1,000 rows the template engine spent ~190 ms
    on the row loop alone (bench/RESULTS.md, target <= 200 ms for the whole page). Every value is
    escaped here; the template prints the finished rows. ``layout``: the column ids after the name,
    in order (base names and column specs, the chooser's ?show=). Long names and groups are cut by
    CSS (runs-table.css) and carry their full text in a title."""
    e = escape
    flag = (
        f' <span class="flag-collapse" data-testid="collapse-flag" title="{e(collapse_note)}">⚠ entropy collapse</span>'
        if collapse_note
        else ""
    )
    star = (
        ' <span class="best-mark" data-testid="best-mark" title="best run of its group">★ best</span>'
        if best
        else ""
    )
    return (
        f'<tr data-testid="run-row" data-run-id="{run.id}"{" data-best=" + chr(34) + "1" + chr(34) if best else ""}'
        f"{' class=' + chr(34) + 'collapsed-run' + chr(34) if collapse_note else ''}>"
        f'<td class="check"><input type="checkbox" name="runs" value="{run.id}" class="run-select"></td>'
        f'<td class="name"><a href="{run_url}{run.id}/" class="trunc" title="{e(run.name)}" '
        f'data-testid="run-link">{e(run.name)}</a>{star}{flag}</td>'
        + "".join(_BASE_CELLS[n](run) if n in _BASE_CELLS else _value_cell(*cells[n]) for n in layout)
        + "</tr>"
    )
