"""orlab objects in MLflow's REST JSON shapes, and MLflow's input rules (values, steps, lengths)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from webapp.mlflow_api.errors import invalid
from webapp.mlflow_api.models import MlflowRun
from webapp.projects.models import Project
from webapp.runs.metric_store import FLOAT, decode
from webapp.runs.models import MetricChunk, MetricSeries, Run

MAX_KEY_LENGTH = 250  # MLflow's MAX_ENTITY_KEY_LENGTH
MAX_PARAM_BYTES = 6000  # MLflow's MAX_PARAM_VAL_LENGTH (as UTF-8 bytes here: the rule)
MAX_TAG_LENGTH = 8000  # MLflow's MAX_TAG_VAL_LENGTH
MAX_STEP = 2**53  # orlab's JSON-safe integers
MAX_RUN_NAME = 200  # orlab's Run.name

# orlab status -> MLflow RunStatus
STATUS_TO_MLFLOW = {
    Run.Status.QUEUED: "SCHEDULED",
    Run.Status.WAITING: "SCHEDULED",
    Run.Status.RUNNING: "RUNNING",
    Run.Status.INTERRUPTED: "KILLED",
    Run.Status.SUCCEEDED: "FINISHED",
    Run.Status.FAILED: "FAILED",
    Run.Status.CANCELLED: "KILLED",
    Run.Status.LOST: "FAILED",
}
MLFLOW_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")


def ms(dt) -> int | None:
    return int(dt.timestamp() * 1000) if dt is not None else None


def number_out(value: float):
    """A double as MLflow's server writes it (protobuf JSON): non-finite values as strings."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def number_in(value, field: str) -> float:
    """A double as protobuf's JSON parser reads it: a number, or a string holding one
    ("NaN", "Infinity", "-Infinity" included). Booleans are refused."""
    if type(value) is float or type(value) is int:
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise invalid(f"Invalid value {value!r} for parameter '{field}' supplied: expected a number")


def int_in(value, field: str, *, default=None, lo: int = -(2**63), hi: int = 2**63 - 1) -> int | None:
    if value is None or value == "":
        if default is not None:
            return default
        return None
    if type(value) is int:
        out = value
    elif (
        isinstance(value, str)
        and value.strip().lstrip("+-").isdigit()
        or type(value) is float
        and value.is_integer()
    ):
        out = int(value)
    else:
        raise invalid(f"Invalid value {value!r} for parameter '{field}' supplied: expected an integer")
    if not lo <= out <= hi:
        raise invalid(f"Invalid value {value!r} for parameter '{field}' supplied: must be in [{lo}, {hi}]")
    return out


def step_in(value, field: str = "step") -> int:
    return int_in(value, field, default=0, lo=-MAX_STEP, hi=MAX_STEP)


def key_in(value, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise invalid(f"Missing value for required parameter '{field}'")
    if len(value) > MAX_KEY_LENGTH or "\x00" in value:
        raise invalid(
            f"'{value[:50]}' for parameter '{field}' exceeds the maximum length of {MAX_KEY_LENGTH} characters"
            if len(value) > MAX_KEY_LENGTH
            else f"Invalid value for parameter '{field}': NUL characters are not allowed"
        )
    return value


def string_in(value, field: str, *, required: bool = True) -> str:
    if value is None:
        if required:
            raise invalid(f"Missing value for required parameter '{field}'")
        return ""
    if not isinstance(value, str):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(f"Invalid value {value!r} for parameter '{field}' supplied: expected a string")
        value = str(value)
    if "\x00" in value:
        raise invalid(f"Invalid value for parameter '{field}': NUL characters are not allowed")
    return value


def experiment_dict(project: Project, experiment_id: str | None = None) -> dict:
    created = ms(project.created_at)
    return {
        "experiment_id": experiment_id or str(project.pk),
        "name": project.name,
        "artifact_location": f"mlflow-artifacts:/{project.pk}",
        "lifecycle_stage": "active",
        "creation_time": created,
        "last_update_time": created,
        "tags": [{"key": "mlflow.note.content", "value": project.description}] if project.description else [],
    }


def mlflow_state(run: Run) -> MlflowRun:
    try:
        return run.mlflow
    except MlflowRun.DoesNotExist:
        return MlflowRun(run=run)


def latest_metrics(run_ids: Iterable[int]) -> dict[int, dict[str, tuple[float, int, int]]]:
    """{run_id: {key: (last value, its step, its timestamp in ms)}}: MLflow's latest metrics
    (the value at the highest step), two queries whatever the number of runs and keys."""
    rows = list(
        MetricSeries.objects.filter(run_id__in=list(run_ids), last_step__isnull=False).values_list(
            "run_id", "key", "last_value", "last_step", "tail_chunk_id"
        )
    )
    walls = {}
    tails = [r[4] for r in rows if r[4]]
    if tails:
        for pk, raw in MetricChunk.objects.filter(pk__in=tails).values_list("pk", "walls"):
            arr = decode(raw, FLOAT)
            walls[pk] = int(arr[-1] * 1000) if len(arr) else 0
    out: dict[int, dict] = {}
    for run_id, key, value, step, tail in rows:
        out.setdefault(run_id, {})[key] = (value if value is not None else math.nan, step, walls.get(tail, 0))
    return out


def run_dict(run: Run, state: MlflowRun, metrics: dict[str, tuple[float, int, int]]) -> dict:
    run_id = str(run.pk)
    info = {
        "run_id": run_id,
        "run_uuid": run_id,
        "run_name": run.name,
        "experiment_id": str(run.project_id),
        "user_id": state.tags.get("mlflow.user") or (run.created_by.username if run.created_by_id else ""),
        "status": STATUS_TO_MLFLOW.get(run.status, "RUNNING"),
        "start_time": ms(run.started_at or run.created_at),
        "artifact_uri": f"mlflow-artifacts:/{run.project_id}/{run_id}/artifacts",
        "lifecycle_stage": "deleted" if state.deleted_at else "active",
    }
    if run.finished_at is not None and run.status not in Run.ACTIVE:
        info["end_time"] = ms(run.finished_at)
    tags = dict(state.tags)
    tags["mlflow.runName"] = run.name
    return {
        "info": info,
        "data": {
            "metrics": [
                {"key": k, "value": number_out(v), "step": s, "timestamp": t}
                for k, (v, s, t) in sorted(metrics.items())
            ],
            "params": [{"key": k, "value": v} for k, v in state.params.items()],
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        },
        "inputs": {"dataset_inputs": state.inputs},
    }
