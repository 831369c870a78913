"""Datasets a run produces: DAPO's Monte-Carlo step values (kind "step_values").

A trainer writes a JSONL file and calls ``sink.publish_dataset``; the worker's sink hands it here. The
file is validated whole before anything is stored, then inserted in one transaction as a new version
of the named dataset, linked to the run: all or nothing, like an import."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Max

from webapp.datasets.models import Dataset, StepSolution
from webapp.datasets.services import ImportRejected, file_sha256
from webapp.runs import capabilities

# Enough for any CPU demo and far beyond; a GPU run publishing millions of prefixes should stream.
MAX_ROWS = 1_000_000
MAX_ERRORS = 20
SUMMARY_KEY = "value_summary"  # in Dataset.meta


def parse_step_row(raw: Any) -> StepSolution:
    """One row -> an unsaved StepSolution, or ValueError naming the bad field."""
    if not isinstance(raw, dict):
        raise ValueError("row must be a JSON object")
    for key in ("prompt", "solution"):
        if not isinstance(raw.get(key), str):
            raise ValueError(f"'{key}' must be a string")
    steps, values = raw.get("steps"), raw.get("values")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        raise ValueError("'steps' must be a non-empty list of strings")
    if not isinstance(values, list) or len(values) != len(steps) + 1:
        raise ValueError(f"'values' must be a list of len(steps) + 1 = {len(steps) + 1} numbers")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not 0 <= v <= 1:
            raise ValueError(f"'values' must be probabilities in [0, 1]; got {v!r}")
    correct = raw.get("correct", values[-1] >= 0.5)
    if not isinstance(correct, bool):
        raise ValueError("'correct' must be true or false")
    known = {"prompt", "answer", "solution", "steps", "values", "correct", "verdict"}
    return StepSolution(
        prompt=raw["prompt"],
        answer=str(raw.get("answer", "")),
        solution=raw["solution"],
        steps=steps,
        values=[float(v) for v in values],
        correct=correct,
        verdict=str(raw.get("verdict", ""))[:32],
        metadata={k: v for k, v in raw.items() if k not in known},
    )


def read_step_rows(path: Path) -> list[StepSolution]:
    """Every row, read by the imports' bounded JSONL reader (a line at most MAX_RECORD_BYTES, nesting
    checked before the parser recurses) and checked as stored JSON (NUL, surrogates, big integers)."""
    from webapp.datasets.readers import iter_records
    from webapp.datasets.validation import RowError, check_json

    rows, errors = [], []
    with open(path, "rb") as f:
        for line_no, record in iter_records(f, "jsonl"):
            try:
                if isinstance(record, str):
                    raise ValueError(record)
                check_json(record)
                rows.append(parse_step_row(record))
            except (ValueError, RowError) as exc:
                errors.append(f"line {line_no}: {exc}")
                if len(errors) >= MAX_ERRORS:
                    break
            if len(rows) > MAX_ROWS:
                raise ImportRejected("too many rows", {"file": [f"more than {MAX_ROWS} rows"]})
    if errors:
        raise ImportRejected("invalid step-value rows", {"rows": errors})
    if not rows:
        raise ImportRejected("empty dataset", {"file": ["no rows"]})
    return rows


def step_values_publish(run, *, kind: str, name: str, path: Path, meta: Mapping[str, Any] | None) -> Dataset:
    """Store ``path`` as the next version of dataset ``name`` in the run's project. Publishing the same
    file again from the same run (a resumed attempt) returns the existing version. A run publishes only
    what its trainer declares (TrainerSpec.publishes_datasets)."""
    if kind != Dataset.Kind.STEP_VALUES:
        raise ImportRejected(
            "unknown dataset kind", {"kind": [f"a run can publish only step_values, not {kind!r}"]}
        )
    if kind not in capabilities.publishes(run.kind):
        raise ImportRejected(
            "undeclared dataset kind", {"kind": [f"{run.kind} runs do not publish {kind} datasets"]}
        )
    name = (name or "").strip()[:200] or f"run-{run.pk}-step-values"
    sha = file_sha256(path)
    existing = Dataset.objects.filter(project=run.project, name=name, source_run=run, sha256=sha).first()
    if existing is not None:
        return existing
    rows = read_step_rows(path)
    with transaction.atomic():
        # Lock the project's row so two publishers cannot take the same version number.
        type(run.project).objects.select_for_update().get(pk=run.project_id)
        latest = Dataset.objects.filter(project=run.project, name=name).aggregate(v=Max("version"))["v"]
        dataset = Dataset.objects.create(
            project=run.project,
            name=name,
            kind=Dataset.Kind.STEP_VALUES,
            version=(latest or 0) + 1,
            status=Dataset.Status.READY,
            sha256=sha,
            row_count=len(rows),
            progress=1.0,
            meta={**dict(meta or {}), "source_run": run.pk, SUMMARY_KEY: summarise_values(rows)},
            source_run=run,
            created_by=run.created_by,
        )
        for i, row in enumerate(rows):
            row.dataset = dataset
            row.row = i
        StepSolution.objects.bulk_create(rows, batch_size=2000)
    return dataset


def summarise_values(rows: list[StepSolution], max_steps: int = 32) -> dict[str, list]:
    """Mean MC value after step t, for solutions that ended correct and those that did not: the chart
    at the top of the solution browser (a good critic's targets separate the two curves early).
    Computed once, when the dataset is published, and kept in its meta."""
    sums = {True: [0.0] * (max_steps + 1), False: [0.0] * (max_steps + 1)}
    counts = {True: [0] * (max_steps + 1), False: [0] * (max_steps + 1)}
    for row in rows:
        for t, v in enumerate(row.values[: max_steps + 1]):
            sums[row.correct][t] += v
            counts[row.correct][t] += 1
    out: dict[str, list] = {}
    for correct, label in ((True, "correct"), (False, "wrong")):
        steps = [t for t in range(max_steps + 1) if counts[correct][t]]
        out[label] = [[t, sums[correct][t] / counts[correct][t], counts[correct][t]] for t in steps]
    return out


def value_summary(dataset: Dataset) -> dict[str, list]:
    return (dataset.meta or {}).get(SUMMARY_KEY) or {"correct": [], "wrong": []}
