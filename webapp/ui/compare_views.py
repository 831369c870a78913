"""The compare page: its state in the URL, the config diff and legend labels; compare.js draws."""

from __future__ import annotations

import json
import math

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import Resolver404, resolve, reverse

from webapp.runs import collapse, selectors, table
from webapp.runs.models import Run
from webapp.ui.helpers import _spec

MAX_COMPARE = 100


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


def events_api() -> str | None:
    """GET /api/compare/events/ (alert events as chart marks, issue 15) when that route exists: the
    page asks for events only then, so it needs no request that would 404 (nor its console error)
    while the alerts API is not there. Found by path, whatever name the route has."""
    path = reverse("api-compare-series").replace("/series/", "/events/")
    try:
        resolve(path)
    except Resolver404:
        return None
    return path


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
        "events_api": events_api(),
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
