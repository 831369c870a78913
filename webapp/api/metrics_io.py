"""Parsing and validating a metric batch from the API, fast enough for ~10^5 points/s.

A batch is all-or-nothing: one bad point rejects the whole batch (with the index and reason of the
first errors) and nothing is written."""

from __future__ import annotations

import time

import orjson

from webapp.runs.metric_store import Columns

MAX_POINTS = 100_000
MAX_ERRORS = 20
MAX_STEP = 2**62


class BatchError(Exception):
    def __init__(self, detail: str, errors: dict[str, list[str]]):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


def parse_metric_batch(body: bytes) -> tuple[dict[str, Columns], int]:
    """Returns (key -> columns, number of points). Raises BatchError.

    Values: JSON numbers; null stands for a non-finite value (JSON has no NaN) and is stored as NaN,
    returned as null. Booleans and strings are rejected, as are NaN/Infinity literals."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BatchError("invalid JSON", {"__all__": [str(exc)]}) from None
    if isinstance(data, dict) and "points" in data:
        data = data["points"]
    if not isinstance(data, list):
        raise BatchError("invalid batch", {"__all__": ["expected a list of {key, step, value, wall_time?}"]})
    if len(data) > MAX_POINTS:
        raise BatchError(
            "batch too large", {"__all__": [f"{len(data)} points; at most {MAX_POINTS} per request"]}
        )

    now = time.time()
    errors: dict[str, list[str]] = {}
    columns: dict[str, tuple[list, list, list]] = {}
    for i, point in enumerate(data):
        try:
            key = point["key"]
            step = point["step"]
            value = point["value"]
            wall = point.get("wall_time", now)
        except (KeyError, TypeError, AttributeError):
            problem = _missing(point)
            errors[f"[{i}]"] = [problem]
            if len(errors) >= MAX_ERRORS:
                break
            continue
        # type() checks, not isinstance: bool is an int subclass and must not pass as a number.
        if type(key) is not str or not key or len(key) > 255 or "\x00" in key:
            errors[f"[{i}].key"] = ["must be a non-empty string of at most 255 characters, without NUL"]
        elif type(step) is not int or step < 0 or step > MAX_STEP:
            errors[f"[{i}].step"] = ["must be a non-negative integer"]
        elif value is not None and type(value) is not float and type(value) is not int:
            errors[f"[{i}].value"] = ["must be a number or null"]
        elif type(wall) is not float and type(wall) is not int:
            errors[f"[{i}].wall_time"] = ["must be a number (unix seconds)"]
        else:
            cols = columns.get(key)
            if cols is None:
                cols = columns[key] = ([], [], [])
            cols[0].append(step)
            cols[1].append(float("nan") if value is None else value)
            cols[2].append(wall)
            continue
        if len(errors) >= MAX_ERRORS:
            break
    if errors:
        raise BatchError("invalid points; nothing was written", errors)
    return {k: Columns.of(*c) for k, c in columns.items()}, len(data)


def _missing(point) -> str:
    if not isinstance(point, dict):
        return "must be an object {key, step, value, wall_time?}"
    missing = [f for f in ("key", "step", "value") if f not in point]
    return f"missing field(s): {', '.join(missing)}"


def render_series(series: dict[str, dict]) -> bytes:
    """``{key: {"steps": [...], "values": [...]}}``; NaN values become null."""
    return orjson.dumps(series, option=orjson.OPT_SERIALIZE_NUMPY)
