"""MLflow REST 2.0 endpoints (``/mlflow/api/2.0/mlflow/...`` and ``/mlflow/ajax-api/2.0/mlflow/...``)
and the artifact proxy (``/mlflow/api/2.0/mlflow-artifacts/artifacts/...``). One dispatcher: an
endpoint not in ENDPOINTS answers 404 ENDPOINT_NOT_FOUND in MLflow's error format."""

from __future__ import annotations

import base64
import logging
import math
import os
import posixpath
import secrets
from pathlib import Path

import numpy as np
import orjson
from django.conf import settings
from django.db import DatabaseError
from django.http import FileResponse, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from webapp.json_checks import MAX_DEPTH, MAX_SAFE_INT, UnsafeJSON, check_json
from webapp.mlflow_api import search
from webapp.mlflow_api import services as svc
from webapp.mlflow_api.auth import authenticate
from webapp.mlflow_api.entities import (
    MAX_KEY_LENGTH,
    MAX_STEP,
    MLFLOW_STATUSES,
    experiment_dict,
    int_in,
    key_in,
    latest_metrics,
    mlflow_state,
    ms,
    number_in,
    number_out,
    run_dict,
    step_in,
    string_in,
)
from webapp.mlflow_api.errors import MlflowApiError, error_response, invalid, missing
from webapp.projects.selectors import project_list
from webapp.runs.metric_store import FLOAT, STEP, decode, fetch_rows
from webapp.runs.models import MetricChunk, MetricSeries
from webapp.runs.retention import run_artifact_dir

log = logging.getLogger(__name__)

MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
SEARCH_MAX_RESULTS = 50_000
SEARCH_DEFAULT_RESULTS = 1000
HISTORY_DEFAULT_RESULTS = 25_000
HISTORY_MAX_RESULTS = 25_000
ARTIFACT_DIR = "mlflow-artifacts"
DEFAULT_ARTIFACT_MAX_BYTES = 10 * 1024 * 1024


def _json(data, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")


def _body(request) -> dict:
    if request.method == "GET":
        return {k: (v[0] if len(v) == 1 else v) for k, v in request.GET.lists()}
    raw = request.body
    if not raw.strip():
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"Malformed request: the body is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise invalid("Malformed request: the body must be a JSON object")
    if b"\\u0000" in raw or not _within_rule(data):
        try:  # the project's one JSON rule (NUL, lone surrogates, +-2^53, depth), naming the field
            check_json(data)
        except UnsafeJSON as exc:
            raise invalid(f"Invalid value for parameter '{exc.path or 'body'}': {exc.reason}") from None
    return data


def _within_rule(data) -> bool:
    """Whether a body orjson parsed passes check_json, without building a path per value (a
    1,000-metric log-batch is 5,000 values: check_json took ~10 ms of a ~40 ms request). orjson
    itself refuses lone surrogates and non-finite numbers, and the caller has ruled out NUL (JSON
    can only carry it escaped, as \\u0000), so what is left are integers beyond +-2^53 and depth.
    False sends the body through check_json, which names the field."""
    level, depth = [data], 0
    while level:
        if depth >= MAX_DEPTH:
            return False
        deeper = []
        for item in level:
            for value in item.values() if type(item) is dict else item:
                kind = type(value)
                if kind is int:
                    if not -MAX_SAFE_INT <= value <= MAX_SAFE_INT:
                        return False
                elif kind is dict or kind is list:
                    deeper.append(value)
        level, depth = deeper, depth + 1
    return True


def _token(data: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode()


def _untoken(token, field: str = "page_token") -> dict:
    try:
        data = orjson.loads(base64.urlsafe_b64decode(str(token).encode()))
        if isinstance(data, dict):
            return data
    except (ValueError, orjson.JSONDecodeError):
        pass
    raise invalid(f"Invalid page token: {str(token)[:40]!r}")


def _max_results(value, default: int, top: int) -> int:
    n = int_in(value, "max_results", default=default, lo=-(2**62), hi=2**62)
    if n <= 0 or n > top:
        raise invalid(
            f"Invalid value {n} for parameter 'max_results' supplied. It must be at most {top}, and above 0"
        )
    return n


def _run_out(run) -> dict:
    return run_dict(run, mlflow_state(run), latest_metrics([run.pk]).get(run.pk, {}))


# --- experiments ------------------------------------------------------------------------------


def experiments_create(user, data):
    name = string_in(data.get("name"), "name").strip()
    if not name:
        raise invalid("Invalid experiment name: ''")
    if len(name) > 200:
        raise invalid("Experiment name is longer than 200 characters (orlab's project names)")
    project = svc.experiment_create(user, name)
    return {"experiment_id": str(project.pk)}


def experiments_get(user, data):
    eid = data.get("experiment_id")
    if eid is None or eid == "":
        raise invalid("Missing value for required parameter 'experiment_id'")
    project = svc.experiment_get(user, eid)
    return {"experiment": experiment_dict(project)}


def experiments_get_by_name(user, data):
    name = string_in(data.get("experiment_name"), "experiment_name")
    project = svc.experiment_by_name(user, name)
    if project is None:
        raise missing(f"Could not find experiment with name '{name}'")
    return {"experiment": experiment_dict(project)}


def experiments_search(user, data):
    comparisons = search.parse_filter(data.get("filter"), for_experiments=True)
    order = search.parse_order_by(data.get("order_by"), for_experiments=True)
    n = _max_results(data.get("max_results"), 1000, 50_000)
    offset = _untoken(data["page_token"]).get("offset", 0) if data.get("page_token") else 0
    view = str(data.get("view_type", "ACTIVE_ONLY"))
    if view == "DELETED_ONLY":
        return {"experiments": []}
    rows = []
    for project in project_list(user=user).order_by("pk"):
        exp = experiment_dict(project)
        values = {
            "name": exp["name"],
            "experiment_id": exp["experiment_id"],
            "creation_time": exp["creation_time"],
            "last_update_time": exp["last_update_time"],
        }
        tags = {t["key"]: t["value"] for t in exp["tags"]}
        if all(
            search.matches(c, values.get(c.key) if c.type == "attribute" else tags.get(c.key))
            for c in comparisons
        ):
            rows.append((exp, values, tags))
    keys = order or [search.OrderBy("attribute", "last_update_time", False)]
    for ob in reversed(keys):
        present = [r for r in rows if (r[1] if ob.type == "attribute" else r[2]).get(ob.key) is not None]
        absent = [r for r in rows if (r[1] if ob.type == "attribute" else r[2]).get(ob.key) is None]
        present.sort(
            key=lambda r: (r[1] if ob.type == "attribute" else r[2])[ob.key], reverse=not ob.ascending
        )
        rows = present + absent
    page = rows[offset : offset + n]
    out = {"experiments": [r[0] for r in page]}
    if offset + n < len(rows):
        out["next_page_token"] = _token({"offset": offset + n})
    return out


# --- runs -------------------------------------------------------------------------------------


def _tags_in(items) -> list[tuple[str, str]]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise invalid("Invalid value for parameter 'tags' supplied: expected a list of {key, value}")
    out = []
    for i, t in enumerate(items):
        if not isinstance(t, dict):
            raise invalid(f"Invalid value for parameter 'tags[{i}]' supplied: expected {{key, value}}")
        out.append((t.get("key"), t.get("value")))
    return out


def runs_create(user, data):
    project = svc.experiment_get(user, data.get("experiment_id") or "0")
    tags = {}
    for key, value in _tags_in(data.get("tags")):
        key, value = svc._check_tag(key, value)
        tags[key] = value
    name = string_in(data.get("run_name"), "run_name", required=False)
    start = int_in(data.get("start_time"), "start_time", lo=0, hi=2**53)
    if data.get("user_id") and "mlflow.user" not in tags:
        tags["mlflow.user"] = string_in(data.get("user_id"), "user_id")[:250]
    run = svc.run_create(user, project, name=name, start_time=start, tags=tags)
    run = svc.run_get(user, run.pk)
    return {"run": _run_out(run)}


def _run_id(data) -> str:
    rid = data.get("run_id") or data.get("run_uuid")
    if rid is None or rid == "":
        raise invalid("Missing value for required parameter 'run_id'")
    return str(rid)


def runs_get(user, data):
    return {"run": _run_out(svc.run_get(user, _run_id(data)))}


def runs_update(user, data):
    run = svc.run_get(user, _run_id(data), for_write=True)
    status = data.get("status")
    if status is not None and status not in MLFLOW_STATUSES:
        raise invalid(
            f"Invalid value {status!r} for parameter 'status' supplied; one of {list(MLFLOW_STATUSES)}"
        )
    end = int_in(data.get("end_time"), "end_time", lo=0, hi=2**53)
    name = string_in(data.get("run_name"), "run_name", required=False) or None
    run = svc.run_update(run, status=status, end_time=end, name=name)
    run = svc.run_get(user, run.pk)
    return {"run_info": _run_out(run)["info"]}


def runs_delete(user, data):
    svc.run_set_deleted(svc.run_get(user, _run_id(data)), True)
    return {}


def runs_restore(user, data):
    svc.run_set_deleted(svc.run_get(user, _run_id(data)), False)
    return {}


def _metric_in(m, where: str) -> tuple[str, float, int, int]:
    if type(m) is dict:  # the common, well-formed metric in a few type checks (the rules below)
        key, value, ts, step = m.get("key"), m.get("value"), m.get("timestamp"), m.get("step", 0)
        if (
            type(key) is str
            and 0 < len(key) <= MAX_KEY_LENGTH
            and "\x00" not in key
            and (type(value) is float or type(value) is int)
            and type(ts) is int
            and -MAX_STEP <= ts <= MAX_STEP
            and type(step) is int
            and -MAX_STEP <= step <= MAX_STEP
        ):
            return key, float(value), step, ts
    if not isinstance(m, dict):
        raise invalid(
            f"Invalid value for parameter '{where}' supplied: expected {{key, value, timestamp, step}}"
        )
    key = key_in(m.get("key"), "key")
    if "value" not in m or m.get("value") is None:
        raise invalid(f"Missing value for required parameter '{where}value'")
    value = number_in(m["value"], "value")
    if m.get("timestamp") is None:
        raise invalid(f"Missing value for required parameter '{where}timestamp'")
    ts = int_in(m.get("timestamp"), "timestamp", lo=-(2**53), hi=2**53)
    step = step_in(m.get("step"))
    return key, value, step, ts


def runs_log_metric(user, data):
    run = svc.run_get(user, _run_id(data), for_write=True)
    svc.log_batch(run, metrics=[_metric_in(data, "")])
    return {}


def runs_log_parameter(user, data):
    run = svc.run_get(user, _run_id(data), for_write=True)
    svc.log_batch(run, params=[(data.get("key"), data.get("value"))])
    return {}


def runs_set_tag(user, data):
    run = svc.run_get(user, _run_id(data), for_write=True)
    svc.log_batch(run, tags=[(data.get("key"), data.get("value"))])
    return {}


def runs_delete_tag(user, data):
    run = svc.run_get(user, _run_id(data), for_write=True)
    svc.tag_delete(run, data.get("key"))
    return {}


def runs_log_batch(user, data):
    run = svc.run_get(user, _run_id(data), for_write=True)
    metrics, params, tags = (data.get(f) or [] for f in ("metrics", "params", "tags"))
    for name, items in (("metrics", metrics), ("params", params), ("tags", tags)):
        if not isinstance(items, list):
            raise invalid(f"Invalid value for parameter '{name}' supplied: expected a list")
    if len(metrics) > MAX_METRICS_PER_BATCH:
        raise invalid(
            f"A batch logging request can contain at most {MAX_METRICS_PER_BATCH} metrics. Got "
            f"{len(metrics)} metrics. Please split up metrics across multiple requests and try again."
        )
    for name, items in (("params", params), ("tags", tags)):
        if len(items) > MAX_PARAMS_TAGS_PER_BATCH:
            raise invalid(
                f"A batch logging request can contain at most {MAX_PARAMS_TAGS_PER_BATCH} {name}. Got "
                f"{len(items)} {name}. Please split up {name} across multiple requests and try again."
            )
    total = len(metrics) + len(params) + len(tags)
    if total > MAX_ENTITIES_PER_BATCH:
        raise invalid(
            f"A batch logging request can contain at most {MAX_ENTITIES_PER_BATCH} total metrics, params, "
            f"and tags. Got {total} total entities. Please split up across multiple requests and try again."
        )
    parsed_metrics = [_metric_in(m, f"metrics[{i}].") for i, m in enumerate(metrics)]
    for i, p in enumerate(params):
        if not isinstance(p, dict):
            raise invalid(f"Invalid value for parameter 'params[{i}]' supplied: expected {{key, value}}")
    svc.log_batch(
        run,
        metrics=parsed_metrics,
        params=[(p.get("key"), p.get("value")) for p in params],
        tags=_tags_in(tags),
    )
    return {}


def runs_log_inputs(user, data):
    run = svc.run_get(user, _run_id(data), for_write=True)
    datasets = data.get("datasets") or []
    if not isinstance(datasets, list) or not all(isinstance(d, dict) for d in datasets):
        raise invalid("Invalid value for parameter 'datasets' supplied: expected a list of dataset inputs")
    if len(orjson.dumps(datasets)) > 1_000_000:
        raise invalid("Invalid value for parameter 'datasets' supplied: at most 1 MB of dataset inputs")
    svc.inputs_log(run, datasets)
    return {}


def runs_log_outputs(user, data):
    svc.run_get(user, _run_id(data), for_write=True)
    return {}


def _run_value(c_type, key, run, state, metrics):
    if c_type == "metric":
        m = metrics.get(key)
        return None if m is None else m[0]
    if c_type == "param":
        return state.params.get(key)
    if c_type == "tag":
        if key == "mlflow.runName":
            return run.name
        return state.tags.get(key)
    if key == "status":
        from webapp.mlflow_api.entities import STATUS_TO_MLFLOW

        return STATUS_TO_MLFLOW.get(run.status, "RUNNING")
    if key == "run_name":
        return run.name
    if key == "run_id":
        return str(run.pk)
    if key == "user_id":
        return state.tags.get("mlflow.user") or (run.created_by.username if run.created_by_id else "")
    if key == "artifact_uri":
        return f"mlflow-artifacts:/{run.project_id}/{run.pk}/artifacts"
    if key == "lifecycle_stage":
        return "deleted" if state.deleted_at else "active"
    if key == "start_time":
        return ms(run.started_at or run.created_at)
    if key == "end_time":
        return ms(run.finished_at) if run.status not in ("queued", "waiting", "running") else None
    return None


def runs_search(user, data):
    ids = data.get("experiment_ids") or []
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(ids, list) or not ids:
        raise invalid("Missing value for required parameter 'experiment_ids'")
    projects = [svc.experiment_get(user, e) for e in ids]
    comparisons = search.parse_filter(data.get("filter"))
    order = search.parse_order_by(data.get("order_by"))
    n = _max_results(data.get("max_results"), SEARCH_DEFAULT_RESULTS, SEARCH_MAX_RESULTS)
    offset = _untoken(data["page_token"]).get("offset", 0) if data.get("page_token") else 0
    if not isinstance(offset, int) or offset < 0:
        raise invalid("Invalid page token")
    view = str(data.get("run_view_type", "ACTIVE_ONLY"))
    if view not in ("ACTIVE_ONLY", "DELETED_ONLY", "ALL", "1", "2", "3"):
        raise invalid(f"Invalid value {view!r} for parameter 'run_view_type'")
    runs = list(svc.visible_runs(user, projects))
    states = {r.pk: mlflow_state(r) for r in runs}
    if view in ("ACTIVE_ONLY", "1"):
        runs = [r for r in runs if states[r.pk].deleted_at is None]
    elif view in ("DELETED_ONLY", "2"):
        runs = [r for r in runs if states[r.pk].deleted_at is not None]
    metrics = latest_metrics([r.pk for r in runs])
    rows = []
    for run in runs:
        st, mt = states[run.pk], metrics.get(run.pk, {})
        if all(search.matches(c, _run_value(c.type, c.key, run, st, mt)) for c in comparisons):
            rows.append(run)
    keys = order + [
        search.OrderBy("attribute", "start_time", False),
        search.OrderBy("attribute", "run_id", True),
    ]
    for ob in reversed(keys):

        def value_of(r, ob=ob):
            v = _run_value(ob.type, ob.key, r, states[r.pk], metrics.get(r.pk, {}))
            if ob.key == "run_id" and ob.type == "attribute":
                return r.pk
            if isinstance(v, float) and math.isnan(v):
                return None
            return v

        present = [r for r in rows if value_of(r) is not None]
        absent = [r for r in rows if value_of(r) is None]
        present.sort(key=value_of, reverse=not ob.ascending)
        rows = present + absent
    page = rows[offset : offset + n]
    out = {"runs": [run_dict(r, states[r.pk], metrics.get(r.pk, {})) for r in page]}
    if offset + n < len(rows):
        out["next_page_token"] = _token({"offset": offset + n})
    return out


def metrics_get_history(user, data):
    run = svc.run_get(user, _run_id(data))
    key = key_in(data.get("metric_key"), "metric_key")
    n = _max_results(data.get("max_results"), HISTORY_DEFAULT_RESULTS, HISTORY_MAX_RESULTS)
    after = None
    if data.get("page_token"):
        after = _untoken(data["page_token"]).get("after")
        if type(after) is not int:
            raise invalid("Invalid page token")
    series = MetricSeries.objects.filter(run=run, key=key).values_list("id", flat=True).first()
    if series is None:
        return {"metrics": []}
    steps, values, walls = _history_page(series, after, n + 1)
    more = len(steps) > n
    steps, values, walls = steps[:n], values[:n], walls[:n]
    token = _token({"after": int(steps[-1])}) if more else None
    return RawJSON(_history_json(key, steps, values, walls, token))


class RawJSON(bytes):
    """A response body already encoded (dispatch sends it as it is)."""


def _history_json(key: str, steps, values, walls, token: str | None) -> bytes:
    """``{"metrics": [{"key", "value", "step", "timestamp"}, ...], "next_page_token"}`` written
    column-wise: orjson encodes each numpy column once and the points are spliced between fixed
    byte strings, instead of a Python dict per point (a 25,000-point page took ~2 us a point that
    way). The same bytes orjson writes for the dicts: floats as orjson writes them, non-finite
    values as MLflow's strings (number_out), timestamps int(wall * 1000) (truncated)."""
    n = len(steps)
    tail = b"]" + (b',"next_page_token":' + orjson.dumps(token) if token is not None else b"") + b"}"
    if n == 0:
        return b'{"metrics":[' + tail

    def column(array) -> list[bytes]:
        return orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")

    walls_ms = walls * 1000.0
    if not np.isfinite(walls_ms).all():  # what int() does with those, point by point, as before
        page = {
            "metrics": [
                {"key": key, "value": number_out(v), "step": s, "timestamp": int(w * 1000)}
                for s, v, w in zip(steps.tolist(), values.tolist(), walls.tolist(), strict=True)
            ]
        }
        return orjson.dumps(page if token is None else {**page, "next_page_token": token})
    value_parts = column(values)
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        value_parts[i] = orjson.dumps(number_out(float(values[i])))
    parts: list[bytes] = [b""] * (7 * n)
    parts[0::7] = [b'{"key":' + orjson.dumps(key) + b',"value":'] * n
    parts[1::7] = value_parts
    parts[2::7] = [b',"step":'] * n
    parts[3::7] = column(steps.astype(np.int64, copy=False))
    parts[4::7] = [b',"timestamp":'] * n
    parts[5::7] = column(walls_ms.astype(np.int64))
    parts[6::7] = [b"},"] * n
    parts[-1] = b"}"
    return b'{"metrics":[' + b"".join(parts) + tail


def _history_page(series_id: int, after: int | None, want: int):
    """The first ``want`` points (step order) of a series after step ``after``, reading only the
    chunks they can be in: chunks are taken by step_lo until they hold ``want`` points below the
    next chunk's step_lo (out-of-order chunks overlap; every point of a later chunk is at or above
    its step_lo). A page of a long series costs its own chunks, not the rest of the series."""
    chunks = MetricChunk.objects.filter(series_id=series_id)
    if after is not None:
        chunks = chunks.filter(step_hi__gt=after)
    meta = list(chunks.order_by("step_lo", "id").values_list("id", "step_lo", "n"))
    taken, count, i = [], 0, 0
    while True:
        while i < len(meta) and count < want:  # chunks holding `want` points (or all that are left)
            taken.append(meta[i][0])
            count += meta[i][2]
            i += 1
        bound = meta[i][1] if i < len(meta) else None
        parts = fetch_rows(MetricChunk.objects.filter(pk__in=taken).values_list("steps", "values", "walls"))
        steps = np.concatenate([decode(p[0], STEP) for p in parts]) if parts else np.empty(0, STEP)
        values = np.concatenate([decode(p[1], FLOAT) for p in parts]) if parts else np.empty(0, FLOAT)
        walls = np.concatenate([decode(p[2], FLOAT) for p in parts]) if parts else np.empty(0, FLOAT)
        keep = np.ones(len(steps), dtype=bool)
        if after is not None:
            keep &= steps > after
        if bound is not None:
            keep &= steps < bound
        if bound is None or int(keep.sum()) >= want:
            steps, values, walls = steps[keep], values[keep], walls[keep]
            order = np.argsort(steps, kind="stable")[:want]
            return steps[order], values[order], walls[order]
        # too few points below the next chunk's first step (chunks overlap): one more chunk, look again
        taken.append(meta[i][0])
        count += meta[i][2]
        i += 1


ENDPOINTS = {
    ("experiments/create", "POST"): experiments_create,
    ("experiments/get", "GET"): experiments_get,
    ("experiments/get-by-name", "GET"): experiments_get_by_name,
    ("experiments/search", "POST"): experiments_search,
    ("experiments/search", "GET"): experiments_search,
    ("experiments/list", "GET"): experiments_search,
    ("runs/create", "POST"): runs_create,
    ("runs/get", "GET"): runs_get,
    ("runs/update", "POST"): runs_update,
    ("runs/delete", "POST"): runs_delete,
    ("runs/restore", "POST"): runs_restore,
    ("runs/search", "POST"): runs_search,
    ("runs/log-metric", "POST"): runs_log_metric,
    ("runs/log-parameter", "POST"): runs_log_parameter,
    ("runs/set-tag", "POST"): runs_set_tag,
    ("runs/delete-tag", "POST"): runs_delete_tag,
    ("runs/log-batch", "POST"): runs_log_batch,
    ("runs/log-inputs", "POST"): runs_log_inputs,
    ("runs/outputs", "POST"): runs_log_outputs,
    ("metrics/get-history", "GET"): metrics_get_history,
}


def _guarded(request, handler):
    try:
        user = authenticate(request)
        return handler(user)
    except MlflowApiError as exc:
        return exc.response()
    except DatabaseError:
        log.exception("mlflow api: database error")
        return error_response("TEMPORARILY_UNAVAILABLE", "the database did not answer; retry")


@csrf_exempt
def dispatch(request, endpoint: str):
    handler = ENDPOINTS.get((endpoint.strip("/"), request.method))
    if handler is None:
        return not_found(request)

    def handle(user):
        out = handler(user, _body(request))
        if isinstance(out, RawJSON):
            return HttpResponse(out, content_type="application/json")
        return _json(out)

    return _guarded(request, handle)


@csrf_exempt
def not_found(request, *args, **kwargs):
    return error_response(
        "ENDPOINT_NOT_FOUND", f"No API endpoint found for {request.method} {request.path} under /mlflow"
    )


# --- artifacts (the mlflow-artifacts proxy the client uses for mlflow-artifacts:/ URIs) -------


def artifact_max_bytes() -> int:
    configured = getattr(settings, "ORLAB_MLFLOW_ARTIFACT_MAX_BYTES", None)
    if configured is None:
        configured = os.environ.get("ORLAB_MLFLOW_ARTIFACT_MAX_BYTES") or DEFAULT_ARTIFACT_MAX_BYTES
    return int(float(configured))


def run_artifact_root(run_id: int) -> Path:
    return run_artifact_dir(run_id) / ARTIFACT_DIR


def _split_artifact_path(user, path: str, *, for_write: bool):
    """``<experiment id>/<run id>/artifacts[/<relative path>]`` -> (run, relative path)."""
    path = (path or "").strip("/")
    parts = path.split("/")
    if len(parts) < 3 or parts[2] != "artifacts":
        raise missing(f"No artifact location {path!r}: expected <experiment id>/<run id>/artifacts/<path>")
    run = svc.run_get(user, parts[1], for_write=for_write)
    if parts[0] != str(run.project_id) and parts[0] != "0":
        raise missing(f"Run with id={parts[1]} not found")
    rel = "/".join(parts[3:])
    if rel:
        norm = posixpath.normpath(rel)
        if (
            "\x00" in rel
            or "\\" in rel
            or norm.startswith("../")
            or norm == ".."
            or norm.startswith("/")
            or any(p in ("..", ".") for p in rel.split("/"))
        ):
            raise invalid(f"Invalid artifact path {rel!r}")
        rel = norm
    return run, rel


def _artifact_put(request, user, path: str):
    run, rel = _split_artifact_path(user, path, for_write=True)
    if not rel:
        raise invalid("An artifact upload needs a file path")
    limit = artifact_max_bytes()
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > limit:
        raise invalid(
            f"Artifact {rel!r} is larger than the limit of {limit} bytes (ORLAB_MLFLOW_ARTIFACT_MAX_BYTES)"
        )
    root = run_artifact_root(run.pk)
    target = root / rel
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a folder is needed, a name too long...
        raise invalid(f"Invalid artifact path {rel!r}: {exc.strerror}") from None
    if target.is_dir():
        raise invalid(f"Artifact path {rel!r} is a directory")
    staging = target.parent / f".incoming-{secrets.token_hex(6)}"
    size = 0
    try:
        with open(staging, "wb") as out:
            while chunk := request.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise invalid(
                        f"Artifact {rel!r} is larger than the limit of {limit} bytes (ORLAB_MLFLOW_ARTIFACT_MAX_BYTES)"
                    )
                out.write(chunk)
        try:
            os.replace(staging, target)
        except OSError as exc:
            raise invalid(f"Invalid artifact path {rel!r}: {exc.strerror}") from None
    finally:
        staging.unlink(missing_ok=True)
    _artifact_recorded(run, rel, target)
    return _json({})


def _artifact_recorded(run, rel: str, target: Path) -> None:
    """Hook for artifacts orlab understands (verl's validation generations -> samples)."""
    try:
        from webapp.mlflow_api.verl import maybe_samples_from_artifact
    except ImportError:
        return
    maybe_samples_from_artifact(run, rel, target)


def _artifact_get(user, path: str):
    run, rel = _split_artifact_path(user, path, for_write=False)
    target = run_artifact_root(run.pk) / rel
    if not rel or not target.is_file():
        raise missing(f"Artifact {rel!r} of run {run.pk} not found")
    return FileResponse(open(target, "rb"), content_type="application/octet-stream")


def list_artifact_files(run_id: int, rel: str = "") -> list[dict]:
    base = run_artifact_root(run_id)
    where = base / rel if rel else base
    if not where.is_dir():
        return []
    out = []
    for child in sorted(where.iterdir()):
        if child.name.startswith(".incoming-"):
            continue
        entry = {"path": child.name, "is_dir": child.is_dir()}
        if not entry["is_dir"]:
            entry["file_size"] = child.stat().st_size
        out.append(entry)
    return out


def run_artifacts(run_id: int, limit: int = 200) -> list[dict]:
    """Every file logged through the MLflow artifact proxy for the run page: ``[{path, size}]``,
    sorted by path, at most ``limit``."""
    base = run_artifact_root(run_id)
    if not base.is_dir():
        return []
    out = []
    for path in sorted(base.rglob("*")):
        if path.is_file() and not path.name.startswith(".incoming-"):
            out.append({"path": path.relative_to(base).as_posix(), "size": path.stat().st_size})
            if len(out) >= limit:
                break
    return out


@csrf_exempt
def artifacts_list(request):
    def handle(user):
        if request.method != "GET":
            raise MlflowApiError("ENDPOINT_NOT_FOUND", f"No API endpoint for {request.method} {request.path}")
        run, rel = _split_artifact_path(user, request.GET.get("path", ""), for_write=False)
        return _json({"files": list_artifact_files(run.pk, rel)})

    return _guarded(request, handle)


@csrf_exempt
def artifact_file(request, path: str):
    def handle(user):
        if request.method == "PUT":
            return _artifact_put(request, user, path)
        if request.method == "GET":
            return _artifact_get(user, path)
        raise MlflowApiError("ENDPOINT_NOT_FOUND", f"No API endpoint for {request.method} {request.path}")

    return _guarded(request, handle)
