"""The runs-table query: one parser for the runs list page (``/projects/<id>/``), ``GET /api/runs/`` and
``GET /api/runs/table/``, so the same parameters select the same runs in the same order.

Filters (one grammar)::

    project=<id>  status=<s>[,<s>...]  kind=<k>  group=<g>  tag=<t>  q=<substring of name or group>
    ids=<id>[,<id>...] (at most 1000)   config.<dotted path>[__op]=<value>  (webapp.runs.table)

Columns: ``col=config:<path>`` / ``col=metric:<key>:<agg>`` (webapp.runs.table).

Ordering (one vocabulary): ``ordering=[-]<name>`` with name one of ``created started finished name
status kind group id duration`` or any column spec (``-metric:train/loss:last``, ``config:lr``);
several plain names comma-separated (``ordering=group,-started``) sort by each in turn. The default
is ``-created``; ties are broken by id.

Layout (the page's column chooser; saved views keep it): ``show=<id>`` repeated, in display order,
with id a base column (``status kind group tags started duration``) or a column spec; columns not
named are hidden (the name column always shows, first). Without ``show`` every column shows.

Best run per group: ``best=<column spec>`` with ``best_dir=max`` (default) or ``min``: each group's
run with the best value of that column (runs without a group form one group; runs without a value
are never best). ``best_only=true`` keeps only those runs; otherwise they are marked. Computed over
at most ``table.PYTHON_SORT_LIMIT`` filtered runs (the API answers 400 beyond, naming ``best``).

Old spellings, still accepted (saved views, scripts, the README): ``search`` for ``q``, ``status__in``
for ``status``, and ``created_at`` / ``started_at`` / ``finished_at`` for ``created`` / ``started`` /
``finished``.

``strict``: the API's reading, where a bad parameter raises ``RunError`` naming it (a 400). Otherwise
(the HTML page) a bad parameter is reported in ``errors`` and ignored, and an unknown plain ordering
name falls back to the default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.db.models import F, QuerySet
from django.db.models.functions import Coalesce, Now

from webapp.runs import table
from webapp.runs.models import Run
from webapp.runs.services import RunError

#: ?ordering= names of the run fields -> the model field they sort by.
ORDERINGS = {
    "created": "created_at",
    "started": "started_at",
    "finished": "finished_at",
    "name": "name",
    "status": "status",
    "kind": "kind",
    "group": "group",
    "id": "id",
    "duration": "duration_db",  # annotated: finished (or now) - started
}
#: Old ordering names (GET /api/runs/ and /api/runs/table/ used the model's field names).
ORDERING_ALIASES = {"created_at": "created", "started_at": "started", "finished_at": "finished"}
#: Old filter names -> the one grammar's (applied only when the new name is absent).
FILTER_ALIASES = {"search": "q", "status__in": "status"}
DEFAULT_ORDERING = "-created"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_IDS = 1000
MAX_ID = 2**53  # ids and project ids (JSON-safe integers)
SINGLE_TYPED = ("project",)  # the API refuses these empty or repeated
#: The runs table's base columns (``show=`` ids) besides the name, in their default order.
BASE_COLUMNS = ("status", "kind", "group", "tags", "started", "duration")
BEST_DIRECTIONS = ("max", "min")
MAX_SHOW = 60


def _canonical_name(name: str) -> str:
    return ORDERING_ALIASES.get(name, name)


def _field_order(names: Sequence[str]) -> list:
    """[-]name, ... -> order_by expressions, nulls last, ties by id (in the first name's direction)."""
    exprs = []
    for raw in names:
        desc = raw.startswith("-")
        f = F(ORDERINGS[raw.lstrip("-")])
        exprs.append(f.desc(nulls_last=True) if desc else f.asc(nulls_last=True))
    if not any(n.lstrip("-") == "id" for n in names):
        exprs.append(F("id").desc() if names[0].startswith("-") else F("id").asc())
    return exprs


@dataclass
class RunTableQuery:
    """What the runs list shows: the filtered queryset (``qs``), the explicit columns, the ordering and
    the page size, plus the filters as the page's controls and links need them."""

    qs: QuerySet[Run]
    filters: dict[str, str]
    config_filters: list[table.ConfigFilter]
    columns: list[table.Column]
    ordering: str  # canonical: "-created", "name", "group,-started", "-metric:train/loss:last"
    order_by: list  # the field ordering (the default one when sorting by a column)
    sort_col: table.Column | None
    descending: bool
    page_size: int
    ids: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    strict: bool = True
    show: list[str] = field(default_factory=list)  # the chooser's layout (empty: every column)
    best_col: table.Column | None = None
    best_dir: str = "max"
    best_only: bool = False
    best_ids: set[int] = field(default_factory=set)  # each group's best run (when best_col)

    # --- parsing ------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, params, runs: QuerySet[Run], *, strict: bool = True) -> RunTableQuery:
        """``params``: a QueryDict (or anything with get/getlist/keys); ``runs``: the runs the user may
        see (selectors.run_list, maybe already limited to one project)."""
        errors: list[str] = []
        sink = None if strict else errors

        def bad(name: str, message: str) -> None:
            if strict:
                raise RunError("invalid query", {name: [message]})
            errors.append(f"{name}: {message}")

        if strict and hasattr(params, "getlist"):
            for name in SINGLE_TYPED:  # the schema's integers: "" or a repeated value is not one
                values = params.getlist(name)
                if name in params and (len(values) != 1 or not values[0].strip()):
                    bad(name, "an integer, given once")
        params = params.copy() if hasattr(params, "copy") else dict(params)
        for old, new in FILTER_ALIASES.items():
            if old in params and new not in params:
                params[new] = params[old]
        raw_project = (params.get("project") or "").strip()
        if raw_project:
            try:
                pid = int(raw_project)
            except ValueError:
                pid = None
                bad("project", "must be an integer")
            else:
                if not 1 <= pid <= MAX_ID:
                    pid = None
                    bad("project", f"must be between 1 and {MAX_ID}")
            if pid is None:
                params["project"] = ""
        ids: list[int] = []
        if raw_ids := (params.get("ids") or "").strip():
            try:
                ids = list(dict.fromkeys(int(x) for x in raw_ids.split(",") if x.strip()))
            except ValueError:
                ids = []
                bad("ids", "must be comma-separated integers")
            else:
                if not ids or len(ids) > MAX_IDS or any(not 0 < i <= MAX_ID for i in ids):
                    ids = []
                    bad("ids", f"give 1 to {MAX_IDS} comma-separated ids")
        qs = runs.filter(pk__in=ids) if ids else runs
        qs, filters, config_filters = table.filter_runs(qs, params, errors=sink)
        columns, col_errors = table.parse_columns(
            params.getlist("col") if hasattr(params, "getlist") else [], strict=strict
        )
        errors += col_errors
        ordering, order_by, sort_col, descending = cls._parse_ordering(
            params.get("ordering") or "", bad, strict
        )
        show = _parse_show(params.getlist("show") if hasattr(params, "getlist") else [], bad)
        best_col, best_dir, best_only, best_ids = None, "max", False, set()
        if raw_best := (params.get("best") or "").strip():
            best_dir = (params.get("best_dir") or "max").strip()
            best_only = (params.get("best_only") or "").strip().lower() in ("1", "true", "on", "yes")
            try:
                best_col = table.parse_column(raw_best)
            except ValueError as exc:
                bad("best", str(exc))
            if best_dir not in BEST_DIRECTIONS:
                bad("best_dir", f"one of {', '.join(BEST_DIRECTIONS)}")
                best_col, best_dir = None, "max"
            if best_col is not None:
                found = table.best_per_group(qs, best_col, descending=best_dir == "max")
                if found is None:
                    bad("best", f"more than {table.PYTHON_SORT_LIMIT} runs match: filter first")
                    best_col = None
                else:
                    best_ids = found
                    if best_only:
                        qs = qs.filter(pk__in=best_ids)
            if best_col is None:
                best_only = False
        if any(n.lstrip("-") == "duration" for n in ordering.split(",")) and sort_col is None:
            qs = qs.annotate(duration_db=Coalesce(F("finished_at"), Now()) - F("started_at"))
        try:
            page_size = min(max(int(params.get("page_size", DEFAULT_PAGE_SIZE)), 1), MAX_PAGE_SIZE)
        except (TypeError, ValueError):
            page_size = DEFAULT_PAGE_SIZE  # the API's paginator answers 400 itself
        return cls(
            qs=qs,
            filters=filters,
            config_filters=config_filters,
            columns=columns,
            ordering=ordering,
            order_by=order_by,
            sort_col=sort_col,
            descending=descending,
            page_size=page_size,
            ids=ids,
            errors=errors,
            strict=strict,
            show=show,
            best_col=best_col,
            best_dir=best_dir,
            best_only=best_only,
            best_ids=best_ids,
        )

    @staticmethod
    def _parse_ordering(raw: str, bad: Callable[[str, str], None], strict: bool):
        """-> (canonical ordering, field order_by, sort column or None, descending)."""
        raw = raw.strip()
        default = (DEFAULT_ORDERING, _field_order([DEFAULT_ORDERING]), None, True)
        if not raw:
            return default
        parts = [p.strip() for p in raw.split(",")]
        names = [("-" if p.startswith("-") else "") + _canonical_name(p.lstrip("-")) for p in parts]
        if all(n.lstrip("-") in ORDERINGS for n in names):
            return ",".join(names), _field_order(names), None, names[0].startswith("-")
        descending = raw.startswith("-")
        if ":" in raw or strict:
            try:
                col = table.parse_column(raw.lstrip("-"))
            except ValueError as exc:
                bad("ordering", f"{exc}; or one of {', '.join(ORDERINGS)}")
                return default
            return raw, _field_order([DEFAULT_ORDERING]), col, descending
        return default  # the page: an unknown name sorts by the default

    # --- reading --------------------------------------------------------------------------------------

    def rows(
        self, paginate: Callable[[Sequence], Sequence], *, defer: Sequence[str] = ()
    ) -> tuple[list[Run], str]:
        """One page of runs, in order: ``paginate`` takes the ordered queryset (or id list) and returns
        the page's part of it. Returns (runs, note): a column the database cannot sort by (mean_last_N)
        is sorted in Python over at most table.PYTHON_SORT_LIMIT runs; beyond that the API answers
        400 and the page sorts within the page, saying so in the note."""
        qs = self.qs.defer(*defer) if defer else self.qs
        col, desc = self.sort_col, self.descending
        if col is None:
            return list(paginate(qs.order_by(*self.order_by))), ""
        if col.db_sortable:
            return list(paginate(table.order_by_column(qs, col, desc))), ""
        ids = table.sorted_ids(qs, col, desc, self.order_by)
        if ids is not None:
            page_ids = list(paginate(ids))
            found = qs.in_bulk(page_ids)
            return [found[i] for i in page_ids if i in found], ""
        if self.strict:
            raise RunError(
                "invalid query",
                {"ordering": [f"more than {table.PYTHON_SORT_LIMIT} runs match: filter first"]},
            )
        runs = list(paginate(qs.order_by(*self.order_by)))
        runs = table.python_sort(runs, table.column_values(runs, [col]), col, desc)
        note = (
            f"More than {table.PYTHON_SORT_LIMIT:,} runs match: sorted by {col.label} within this page only."
        )
        return runs, note

    # --- links ----------------------------------------------------------------------------------------

    def link_items(
        self,
        *,
        config_filters: Sequence[table.ConfigFilter] | None = None,
        columns: Sequence[table.Column] | None = None,
        ordering: str | None = None,
        project: bool = True,
        show: Sequence[str] | None = None,
        best: bool = True,
    ) -> list[tuple[str, str]]:
        """The query in canonical spelling, in a stable order (links, saved views, redirects), with
        the given parts replaced."""
        ordering = self.ordering if ordering is None else ordering
        items = [(k, v) for k, v in self.filters.items() if v and (project or k != "project")]
        if self.ids:
            items.append(("ids", ",".join(map(str, self.ids))))
        items += [
            (f.param, f.raw) for f in (self.config_filters if config_filters is None else config_filters)
        ]
        items += [("col", c.spec) for c in (self.columns if columns is None else columns)]
        if self.page_size != DEFAULT_PAGE_SIZE:
            items.append(("page_size", str(self.page_size)))
        if ordering and ordering != DEFAULT_ORDERING:
            items.append(("ordering", ordering))
        items += [("show", s) for s in (self.show if show is None else show)]
        if best and self.best_col is not None:
            items += [("best", self.best_col.spec), ("best_dir", self.best_dir)]
            if self.best_only:
                items.append(("best_only", "true"))
        return items


def _parse_show(raw: Sequence[str], bad: Callable[[str, str], None]) -> list[str]:
    """``show`` ids in order, without repeats: base column names and column specs."""
    out: list[str] = []
    for value in raw:
        value = value.strip()
        if not value or value in out or value == "name":
            continue
        if value not in BASE_COLUMNS:
            try:
                table.parse_column(value)
            except ValueError as exc:
                bad("show", f"{value}: {exc}; or one of {', '.join(BASE_COLUMNS)}")
                continue
        out.append(value)
    if len(out) > MAX_SHOW:
        bad("show", f"at most {MAX_SHOW} columns")
        out = out[:MAX_SHOW]
    return out
