"""A run's metrics as CSV (issue 16 point 7): one row per point, with the run's id and name on every
row, so files exported from several runs can be concatenated and still say whose each point is.

Streamed key by key through the one metric reader (metric_store.series_read), full resolution: an
export is the data, not the chart's downsampled view."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator

from webapp.runs.metric_store import series_read
from webapp.runs.models import Run
from webapp.runs.selectors import metric_keys

HEADER = ("run_id", "run", "key", "step", "value")
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): such a text cell
# (a run name is user text) gets a leading apostrophe, as OWASP advises; numbers are never touched.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_START) else value


def _number(value: float) -> str:
    return repr(float(value)) if math.isfinite(value) else ""  # NaN/inf: an empty cell, as the compare CSV


def metrics_csv_rows(run: Run, keys: list[str] | None = None) -> Iterator[str]:
    """The CSV text in pieces (a header, then one piece per key)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    yield buffer.getvalue()
    name = _text(run.name)
    for key in keys if keys is not None else metric_keys(run):
        series = series_read([run.id], [key])[run.id].get(key)
        if series is None:
            continue
        buffer.seek(0)
        buffer.truncate()
        label = _text(key)
        writer.writerows(
            (run.id, name, label, int(step), _number(value))
            for step, value in zip(series["steps"].tolist(), series["values"].tolist(), strict=True)
        )
        yield buffer.getvalue()


def metrics_csv_filename(run: Run) -> str:
    return f"run-{run.pk}-metrics.csv"
