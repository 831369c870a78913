"""Writes behind the MLflow endpoints. Runs are created and finished with webapp.runs.services,
metrics written with webapp.runs.metric_store.metrics_record; what MLflow adds (params as sent,
key/value tags, deletion, inputs) goes into MlflowRun under a row lock."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from webapp.json_checks import MAX_CONFIG_BYTES, UnsafeJSON, check_json, encoded_size
from webapp.mlflow_api.entities import MAX_PARAM_BYTES, MAX_RUN_NAME, MAX_TAG_LENGTH, key_in
from webapp.mlflow_api.errors import MlflowApiError, invalid, missing
from webapp.mlflow_api.models import MlflowRun
from webapp.projects import services as project_services
from webapp.projects.models import Project
from webapp.projects.selectors import project_list
from webapp.runs import services as run_services
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Run

DEFAULT_EXPERIMENT = "Default"
ORLAB_TAG_MAX = 64  # orlab's run tags: at most 100, each at most 64 characters (the API's rule)
ORLAB_TAGS_MAX = 100

# --- experiments = projects -------------------------------------------------------------------


def experiment_get(user, experiment_id) -> Project:
    """The caller's project of that id; "0" is the caller's own project "Default" (created on
    first use). Another team's id answers RESOURCE_DOES_NOT_EXIST, like an id that does not exist."""
    eid = str(experiment_id or "").strip()
    if eid == "0":
        project = Project.objects.filter(owner=user, name=DEFAULT_EXPERIMENT).first()
        if project is None:
            try:
                project = project_services.project_create(user=user, name=DEFAULT_EXPERIMENT)
            except project_services.ProjectNameTaken:
                project = Project.objects.get(owner=user, name=DEFAULT_EXPERIMENT)
        return project
    if not eid.isdigit() or len(eid) > 18:
        raise missing(f"No Experiment with id={eid} exists")
    project = project_list(user=user).filter(pk=int(eid)).first()
    if project is None:
        raise missing(f"No Experiment with id={eid} exists")
    return project


def experiment_by_name(user, name: str) -> Project | None:
    """Among the caller's own projects first, then the ones they are a member of; a name that
    several owners share there is INVALID_PARAMETER_VALUE naming the owners."""
    own = Project.objects.filter(owner=user, name=name).first()
    if own is not None:
        return own
    shared = list(project_list(user=user).filter(name=name).select_related("owner").order_by("pk"))
    if len(shared) > 1:
        owners = ", ".join(sorted({p.owner.username if p.owner else "(deleted user)" for p in shared}))
        raise invalid(
            f"Experiment name '{name}' is ambiguous: projects of that name belong to {owners}; "
            "use the experiment id"
        )
    return shared[0] if shared else None


def experiment_create(user, name: str) -> Project:
    try:
        return project_services.project_create(user=user, name=name)
    except project_services.ProjectNameTaken:
        raise MlflowApiError("RESOURCE_ALREADY_EXISTS", f"Experiment(name={name}) already exists.") from None


# --- runs -------------------------------------------------------------------------------------


def run_get(user, run_id, *, for_write: bool = False) -> Run:
    rid = str(run_id or "").strip()
    if not rid:
        raise invalid("Missing value for required parameter 'run_id'")
    run = None
    if rid.isdigit() and len(rid) <= 18:
        run = (
            Run.objects.filter(project__in=project_list(user=user), pk=int(rid))
            .select_related("project", "created_by", "mlflow")
            .first()
        )
    if run is None:
        raise missing(f"Run with id={rid} not found")
    if for_write:
        if run.kind != Run.EXTERNAL:
            raise MlflowApiError(
                "INVALID_STATE",
                f"Run {rid} is trained by an orlab worker ({run.kind}); only external runs accept writes",
            )
        state = getattr(run, "mlflow", None) if hasattr(run, "mlflow") else None
        if state is not None and state.deleted_at is not None:
            raise invalid(f"The run {rid} must be in the 'active' state. Current state is deleted.")
    return run


def _locked_state(run: Run) -> MlflowRun:
    MlflowRun.objects.get_or_create(run=run)
    return MlflowRun.objects.select_for_update().get(run=run)


def run_create(user, project: Project, *, name: str, start_time: int | None, tags: Mapping[str, str]) -> Run:
    name = (name or tags.get("mlflow.runName") or "").strip()[:MAX_RUN_NAME] or "mlflow run"
    with transaction.atomic():
        run = run_services.run_create(
            user=user,
            project=project,
            name=name,
            kind=Run.EXTERNAL,
            config={},
            tags=_orlab_tags([], tags),
        )
        if start_time:
            started = datetime.fromtimestamp(start_time / 1000, tz=UTC)
            Run.objects.filter(pk=run.pk).update(started_at=started)
            run.started_at = started
        stored = {k: v for k, v in tags.items() if k != "mlflow.runName"}
        MlflowRun.objects.create(run=run, tags=stored)
    return run


def _orlab_tags(
    current: Sequence[str], mlflow_tags: Mapping[str, str], removed: Sequence[str] = ()
) -> list[str]:
    """orlab's run tags with the user's MLflow tags (not mlflow.*) mirrored as ``key`` or
    ``key=value`` (those that fit orlab's 64 characters, up to 100 tags in all)."""
    changed = set(mlflow_tags) | set(removed)
    out = [t for t in current if t.split("=", 1)[0] not in changed]
    for key, value in mlflow_tags.items():
        if key.startswith("mlflow."):
            continue
        text = f"{key}={value}" if value else key
        if len(text) <= ORLAB_TAG_MAX and len(out) < ORLAB_TAGS_MAX and text not in out:
            out.append(text)
    return out


def _check_tag(key, value) -> tuple[str, str]:
    key = key_in(key, "key")
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise invalid(f"Invalid value {value!r} for parameter 'value' supplied: expected a string")
    if len(value) > MAX_TAG_LENGTH:
        raise invalid(
            f"'{value[:50]}...' for parameter 'value' exceeds the maximum length of {MAX_TAG_LENGTH} characters"
        )
    return key, value


def _check_param(key, value) -> tuple[str, str]:
    key = key_in(key, "key")
    if value is None:
        raise invalid("Missing value for required parameter 'value'")
    if not isinstance(value, str):
        raise invalid(f"Invalid value {value!r} for parameter 'value' supplied: expected a string")
    if "\x00" in value:
        raise invalid("Invalid value for parameter 'value': NUL characters are not allowed")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_PARAM_BYTES:
        raise invalid(
            f"Param value '{value[:50]}...' had length {len(value.encode('utf-8', 'surrogatepass'))} bytes, "
            f"which exceeded length limit of {MAX_PARAM_BYTES}"
        )
    return key, value


def typed(value: str) -> Any:
    """The typed copy of a param for the run's config: ints, finite floats, booleans, null, JSON
    lists and objects; anything else stays the string."""
    text = value.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
        if math.isfinite(number):
            return number
        return value
    except ValueError:
        pass
    if text[:1] in "[{":
        try:
            parsed = json.loads(text)
            check_json(parsed, "config")
            return parsed
        except (ValueError, UnsafeJSON):
            pass
    return value


def _config_with(config: dict, params: Mapping[str, str]) -> dict:
    """``config`` with the typed params; a dotted key nests (``optimizer.lr`` -> {"optimizer": {"lr"}})
    unless it collides with what is there (a value where a dict is needed, or a dict where the value
    would go): then it stays in params only."""
    out = json.loads(json.dumps(config))
    for key, raw in params.items():
        parts = key.split(".")
        if any(p == "" for p in parts):
            parts = [key]
        node = out
        ok = True
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None and p not in node:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                ok = False
                break
            node = nxt
        if not ok or isinstance(node.get(parts[-1]), dict):
            continue
        node[parts[-1]] = typed(raw)
    return out


def log_batch(
    run: Run,
    *,
    metrics: Sequence[tuple[str, float, int, int]] = (),
    params: Sequence[tuple[str, str]] = (),
    tags: Sequence[tuple[str, str]] = (),
) -> None:
    """One request's metrics (key, value, step, timestamp ms), params and tags, all or nothing."""
    params = [_check_param(k, v) for k, v in params]
    tags = [_check_tag(k, v) for k, v in tags]
    seen: dict[str, str] = {}
    for key, value in params:
        if key in seen and seen[key] != value:
            raise invalid(f"Duplicate parameter keys have been submitted: ['{key}']")
        seen[key] = value
    with transaction.atomic():
        if params or tags:
            state = _locked_state(run)
            fields = []
            new_params = {}
            for key, value in params:
                old = state.params.get(key)
                if old is not None and old != value:
                    raise invalid(
                        f"Changing param values is not allowed. Param with key='{key}' was already logged "
                        f"with value='{old}' for run ID='{run.pk}'. Attempted logging new value '{value}'."
                    )
                if old is None:
                    new_params[key] = value
            if new_params:
                state.params = {**state.params, **new_params}
                fields.append("params")
                # the config as it is now, read under the lock (another request may have added to it)
                config = _config_with(Run.objects.get(pk=run.pk).config, new_params)
                if encoded_size(config) <= MAX_CONFIG_BYTES:
                    Run.objects.filter(pk=run.pk).update(config=config)
                    run.config = config
            if tags:
                new_tags = dict(tags)
                name = new_tags.pop("mlflow.runName", None)
                if name is not None and name.strip():
                    run.name = name.strip()[:MAX_RUN_NAME]
                    Run.objects.filter(pk=run.pk).update(name=run.name)
                state.tags = {**state.tags, **new_tags}
                fields.append("tags")
                orlab = _orlab_tags(Run.objects.get(pk=run.pk).tags, new_tags)
                Run.objects.filter(pk=run.pk).update(tags=orlab)
            if fields:
                state.save(update_fields=fields)
        if metrics:
            columns: dict[str, tuple[list, list, list]] = {}
            for key, value, step, timestamp in metrics:
                cols = columns.setdefault(key, ([], [], []))
                cols[0].append(step)
                cols[1].append(value)
                cols[2].append(timestamp / 1000.0)
            metrics_record(run.pk, {k: Columns.of(*c) for k, c in columns.items()})


def tag_delete(run: Run, key: str) -> None:
    key = key_in(key, "key")
    with transaction.atomic():
        state = _locked_state(run)
        if key not in state.tags:
            raise missing(f"No tag with name: {key} in run with id {run.pk}")
        state.tags = {k: v for k, v in state.tags.items() if k != key}
        state.save(update_fields=["tags"])
        orlab = _orlab_tags(Run.objects.get(pk=run.pk).tags, {}, removed=[key])
        Run.objects.filter(pk=run.pk).update(tags=orlab)


def run_update(run: Run, *, status: str | None, end_time: int | None, name: str | None) -> Run:
    if name is not None and name.strip():
        run.name = name.strip()[:MAX_RUN_NAME]
        Run.objects.filter(pk=run.pk).update(name=run.name)
    if status in ("FINISHED", "FAILED", "KILLED") and run.status == Run.Status.RUNNING:
        try:
            if status == "KILLED":
                run = run_services.run_request_cancel(run)
            else:
                run = run_services.run_finish_external(
                    run,
                    status=Run.Status.SUCCEEDED if status == "FINISHED" else Run.Status.FAILED,
                    summary=run.summary,
                )
        except run_services.RunError as exc:
            raise MlflowApiError("INVALID_STATE", exc.message) from None
        if end_time:
            ended = datetime.fromtimestamp(end_time / 1000, tz=UTC)
            Run.objects.filter(pk=run.pk).update(finished_at=ended)
            run.finished_at = ended
    return run


def run_set_deleted(run: Run, deleted: bool) -> None:
    with transaction.atomic():
        state = _locked_state(run)
        state.deleted_at = timezone.now() if deleted else None
        state.save(update_fields=["deleted_at"])


def inputs_log(run: Run, datasets: list) -> None:
    with transaction.atomic():
        state = _locked_state(run)
        known = {json.dumps(d, sort_keys=True) for d in state.inputs}
        added = [d for d in datasets if json.dumps(d, sort_keys=True) not in known]
        if added:
            state.inputs = state.inputs + added
            state.save(update_fields=["inputs"])


def visible_runs(user, projects: Sequence[Project]):
    return (
        Run.objects.filter(project__in=projects)
        .filter(Q(project__in=project_list(user=user)))
        .select_related("project", "created_by", "mlflow")
    )
