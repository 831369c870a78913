"""The runs table: filters on config values, and columns of config fields and metric aggregates.

Config filters are query parameters ``config.<dotted path>[__<operator>]=<value>``::

    config.lr__gt=1e-6            config.entropy.target=0.2         config.method__in=npg,pg
    config.mdp.seed__ne=0         config.kl.coef__exists=false      config.name="0.2"  (a string)

Operators: ``exact`` (the default), ``ne``, ``gt``, ``gte``, ``lt``, ``lte``, ``in`` (comma-separated
values or a JSON list) and ``exists`` (true/false). A value is read as JSON when it parses (``0.2``,
``1e-6``, ``true``, ``null``, ``"text"``, ``[1, 2]``) and as a plain string otherwise. ``gt``/``lt``...
compare numbers with numbers and strings with strings (a run whose field holds another type does not
match); ``ne`` also matches runs without the field. Several filters are ANDed; a parameter given
twice gives two filters. A bad parameter raises ``RunError`` naming it (the API answers 400).

Columns are ``col`` parameters:

* ``config:<dotted path>`` -- the config value;
* ``metric:<key>:<agg>`` with agg ``last`` (value at the last step), ``min`` / ``best_min``,
  ``max`` / ``best_max`` (over all points; NaN ignored) or ``mean_last_<N>`` (mean of the finite
  values of the last N points, 1 <= N <= 100,000).

``last``/``min``/``max`` come from MetricSeries (no points are read); ``mean_last_N`` reads the
newest chunks of each series, all series of the page in one query. Sorting by a config column or by
last/min/max is done by the database (a JSON key / a subquery on MetricSeries), so it works across
pages; sorting by ``mean_last_N`` is done in Python over at most ``PYTHON_SORT_LIMIT`` filtered runs
(beyond that the sort applies within the page only, and ``python_sort_truncated`` says so).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import CharField, F, Func, OuterRef, Q, QuerySet, Subquery, Sum, Value, Window
from django.db.models.expressions import RowRange
from django.db.models.fields.json import KeyTransform

from webapp.runs.downsample import m4
from webapp.runs.models import Evaluation, MetricChunk, MetricSeries, Run
from webapp.runs.services import RunError

CONFIG_PREFIX = "config."
OPERATORS = ("exact", "ne", "gt", "gte", "lt", "lte", "in", "exists")
COMPARISONS = ("gt", "gte", "lt", "lte")
MAX_PATH_DEPTH = 12
MAX_PATH_CHARS = 300
MAX_FILTERS = 30
MAX_COLUMNS = 30
MAX_MEAN_N = 100_000
PYTHON_SORT_LIMIT = 5000
METRIC_AGGS = ("last", "min", "max", "best_min", "best_max")
_MEAN_RE = re.compile(r"^mean_last_(\d+)$")


# --- values -------------------------------------------------------------------------------------------


class _NotJson(Exception):
    pass


def _reject_constant(name: str):
    raise _NotJson(name)


def parse_value(raw: str) -> Any:
    """A query-string value: JSON when it parses, else the string itself. NaN/Infinity and numbers
    that overflow a float are not JSON numbers here (PostgreSQL's jsonb has no such values)."""
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, _NotJson):
        return raw
    if _has_non_finite(value):
        raise ValueError("numbers must be finite")
    return value


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def split_path(dotted: str) -> tuple[str, ...]:
    """'entropy.target' -> ('entropy', 'target'); ValueError for an empty segment or a too deep path."""
    if not dotted or len(dotted) > MAX_PATH_CHARS:
        raise ValueError(f"a dotted config path of 1 to {MAX_PATH_CHARS} characters")
    parts = tuple(dotted.split("."))
    if any(not p for p in parts):
        raise ValueError("empty segment in the config path")
    if len(parts) > MAX_PATH_DEPTH:
        raise ValueError(f"at most {MAX_PATH_DEPTH} levels")
    return parts


def config_key(path: Sequence[str]) -> KeyTransform:
    """The JSON value at ``path`` of Run.config, as an expression (no lookup-name ambiguity: a field
    called ``contains`` or ``gt`` is a key like any other)."""
    expr: Any = "config"
    for part in path:
        expr = KeyTransform(part, expr)
    return expr


def config_value(config: Mapping, path: Sequence[str], default: Any = None) -> Any:
    cur: Any = config
    for part in path:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return default
    return cur


def flatten_config(config: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}, 'c': [1, 2]} -> {'a.b': 1, 'c': [1, 2]} (lists are leaves)."""
    out: dict[str, Any] = {}
    if isinstance(config, dict) and config:
        for k, v in config.items():
            out.update(flatten_config(v, f"{prefix}.{k}" if prefix else str(k)))
    elif prefix:
        out[prefix] = config
    return out


DISPLAY_CHARS = 200  # a table cell shows at most this much of a value: a config column never embeds a config


def display_value(value: Any) -> str:
    """A config value as the table shows it (shortened to DISPLAY_CHARS, with an ellipsis)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, int):
        return str(value)
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= DISPLAY_CHARS else text[: DISPLAY_CHARS - 1] + "…"


# --- config filters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigFilter:
    param: str  # the query parameter, e.g. "config.lr__gt"
    path: tuple[str, ...]
    op: str
    value: Any
    raw: str

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    def describe(self) -> str:
        sym = {"exact": "=", "ne": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤", "in": "in"}
        if self.op == "exists":
            return f"{self.dotted} {'is set' if self.value else 'is not set'}"
        return f"{self.dotted} {sym[self.op]} {self.raw}"


def parse_config_param(param: str, raw: str) -> ConfigFilter:
    """One ``config.<path>[__op]=<value>`` parameter. Raises RunError naming ``param``."""

    def fail(message: str):
        raise RunError("invalid config filter", {param: [message]})

    body = param[len(CONFIG_PREFIX) :]
    op = "exact"
    if "__" in body:
        head, _, tail = body.rpartition("__")
        if tail in OPERATORS:
            body, op = head, tail
        elif re.fullmatch(r"[a-z]+", tail):
            fail(f"unknown operator {tail!r}; use one of {', '.join(OPERATORS)}")
    try:
        path = split_path(body)
    except ValueError as exc:
        fail(str(exc))
    try:
        if op == "exists":
            value = {"true": True, "1": True, "false": False, "0": False}.get(raw.strip().lower())
            if value is None:
                fail("exists takes true or false")
        elif op == "in":
            text = raw.strip()
            value = (
                parse_value(text)
                if text.startswith("[")
                else [parse_value(p.strip()) for p in text.split(",")]
            )
            if not isinstance(value, list) or not value or len(value) > 100:
                fail("in takes 1 to 100 comma-separated values or a JSON list")
            if any(isinstance(v, dict | list) for v in value):
                fail("in takes scalar values")
        else:
            value = parse_value(raw)
            if op in COMPARISONS and not (_is_number(value) or isinstance(value, str)):
                fail(f"{op} compares with a number or a string, not {raw!r}")
    except ValueError as exc:
        fail(str(exc))
    return ConfigFilter(param=param, path=path, op=op, value=value, raw=raw)


def parse_config_filters(params, errors: list[str] | None = None) -> list[ConfigFilter]:
    """Every ``config.*`` parameter of a QueryDict (or a plain mapping). A bad one raises RunError,
    or, given an ``errors`` list, is skipped with its message appended there (the HTML table)."""
    out: list[ConfigFilter] = []
    for key in list(params.keys()):
        if not key.startswith(CONFIG_PREFIX):
            continue
        values = params.getlist(key) if hasattr(params, "getlist") else [params[key]]
        for raw in values:
            try:
                out.append(parse_config_param(key, raw))
            except RunError as exc:
                if errors is None:
                    raise
                errors.extend(f"{k}: {m}" for k, msgs in exc.field_errors.items() for m in msgs)
    if len(out) > MAX_FILTERS:
        if errors is None:
            raise RunError("invalid config filter", {"config": [f"at most {MAX_FILTERS} config filters"]})
        errors.append(f"at most {MAX_FILTERS} config filters")
        out = out[:MAX_FILTERS]
    return out


class _JsonType(Func):
    """jsonb_typeof(<expr>) on PostgreSQL."""

    function = "jsonb_typeof"
    output_field = CharField()


def _json_rhs(value: Any) -> Value:
    from django.db.models import JSONField

    return Value(value, output_field=JSONField())


def _filter_q(f: ConfigFilter) -> Q:
    expr = config_key(f.path)
    postgres = connection.vendor == "postgresql"
    if f.op == "exists":
        present = expr.get_lookup("isnull")(expr, False)
        return Q(present) if f.value else ~Q(present)
    if f.op in ("exact", "ne"):
        cond = Q(expr.get_lookup("exact")(expr, _json_rhs(f.value)))
        if f.op == "exact":
            return cond
        return ~cond | Q(expr.get_lookup("isnull")(expr, True))
    if f.op == "in":
        cond = Q()
        for v in f.value:
            cond |= Q(expr.get_lookup("exact")(expr, _json_rhs(v)))
        return cond
    # gt / gte / lt / lte: only values of the same JSON type compare
    cond = Q(expr.get_lookup(f.op)(expr, _json_rhs(f.value)))
    if postgres:
        cond &= Q(
            _JsonType(expr).get_lookup("exact")(
                _JsonType(expr), "number" if _is_number(f.value) else "string"
            )
        )
    return cond


def apply_config_filters(qs: QuerySet[Run], filters: Iterable[ConfigFilter]) -> QuerySet[Run]:
    for f in filters:
        qs = qs.filter(_filter_q(f))
    return qs


# --- the common filters --------------------------------------------------------------------------------

FILTER_NAMES = ("project", "status", "kind", "group", "tag", "q")


def filter_runs(
    qs: QuerySet[Run], params, *, errors: list[str] | None = None
) -> tuple[QuerySet[Run], dict, list[ConfigFilter]]:
    """project / status (comma-separated) / kind / group / tag / q (substring of name or group) and
    the config filters. Bad values raise RunError; given an ``errors`` list they are reported there
    and ignored instead (the HTML table)."""
    filters = {k: (params.get(k) or "").strip() for k in FILTER_NAMES}

    def bad(field: str, message: str) -> None:
        if errors is None:
            raise RunError("invalid query", {field: [message]})
        errors.append(f"{field}: {message}")
        filters[field] = ""

    if filters["project"]:
        try:
            qs = qs.filter(project_id=int(filters["project"]))
        except ValueError:
            bad("project", "must be an integer")
    if filters["status"]:
        statuses = [s for s in filters["status"].split(",") if s]
        unknown = [s for s in statuses if s not in Run.Status.values]
        if unknown:
            bad("status", f"unknown status {unknown[0]!r}; one of {', '.join(Run.Status.values)}")
        else:
            qs = qs.filter(status__in=statuses)
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
    config_filters = parse_config_filters(params, errors)
    return apply_config_filters(qs, config_filters), filters, config_filters


# --- columns ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    spec: str  # "metric:policy/entropy:last" or "config:lr"
    kind: str  # "metric" | "config"
    key: str  # the metric key or the dotted config path
    agg: str = ""  # last | min | max | mean (metric columns)
    n: int = 0  # N of mean_last_N

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))

    @property
    def label(self) -> str:
        if self.kind == "config":
            return self.key
        agg = f"mean last {self.n}" if self.agg == "mean" else self.agg
        return f"{self.key} · {agg}"

    @property
    def db_sortable(self) -> bool:
        return self.kind == "config" or self.agg in ("last", "min", "max")

    @property
    def series_field(self) -> str:
        return {"last": "last_value", "min": "min_value", "max": "max_value"}.get(self.agg, "")


def parse_column(spec: str) -> Column:
    """``config:<path>`` or ``metric:<key>:<agg>``; ValueError with a message otherwise."""
    spec = spec.strip()
    kind, _, rest = spec.partition(":")
    if kind == "config":
        split_path(rest)
        return Column(spec=spec, kind="config", key=rest)
    if kind == "metric":
        key, sep, agg = rest.rpartition(":")
        if not sep or not key:
            raise ValueError("metric columns are metric:<key>:<agg>")
        if len(key) > 255:
            raise ValueError("metric keys have at most 255 characters")
        if agg in METRIC_AGGS:
            return Column(spec=spec, kind="metric", key=key, agg=agg.removeprefix("best_"))
        if m := _MEAN_RE.match(agg):
            n = int(m.group(1))
            if not 1 <= n <= MAX_MEAN_N:
                raise ValueError(f"mean_last_N takes 1 <= N <= {MAX_MEAN_N}")
            return Column(spec=spec, kind="metric", key=key, agg="mean", n=n)
        raise ValueError(
            f"unknown aggregate {agg!r}; use last, min, max, best_min, best_max or mean_last_<N>"
        )
    raise ValueError("columns are config:<path> or metric:<key>:<agg>")


def parse_columns(specs: Iterable[str], *, strict: bool = True) -> tuple[list[Column], list[str]]:
    """Columns of ``col`` parameters (duplicates dropped). ``strict``: raise RunError on a bad one;
    otherwise skip it and return the messages."""
    out: list[Column] = []
    errors: list[str] = []
    seen = set()
    for spec in specs:
        if not spec.strip():
            continue
        try:
            col = parse_column(spec)
        except ValueError as exc:
            if strict:
                raise RunError("invalid column", {"col": [f"{spec}: {exc}"]}) from None
            errors.append(f"{spec}: {exc}")
            continue
        if col.spec not in seen:
            seen.add(col.spec)
            out.append(col)
    if len(out) > MAX_COLUMNS:
        if strict:
            raise RunError("invalid column", {"col": [f"at most {MAX_COLUMNS} columns"]})
        out = out[:MAX_COLUMNS]
    return out, errors


def sort_expression(col: Column):
    """The database expression a column sorts by (None: sorted in Python)."""
    if col.kind == "config":
        return config_key(col.path)
    if col.series_field:
        return Subquery(
            MetricSeries.objects.filter(run_id=OuterRef("pk"), key=col.key).values(col.series_field)[:1]
        )
    return None


def order_by_column(qs: QuerySet[Run], col: Column, descending: bool) -> QuerySet[Run]:
    expr = sort_expression(col)
    assert expr is not None
    alias = "_sort_value"
    qs = qs.annotate(**{alias: expr})
    o = F(alias).desc(nulls_last=True) if descending else F(alias).asc(nulls_last=True)
    return qs.order_by(o, F("id").desc() if descending else F("id").asc())


def sorted_ids(qs: QuerySet[Run], col: Column, descending: bool, default_order: list) -> list[int] | None:
    """Ids of the runs of ``qs`` sorted in Python by a column the database cannot sort by
    (mean_last_N); None when more than PYTHON_SORT_LIMIT runs match (then sort each page)."""
    ids = list(qs.order_by(*default_order).values_list("id", flat=True)[: PYTHON_SORT_LIMIT + 1])
    if len(ids) > PYTHON_SORT_LIMIT:
        return None
    stubs = [Run(id=i) for i in ids]
    return [r.id for r in python_sort(stubs, column_values(stubs, [col]), col, descending)]


@dataclass
class Cell:
    value: Any = None  # the raw value (None: no value)
    step: int | None = None  # metric columns: the step of a ``last`` value
    text: str = ""  # how the table shows it

    def as_dict(self) -> dict:
        v = self.value
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        return {"value": v, "step": self.step} if self.step is not None else {"value": v}


def tail_values(series_n: dict[int, int]) -> dict[int, np.ndarray]:
    """{series id: its last N values in step order} for {series id: N}, in one query: the newest
    chunks of each series until N points are covered (a window sum over the chunk sizes). Points that
    arrived out of order sit in chunks of their own; a late chunk whose steps fall among the last N
    may be missed (rare: only late points do that)."""
    if not series_n:
        return {}
    from webapp.runs.metric_store import FLOAT, STEP, decode, fetch_rows

    n_max = max(series_n.values())
    before = Window(
        Sum("n"),
        partition_by=[F("series_id")],
        order_by=[F("step_hi").desc(), F("id").desc()],
        frame=RowRange(start=None, end=-1),
    )
    qs = (
        MetricChunk.objects.filter(series_id__in=list(series_n))
        .annotate(points_before=before)
        .filter(Q(points_before__lt=n_max) | Q(points_before__isnull=True))
        .values_list("series_id", "steps", "values")
    )
    parts: dict[int, list] = {}
    for sid, steps, values in fetch_rows(qs):
        parts.setdefault(sid, []).append((decode(steps, STEP), decode(values, FLOAT)))
    out: dict[int, np.ndarray] = {}
    for sid, n in series_n.items():
        chunks = parts.get(sid)
        if not chunks:
            out[sid] = np.empty(0)
            continue
        steps = np.concatenate([c[0] for c in chunks])
        values = np.concatenate([c[1] for c in chunks])
        out[sid] = values[np.argsort(steps, kind="stable")][-n:]
    return out


def _finite_mean(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else None


def _format_metric(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


SERIES_FIELDS = ("id", "run_id", "key", "last_step", "last_value", "min_value", "max_value", "count")


def series_rows(run_ids: Iterable[int], keys: Iterable[str]) -> list[tuple]:
    """MetricSeries rows (SERIES_FIELDS) of ``keys`` of ``run_ids``, in one query. The runs table
    asks once for its metric columns and the entropy keys of the collapse rule together."""
    run_ids, keys = list(run_ids), set(keys)
    if not run_ids or not keys:
        return []
    return list(MetricSeries.objects.filter(run_id__in=run_ids, key__in=keys).values_list(*SERIES_FIELDS))


def column_values(
    runs: Sequence[Run], columns: Sequence[Column], series: list[tuple] | None = None
) -> dict[int, dict[str, Cell]]:
    """{run id: {column spec: Cell}} for ``runs``: one query on MetricSeries for every metric column
    (none when ``series`` rows are given), one more on the chunks when a mean_last_N column is asked for."""
    out: dict[int, dict[str, Cell]] = {r.id: {} for r in runs}
    metric_cols = [c for c in columns if c.kind == "metric"]
    for col in columns:
        if col.kind == "config":
            for run in runs:
                value = config_value(run.config, col.path, default=_MISSING)
                out[run.id][col.spec] = (
                    Cell() if value is _MISSING else Cell(value=value, text=display_value(value))
                )
    if not metric_cols or not runs:
        return out
    if series is None:
        series = series_rows([r.id for r in runs], {c.key for c in metric_cols})
    by_run_key: dict[tuple[int, str], tuple] = {(r[1], r[2]): r for r in series}
    tails_wanted: dict[int, int] = {}
    for col in metric_cols:
        if col.agg == "mean":
            for run in runs:
                if s := by_run_key.get((run.id, col.key)):
                    tails_wanted[s[0]] = max(tails_wanted.get(s[0], 0), col.n)
    tails = tail_values(tails_wanted)
    for col in metric_cols:
        for run in runs:
            s = by_run_key.get((run.id, col.key))
            if s is None:
                out[run.id][col.spec] = Cell()
                continue
            sid, _, _, last_step, last_value, min_value, max_value, _ = s
            if col.agg == "last":
                cell = Cell(value=last_value, step=last_step)
            elif col.agg == "min":
                cell = Cell(value=min_value)
            elif col.agg == "max":
                cell = Cell(value=max_value)
            else:
                cell = Cell(value=_finite_mean(tails.get(sid, np.empty(0))[-col.n :]))
            cell.text = _format_metric(cell.value)
            out[run.id][col.spec] = cell
    return out


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def python_sort(
    runs: list[Run], values: dict[int, dict[str, Cell]], col: Column, descending: bool
) -> list[Run]:
    """Sort by a column's computed values, runs without a value last (either direction)."""

    def key(run: Run):
        v = values[run.id][col.spec].value
        missing = v is None or (isinstance(v, float) and math.isnan(v))
        return (missing, 0.0 if missing else (-v if descending else v), -run.id if descending else run.id)

    return sorted(runs, key=key)


def best_per_group(qs: QuerySet[Run], col: Column, descending: bool) -> set[int] | None:
    """Ids of each group's best run of ``qs`` by ``col`` (the highest value when ``descending``; ties
    go to the newest run). Runs without a group form one group; a run without a value is never best.
    None when more than PYTHON_SORT_LIMIT runs match (the values are computed in Python, as for
    mean_last_N sorting)."""
    fields = ("id", "group", "config") if col.kind == "config" else ("id", "group")
    rows = list(qs.order_by().values_list(*fields)[: PYTHON_SORT_LIMIT + 1])
    if len(rows) > PYTHON_SORT_LIMIT:
        return None
    stubs = [Run(id=r[0], group=r[1], config=r[2] if len(r) > 2 else {}) for r in rows]
    values = column_values(stubs, [col])
    best: dict[str, tuple[float, int]] = {}  # group -> (signed value, id): the largest wins
    for run in stubs:
        v = values[run.id][col.spec].value
        if not _is_number(v) or not math.isfinite(v):  # only numbers rank (a config string does not)
            continue
        candidate = (v if descending else -v, run.id)
        group = run.group or ""
        if group not in best or candidate > best[group]:
            best[group] = candidate
    return {run_id for _, run_id in best.values()}


def columns_query(columns: Iterable[Column]) -> list[str]:
    return [c.spec for c in columns]


def _benchmark_label(e: Evaluation) -> str:
    """A benchmark dataset as "name vN"; a generated benchmark (no dataset) by its benchmark_name."""
    if e.benchmark_id is not None:
        return f"{e.benchmark.name} v{e.benchmark.version}"
    return getattr(e, "benchmark_name", "") or "benchmark"


def _metric_value(name: str, value: Any) -> bool:
    """A finite number, or under "<metric>_ci" an interval [lo, hi] of finite numbers."""
    if name.endswith("_ci") and isinstance(value, list):
        return len(value) == 2 and all(_is_number(v) and math.isfinite(v) for v in value)
    return _is_number(value) and math.isfinite(value)


def evaluations_of(run_ids: list[int]) -> list[dict]:
    """Succeeded evaluations of ``run_ids`` (benchmark, run, step order): the compare page's
    accuracy-against-step charts (every metric, with its "<metric>_ci" interval when it has one, and
    the protocol key: webapp.runs.eval_protocol)."""
    from webapp.runs.eval_protocol import protocol_key

    rows = (
        Evaluation.objects.filter(run_id__in=run_ids, status=Evaluation.Status.SUCCEEDED)
        .select_related("benchmark")
        .order_by("benchmark__name", "benchmark__version", "benchmark_name", "run_id", "step", "id")
    )
    return [
        {
            "id": e.id,
            "run": e.run_id,
            "benchmark": e.benchmark_id,
            "benchmark_name": _benchmark_label(e),
            "step": e.step,
            "k": e.k,
            "metrics": {k: v for k, v in (e.metrics or {}).items() if _metric_value(k, v)},
            "protocol_key": protocol_key(e.protocol),
        }
        for e in rows
    ]


# --- compare reads -----------------------------------------------------------------------------------
#
# The compare page reads many runs x keys per load through the one metric reader
# (metric_store.read_series: summaries for long series, the M4 rule of webapp.runs.downsample), with
# a cache of downsampled series in front of it.

m4_fast = m4  # the name the compare page's reader had; there is one M4 (webapp.runs.downsample)


def compare_series(
    run_ids: Iterable[int],
    keys: Iterable[str] | None = None,
    *,
    since_step: int | None = None,
    max_points: int | None = None,
    with_wall: bool = False,
) -> dict[int, dict[str, dict[str, np.ndarray]]]:
    """metric_store.series_read's answer (``{run_id: {key: {steps, values[, walls]}}}``), read by
    it, with downsampled series cached until their series is written to."""
    from webapp.runs.metric_store import read_series

    run_ids = list(run_ids)
    series = MetricSeries.objects.filter(run_id__in=run_ids)
    if keys is not None:
        series = series.filter(key__in=list(keys))
    rows = list(series.values_list("id", "run_id", "key", "count", "last_step"))
    out: dict[int, dict[str, dict[str, np.ndarray]]] = {rid: {} for rid in run_ids}
    cache_keys: dict[tuple[int, str], str] = {}
    todo = rows
    if max_points is not None and since_step is None and compare_cache_enabled():
        # A downsampled series is cached under its point count and last step: any write changes
        # them, so a finished run's series is read once (per cache: see compare_cache_enabled).
        for sid, run_id, key, count, last in rows:
            cache_keys[(run_id, key)] = f"orlab:m4:{sid}:{count}:{last}:{max_points}:{int(with_wall)}"
        hits = cache.get_many(list(cache_keys.values()))
        todo = []
        for row in rows:
            hit = hits.get(cache_keys[(row[1], row[2])])
            if hit is not None:
                out[row[1]][row[2]] = hit
            else:
                todo.append(row)
    if not todo:
        return out
    fresh = {}
    for (run_id, key), entry in read_series(
        [r[:4] for r in todo], since_step=since_step, max_points=max_points, with_wall=with_wall
    ).items():
        out[run_id][key] = entry
        if (run_id, key) in cache_keys:
            fresh[cache_keys[(run_id, key)]] = entry
    if fresh:
        cache.set_many(fresh, COMPARE_CACHE_SECONDS)
    return out


COMPARE_CACHE_SECONDS = 24 * 3600


def compare_cache_enabled() -> bool:
    """ORLAB_COMPARE_CACHE (setting, or environment variable "0"/"1"; default on): keep downsampled
    series in Django's cache. The default LocMemCache is per process; configure CACHES with Redis or
    memcached to share it between the web workers."""
    value = getattr(settings, "ORLAB_COMPARE_CACHE", None)
    if value is None:
        value = os.environ.get("ORLAB_COMPARE_CACHE", "1") not in ("0", "false", "no", "off")
    return bool(value)
