"""Every write to a Run goes through here: the API, the HTML views and the worker all call these.

State changes are compare-and-set UPDATEs (``filter(status=...).update(...)``), so a double click,
a redelivered task or a race between a worker and a cancel can never move a run backwards."""

from __future__ import annotations

import itertools
import secrets
import subprocess
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from pydantic import ValidationError

from trainers.base import get_spec
from trainers.common.model_roots import model_name_problem
from webapp.errors import ServiceError
from webapp.fleet.services import launch_check_record
from webapp.json_checks import MAX_CONFIG_BYTES, UnsafeJSON, check_json, encoded_size
from webapp.projects.models import Project
from webapp.runs import capabilities
from webapp.runs.launch_checks import LaunchVerdict, evaluate_launch
from webapp.runs.memory import launch_estimate
from webapp.runs.model_refs import is_checkpoint_ref, model_ref_directory, model_ref_errors
from webapp.runs.models import Checkpoint, Run

Status = Run.Status


class RunError(ServiceError):
    """A run request that cannot be carried out; ``field_errors`` maps field paths to messages."""


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit the platform runs (recorded on every run), or ORLAB_CODE_VERSION."""
    from webapp.settings import env_str

    if env_str("ORLAB_CODE_VERSION"):
        return env_str("ORLAB_CODE_VERSION")
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def pydantic_field_errors(exc: ValidationError, prefix: str = "config") -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        path = f"{prefix}.{loc}" if loc else prefix
        msg = err["msg"].removeprefix("Value error, ")
        errors.setdefault(path, []).append(msg)
    return errors


def config_validate(kind: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The validated, fully-defaulted config of a run of ``kind`` (what the trainer will see)."""
    # the API's parser checked this already; the launch form and other callers come here directly
    try:
        check_json(config, "config")
    except UnsafeJSON as exc:
        raise RunError("invalid config", {exc.path: [exc.reason]}) from None
    if (size := encoded_size(config)) > MAX_CONFIG_BYTES:
        raise RunError(
            "invalid config",
            {"config": [f"{size} bytes when encoded; at most {MAX_CONFIG_BYTES // 1024} KB"]},
        )
    if kind == Run.EXTERNAL:
        if not isinstance(config, Mapping):
            raise RunError("invalid config", {"config": ["must be an object"]})
        return dict(config)
    try:
        spec = get_spec(kind)
    except KeyError as exc:
        raise RunError("unknown kind", {"kind": [str(exc.args[0])]}) from None
    if not isinstance(config, Mapping):
        raise RunError("invalid config", {"config": ["must be an object"]})
    try:
        model = spec.validate(config)
    except ValidationError as exc:
        raise RunError("invalid config", pydantic_field_errors(exc)) from None
    return model.model_dump(mode="json")


def _enqueue(run: Run) -> None:
    """Record the run's task message in the outbox, in the transaction that queues the run (call it
    inside one): the message goes to the broker once that commits (a worker must never see a run
    that is not in the database yet), or later from the housekeeping's sender if the broker is down
    then. The request succeeds either way (webapp.outbox)."""
    from webapp.outbox import sender

    nodes = int(run.config.get("nodes", 1)) if isinstance(run.config, dict) else 1
    # a run on several hosts: one task per node, each claims a node rank (webapp.runs.nodes)
    for _ in range(nodes):
        sender.record(
            "workers.tasks.execute_run",
            [run.id, run.attempt],
            queue=run.queue,
            subject=sender.Subject.RUN,
            subject_id=run.id,
        )


def _check_dataset_refs(kind: str, config: Mapping[str, Any], project: Project) -> None:
    """Dataset ids in a config must name ready datasets of the right kind in the run's project, and
    ``init_from_run`` a policy run of the same project."""
    from webapp.datasets.models import Dataset

    spec = get_spec(kind)
    errors = {}
    parent = config.get("init_from_run")
    if parent is not None:
        source = Run.objects.filter(pk=parent, project=project).first()
        if source is None:
            errors["config.init_from_run"] = [f"no run {parent} in project {project.name}"]
        elif not capabilities.policy_checkpoints(source.kind):
            policies = ", ".join(capabilities.kinds_that(capabilities.policy_checkpoints))
            errors["config.init_from_run"] = [
                f"run {parent} is a {source.kind} run, not a policy ({policies})"
            ]
    for name in spec.dataset_fields:
        ref = config.get(name)
        if ref is None:
            continue
        if isinstance(ref, bool) or not isinstance(ref, int):
            # a file path is for standalone runs only: a worker never opens a path a user sent
            errors[f"config.{name}"] = ["must be the id of a dataset in this project"]
            continue
        wanted = spec.config_model().model_json_schema()["properties"][name].get("x-orlab-dataset")
        ds = Dataset.objects.filter(pk=ref, project=project).first()
        if ds is None:
            errors[f"config.{name}"] = [f"no dataset {ref} in project {project.name}"]
        elif ds.status != Dataset.Status.READY:
            errors[f"config.{name}"] = [f"dataset {ds.name} v{ds.version} is {ds.status}, not ready"]
        elif wanted and ds.kind != wanted:
            errors[f"config.{name}"] = [f"dataset {ds.name} holds {ds.kind}, this field needs {wanted}"]
    # model_path "checkpoint:<id>": a policy checkpoint of this project (webapp.runs.model_refs)
    errors.update(model_ref_errors(config, project))
    if errors:
        raise RunError("invalid config", errors)


@transaction.atomic
def run_create(
    *,
    user,
    project: Project,
    name: str,
    kind: str,
    config: Mapping[str, Any],
    group: str = "",
    tags: Sequence[str] = (),
    queue: str | None = None,
    parent: Run | None = None,
) -> Run:
    config = config_validate(kind, config)
    external = kind == Run.EXTERNAL
    if not external:
        _check_dataset_refs(kind, config, project)
    if queue is None:
        queue = "" if external else get_spec(kind).queue
    verdict = None if external else _checked_launch(kind, config, queue)
    status = Status.RUNNING if external else _start_status(config, project)
    run = Run.objects.create(
        project=project,
        name=name or kind,
        kind=kind,
        config=config,
        group=group,
        tags=list(tags),
        queue=queue,
        parent=parent,
        created_by=user,
        code_version=code_version(),
        status=status,
        started_at=timezone.now() if external else None,
        memory_estimate=launch_estimate(kind, config, queue, verdict),
    )
    if verdict is not None:
        launch_check_record(run, queue=queue, workers=verdict.workers)
        if status == Status.QUEUED:
            _enqueue(run)  # a waiting run gets its message when its parent succeeds (dependencies)
    return run


def _start_status(config: Mapping[str, Any], project: Project) -> str:
    """queued, or waiting while the ``init_from_run`` parent has no checkpoint yet (a parent that
    can never have one is a 400). The parent row stays locked until the caller's transaction ends, so
    its end cannot miss this run (webapp.runs.dependencies)."""
    from webapp.runs import dependencies

    parent_id = dependencies.parent_id_of(config)
    if parent_id is None:
        return Status.QUEUED
    parent = dependencies.locked_parent(parent_id, project.id)
    if parent is None:  # checked by _check_dataset_refs; the same words
        raise RunError(
            "invalid config", {"config.init_from_run": [f"no run {parent_id} in project {project.name}"]}
        )
    if problem := dependencies.launch_problem(parent):
        raise RunError("invalid config", {"config.init_from_run": [problem]})
    return dependencies.launch_status(parent)


def _checked_launch(kind: str, config: Mapping[str, Any], queue: str) -> LaunchVerdict:
    """The config checked against the fresh reports of the queue's workers (model in their catalogue,
    chat template, processes, vLLM/DeepSpeed, memory estimate); a refusal is a RunError naming fields."""
    verdict = evaluate_launch(kind, config, queue)
    if verdict.errors:
        raise RunError("invalid config", verdict.errors)
    return verdict


def sweep_create(
    *,
    user,
    project: Project,
    name: str,
    kind: str,
    config: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    group: str = "",
    tags: Sequence[str] = (),
    queue: str | None = None,
) -> list[Run]:
    """One run per point of the Cartesian product of ``grid`` (dotted config paths -> values), all
    in one group. Every config is validated before any run is created: all or nothing."""
    if not grid:
        raise RunError("invalid sweep", {"grid": ["give at least one field with a list of values"]})
    errors: dict[str, list[str]] = {}
    for path, values in grid.items():
        if not isinstance(values, list | tuple) or not values:
            errors[f"grid.{path}"] = ["must be a non-empty list of values"]
    if errors:
        raise RunError("invalid sweep", errors)
    combos = list(itertools.product(*grid.values()))
    if len(combos) > 1000:
        raise RunError("invalid sweep", {"grid": [f"{len(combos)} runs; at most 1000 in one sweep"]})
    # the random suffix keeps two sweeps launched in the same second apart
    group = group or f"{name or kind}-sweep-{timezone.now():%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    planned = []
    for combo in combos:
        cfg = _deep_copy(config)
        for path, value in zip(grid.keys(), combo, strict=True):
            _set_path(cfg, path, value)
        label = ",".join(f"{p.split('.')[-1]}={v}" for p, v in zip(grid.keys(), combo, strict=True))
        try:
            validated = config_validate(kind, cfg)
            _checked_launch(kind, validated, queue or get_spec(kind).queue)
        except RunError as exc:
            raise RunError(
                "invalid sweep", {f"[{label}] {k}": v for k, v in exc.field_errors.items()}
            ) from None
        planned.append((f"{name or kind} {label}", validated))
    with transaction.atomic():
        return [
            run_create(
                user=user, project=project, name=n, kind=kind, config=c, group=group, tags=tags, queue=queue
            )
            for n, c in planned
        ]


def _deep_copy(value):
    import copy

    return copy.deepcopy(dict(value))


def _set_path(cfg: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    node = cfg
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RunError("invalid sweep", {f"grid.{path}": [f"{part} is not an object in the config"]})
    node[parts[-1]] = value


@transaction.atomic
def run_request_cancel(run: Run) -> Run:
    """A queued or waiting run is cancelled at once (a waiting one never becomes queued; the runs
    waiting for it fail); a running one is asked to stop and its trainer stops at its next step (the
    worker marks it cancelled)."""
    from webapp.runs import dependencies

    now = timezone.now()
    if Run.objects.filter(pk=run.pk, status__in=(Status.QUEUED, Status.WAITING)).update(
        status=Status.CANCELLED, cancel_requested=True, finished_at=now
    ):
        dependencies.parent_ended([run.pk])
        _notify_ended([run.pk])
    elif run.kind == Run.EXTERNAL:
        if Run.objects.filter(pk=run.pk, status=Status.RUNNING).update(
            status=Status.CANCELLED, cancel_requested=True, finished_at=now
        ):
            _notify_ended([run.pk])
    elif not Run.objects.filter(pk=run.pk, status=Status.RUNNING).update(cancel_requested=True):
        run.refresh_from_db()
        raise RunError(f"a {run.status} run cannot be cancelled", {"status": [run.status]})
    run.refresh_from_db()
    return run


@transaction.atomic
def run_resume(run: Run) -> Run:
    """Queue a failed, cancelled or lost run again as a new attempt; the trainer continues from the
    newest checkpoint, and metric writes are idempotent per step, so no point is lost or doubled."""
    if run.kind == Run.EXTERNAL:
        raise RunError("an external run is resumed by its own client", {"kind": [run.kind]})
    if run.status not in Run.RESUMABLE:
        raise RunError(f"a {run.status} run cannot be resumed", {"status": [run.status]})
    # the fleet may have changed since launch (a model removed, fewer GPUs): check again, as a launch
    verdict = _checked_launch(run.kind, run.config, run.queue or get_spec(run.kind).queue)
    # a run started from another run's checkpoint waits again while that run is not done
    status = _start_status(run.config, run.project)
    updated = Run.objects.filter(pk=run.pk, status__in=Run.RESUMABLE).update(
        status=status,
        attempt=run.attempt + 1,
        cancel_requested=False,
        interrupt_requested=False,
        error="",
        traceback="",
        finished_at=None,
        heartbeat_at=None,
        worker_host="",
    )
    run.refresh_from_db()
    if not updated:
        raise RunError(f"a {run.status} run cannot be resumed", {"status": [run.status]})
    launch_check_record(run, queue=verdict.queue, workers=verdict.workers)
    if status == Status.QUEUED:
        _enqueue(run)
    return run


def run_clone(run: Run, *, user, name: str | None = None, config: Mapping[str, Any] | None = None) -> Run:
    """A new run with the same kind, project, group and tags, and the given (or the same) config."""
    base = dict(run.config)
    if config:
        base = _merge(base, config)
    return run_create(
        user=user,
        project=run.project,
        name=name or f"{run.name} (clone)",
        kind=run.kind,
        config=base,
        group=run.group,
        tags=run.tags,
        queue=run.queue or None,
        parent=run,
    )


def _merge(base: dict, override: Mapping[str, Any]) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def run_finish_external(run: Run, *, status: str, error: str = "", summary: Mapping | None = None) -> Run:
    """An external run's client reports the end of training."""
    if run.kind != Run.EXTERNAL:
        raise RunError("only external runs are finished through the API", {"kind": [run.kind]})
    if status not in (Status.SUCCEEDED, Status.FAILED):
        raise RunError("invalid status", {"status": ["must be succeeded or failed"]})
    updated = Run.objects.filter(pk=run.pk, status=Status.RUNNING).update(
        status=status, error=error, finished_at=timezone.now(), summary=dict(summary or {})
    )
    run.refresh_from_db()
    if not updated:
        raise RunError(f"a {run.status} run cannot be finished", {"status": [run.status]})
    _notify_ended([run.pk])
    return run


# --- worker side ------------------------------------------------------------------------------


def run_claim(run_id: int, attempt: int, worker_host: str) -> bool:
    """The worker's compare-and-set claim: only one worker ever runs an attempt."""
    now = timezone.now()
    return bool(
        Run.objects.filter(pk=run_id, status=Status.QUEUED, attempt=attempt).update(
            status=Status.RUNNING, worker_host=worker_host, heartbeat_at=now, started_at=now
        )
    )


def run_heartbeat(run_id: int, attempt: int) -> tuple[bool, bool]:
    """Returns (still ours, cancel requested). 'Not ours' means the run was marked lost or moved on
    to another attempt: the trainer must stop."""
    updated = Run.objects.filter(pk=run_id, status=Status.RUNNING, attempt=attempt).update(
        heartbeat_at=timezone.now()
    )
    if not updated:
        return False, True
    cancel = Run.objects.filter(pk=run_id).values_list("cancel_requested", flat=True).first()
    return True, bool(cancel)


def run_beat(run_id: int, attempt: int) -> tuple[bool, bool, bool]:
    """The sink's heartbeat: (still ours, cancel requested, interrupt requested). An interrupt is
    asked by the worker's shutdown (workers.shutdown): checkpoint, stop, end interrupted."""
    updated = Run.objects.filter(pk=run_id, status=Status.RUNNING, attempt=attempt).update(
        heartbeat_at=timezone.now()
    )
    if not updated:
        return False, True, False
    flags = Run.objects.filter(pk=run_id).values_list("cancel_requested", "interrupt_requested").first()
    cancel, interrupt = flags or (False, False)
    return True, bool(cancel), bool(interrupt)


def runs_request_interrupt(held: Sequence[tuple[int, int]]) -> int:
    """Ask the running attempts ``held`` ((run id, attempt) pairs a shutting-down worker holds) to
    checkpoint and stop; their sinks see it at the next heartbeat."""
    asked = 0
    for run_id, attempt in held:
        asked += Run.objects.filter(pk=run_id, attempt=attempt, status=Status.RUNNING).update(
            interrupt_requested=True
        )
    return asked


def run_finish(
    run_id: int, attempt: int, *, cancelled: bool, summary: Mapping[str, Any], interrupted: bool = False
) -> bool:
    """The trainer returned: succeeded, cancelled (the user asked) or interrupted (the worker shut
    down; a user's cancel wins). An interrupted run is re-queued at once when
    ORLAB_REQUEUE_INTERRUPTED=1 (another worker continues from its checkpoint). Returns whether the
    run was still this attempt's to finish."""
    from webapp.runs import dependencies
    from webapp.runs.attempts import attempt_end

    status = Status.CANCELLED if cancelled else Status.INTERRUPTED if interrupted else Status.SUCCEEDED
    with transaction.atomic():  # the runs waiting for this one move on with it (queued or failed)
        updated = Run.objects.filter(pk=run_id, status=Status.RUNNING, attempt=attempt).update(
            status=status, finished_at=timezone.now(), summary=_jsonable(summary)
        )
        if updated:
            attempt_end(run_id, attempt, status)
            dependencies.parent_ended([run_id])
            _notify_ended([run_id])
    if updated and status == Status.INTERRUPTED and _requeue_interrupted():
        try:
            run_resume(Run.objects.get(pk=run_id))
        except (
            RunError
        ) as exc:  # e.g. no worker reports its model any more: it stays interrupted, and says why
            Run.objects.filter(pk=run_id, status=Status.INTERRUPTED).update(
                error=f"not re-queued: {exc.message} {exc.field_errors}"
            )
    return bool(updated)


def _notify_ended(run_ids) -> None:
    """After commit: run finished / failed / cancelled / lost notifications (webapp.notify)."""
    from webapp.notify import dispatch

    ids = list(run_ids)
    if ids:
        transaction.on_commit(lambda: dispatch.runs_ended(ids))


def _requeue_interrupted() -> bool:
    import os

    return os.environ.get("ORLAB_REQUEUE_INTERRUPTED", "").strip().lower() in ("1", "true", "yes", "on")


@transaction.atomic
def run_fail(run_id: int, attempt: int, *, error: str, traceback: str) -> None:
    """The trainer raised; the runs waiting for this one fail with it (same transaction)."""
    from webapp.runs import dependencies
    from webapp.runs.attempts import attempt_end

    if Run.objects.filter(pk=run_id, status=Status.RUNNING, attempt=attempt).update(
        status=Status.FAILED, finished_at=timezone.now(), error=error[:10000], traceback=traceback
    ):
        attempt_end(run_id, attempt, Status.FAILED)
        dependencies.parent_ended([run_id])
        _notify_ended([run_id])


def run_summary_note(run_id: int, attempt: int, values: Mapping[str, Any]) -> bool:
    """Facts a running attempt records before its trainer returns (the sandbox guards once scoring
    started): merged into the run's summary at once, so a run that then fails, is cancelled or is lost
    still has them. The trainer's returned summary replaces the whole summary when it finishes (and
    includes them). Returns whether the attempt was still running (nothing is written otherwise)."""
    with transaction.atomic():
        run = (
            Run.objects.select_for_update()
            .filter(pk=run_id, status=Status.RUNNING, attempt=attempt)
            .only("id", "summary")
            .first()
        )
        if run is None:
            return False
        Run.objects.filter(pk=run_id).update(summary={**(run.summary or {}), **_jsonable(values)})
    return True


def runs_mark_lost(*, timeout: float | None = None) -> int:
    """Running runs whose worker stopped heartbeating are lost. Cheap (one indexed UPDATE), so the
    housekeeping task (every few seconds on the `control` worker) and the pages both call it. Only
    running runs: a waiting or queued run has no worker to lose."""
    from webapp.runs import dependencies

    timeout = settings.ORLAB_HEARTBEAT_TIMEOUT if timeout is None else timeout
    cutoff = timezone.now() - timedelta(seconds=timeout)
    stale = Run.objects.filter(status=Status.RUNNING, heartbeat_at__lt=cutoff).exclude(kind=Run.EXTERNAL)
    if not stale.exists():  # the usual answer, in one indexed query (every page read asks)
        return 0
    with transaction.atomic():
        # the rows stay locked (a concurrent caller skips them), so the runs marked are exactly these
        # and the runs waiting for them fail in the same transaction
        ids = list(stale.select_for_update(skip_locked=True).values_list("id", flat=True))
        if not ids:
            return 0
        lost = Run.objects.filter(pk__in=ids).update(
            status=Status.LOST,
            finished_at=timezone.now(),
            error=f"worker stopped heartbeating for more than {timeout:.0f} s",
        )
        dependencies.parent_ended(ids)
        _notify_ended(ids)
    return lost


def runs_fail_orphaned_waiting() -> int:
    """The backstop of webapp.runs.dependencies (the parent's end moves its waiting children on in
    its own transaction): a waiting run whose parent (``init_from_run``) ended failed, cancelled or
    lost, or is gone, fails with that reason; one whose parent succeeded is queued (or fails when it
    left no checkpoint). Waiting runs are otherwise never swept. Returns how many moved on."""
    from webapp.runs import dependencies

    moved = 0
    parents = set()
    for run_id, project_id, config in Run.objects.filter(status=Status.WAITING).values_list(
        "id", "project_id", "config"
    ):
        parent_id = dependencies.parent_id_of(config)
        if parent_id is None:
            continue
        parent = (
            Run.objects.filter(pk=parent_id, project_id=project_id).values_list("status", flat=True).first()
        )
        if parent is None:
            failed = Run.objects.filter(pk=run_id, status=Status.WAITING).update(
                status=Status.FAILED,
                finished_at=timezone.now(),
                error=f"init_from_run {parent_id}: no such run in this run's project",
            )
            if failed:
                _notify_ended([run_id])  # the run failed: its project's channels hear of it
            moved += failed
        elif parent in dependencies.ENDED_WITHOUT_CHECKPOINT or parent == Status.SUCCEEDED:
            parents.add(parent_id)
    if parents:
        moved += dependencies.parent_ended(sorted(parents))
    return moved


def checkpoint_record(
    run_id: int, attempt: int, step: int, path: str, metrics: Mapping[str, float]
) -> Checkpoint:
    """Record (or re-record) a checkpoint, store its size, then apply the run's retention policy."""
    from webapp.runs import retention

    checkpoint, _ = Checkpoint.objects.update_or_create(
        run_id=run_id,
        step=step,
        defaults={"path": path, "attempt": attempt, "metrics": _jsonable(metrics), "deleted_at": None},
    )
    retention.record_size(checkpoint)
    # the trainers evaluate before they save (RL, DAPO, reward: the step's evaluation, then its
    # checkpoint), so the step's evaluations are attached here: results belong to the checkpoint's step
    from webapp.runs.models import Evaluation

    Evaluation.objects.filter(run_id=run_id, step=step, checkpoint__isnull=True).update(checkpoint=checkpoint)
    if retention.apply_retention(run_id):
        checkpoint.refresh_from_db(fields=["deleted_at"])
    from webapp.runs import eval_policy

    eval_policy.checkpoint_saved(checkpoint)  # the run's eval policy may enqueue an evaluation
    return checkpoint


def samples_record(run: Run, samples: Sequence[Mapping[str, Any]]) -> int:
    """Store rollout samples atomically (webapp.runs.samples.samples_record: the record, its
    aggregates, idempotency by client_key). Returns how many were new."""
    from webapp.runs.samples import samples_record as record

    return record(run, samples)


def newest_checkpoint(run: Run) -> Checkpoint | None:
    return Checkpoint.objects.filter(run=run).order_by("-step").first()


def resume_directory(run: Run):
    """The directory a resumed attempt continues from: the run's own newest checkpoint, and only when
    a worker wrote it in the artifact store (webapp.runs.checkpoint_paths); None when it has none."""
    from webapp.runs.checkpoint_paths import worker_checkpoint_dir

    checkpoint = newest_checkpoint(run)
    return worker_checkpoint_dir(checkpoint, project_id=run.project_id) if checkpoint else None


def _jsonable(data: Mapping[str, Any]) -> dict[str, Any]:
    import math

    out = {}
    for key, value in dict(data).items():
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


def _warm_start_directory(run: Run, parent_id: int) -> str:
    """The newest checkpoint of the run this one starts from. No waiting here: a run is queued only
    once its parent succeeded with a checkpoint (webapp.runs.dependencies), so anything else is an
    error with the reason."""
    from webapp.runs.checkpoint_paths import worker_checkpoint_dir

    # the parent must be in this run's project (checked at launch too); the same words whether it
    # does not exist or is another team's
    parent = Run.objects.filter(pk=parent_id, project_id=run.project_id).first()
    if parent is None:
        raise RuntimeError(f"init_from_run: no run {parent_id} in this run's project")
    if parent.status != Status.SUCCEEDED:
        raise RuntimeError(
            f"init_from_run {parent_id} is {parent.status}, not succeeded: nothing to start from"
        )
    checkpoint = newest_checkpoint(parent)
    if checkpoint is None:
        raise RuntimeError(f"run {parent_id} finished without a checkpoint to start from")
    return str(worker_checkpoint_dir(checkpoint, project_id=run.project_id))


def run_materialize_datasets(run: Run) -> dict[str, Any]:
    """The config the trainer gets: dataset ids replaced by exported JSONL paths, and init_from_run by
    that run's newest checkpoint (as model_path). Records which dataset versions the run used (on the
    run, for reproducibility)."""
    from webapp.datasets.models import Dataset
    from webapp.datasets.services import dataset_export_jsonl

    config = dict(run.config)
    name = config.get("model_path")
    if is_checkpoint_ref(name):
        config["model_path"] = model_ref_directory(name, run.project_id)
    elif isinstance(name, str) and name != "tiny" and (problem := model_name_problem(name)):
        # refused at launch; a path in a stored config never reaches the trainer either
        raise RuntimeError(f"model_path: {problem}")
    if config.get("init_from_run") is not None:
        config["model_path"] = _warm_start_directory(run, int(config["init_from_run"]))
    used = {}
    for name in get_spec(run.kind).dataset_fields:
        ref = config.get(name)
        if ref is not None and (isinstance(ref, bool) or not isinstance(ref, int)):
            # refused at launch; refused here too, so no path from a stored config reaches the trainer
            raise RuntimeError(f"{name} must be the id of a dataset in this project")
        if isinstance(ref, int):
            ds = Dataset.objects.get(pk=ref, project=run.project)
            config[name] = str(dataset_export_jsonl(ds))
            used[name] = {"id": ds.id, "name": ds.name, "version": ds.version, "sha256": ds.sha256}
            run.datasets.add(ds)
    if used:
        Run.objects.filter(pk=run.pk).update(dataset_versions=used)
    return config


def evaluation_record(
    run_id: int,
    step: int,
    benchmark: str,
    metrics: Mapping[str, float],
    protocol: Mapping,
    attempt: int | None = None,
):
    """An evaluation a trainer ran during training (e.g. every 20 steps). ``benchmark`` is a config
    field that named a dataset (resolved through the run's dataset_versions) or a generated set's name.
    One per (run, step, benchmark) from trainers: a retried write or a resumed attempt that redoes the
    step replaces the earlier row (webapp.runs.attempts); on-demand evaluations are left alone."""
    from webapp.runs.models import Evaluation

    run = Run.objects.only("dataset_versions", "attempt").get(pk=run_id)
    ref = (run.dataset_versions or {}).get(benchmark)
    name = f"{ref['name']} v{ref['version']}" if ref else benchmark
    with transaction.atomic():
        Evaluation.objects.filter(
            run_id=run_id, step=step, benchmark_name=name, attempt__isnull=False
        ).delete()
        return Evaluation.objects.create(
            run_id=run_id,
            step=step,
            benchmark_id=ref["id"] if ref else None,
            benchmark_name=name,
            k=int(protocol.get("k", 1)),
            status=Evaluation.Status.SUCCEEDED,
            metrics=_jsonable(metrics),
            protocol=dict(protocol),
            attempt=attempt if attempt is not None else run.attempt,
            checkpoint=Checkpoint.objects.filter(run_id=run_id, step=step).first(),
        )


#: what an on-demand evaluation uses when neither the request nor the run's config says
EVALUATION_FALLBACK = {
    "k": 8,
    "temperature": 0.6,
    "top_p": 1.0,
    "max_new_tokens": 512,
    "chat_template": "auto",
}


def evaluation_settings(run: Run, step: int) -> dict[str, Any]:
    """The generation settings a run evaluates with at ``step``, from its config: the eval section's k,
    temperature and top_p, then what its trainer adds (TrainerSpec.evaluation_settings: RL the response
    limit of the stage ``step`` is in, DAPO its eval section's max_new_tokens, SFT its greedy evaluation:
    k 1, temperature 0, its max_new_tokens); every kind its chat_template. What the config does not say
    comes from EVALUATION_FALLBACK."""
    config = run.config or {}
    section = config.get("eval") if isinstance(config.get("eval"), Mapping) else {}
    found: dict[str, Any] = {key: section[key] for key in ("k", "temperature", "top_p") if key in section}
    if section.get("ks"):  # the k values of pass@k / pass^k / maj@k (RL and DAPO eval.ks)
        found["ks"] = list(section["ks"])
    found.update(capabilities.evaluation_defaults(run.kind, config, step))
    if isinstance(config.get("chat_template"), str):
        found["chat_template"] = config["chat_template"]
    return {**EVALUATION_FALLBACK, **found}


def evaluation_request(
    *,
    checkpoint: Checkpoint,
    benchmark,
    k: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    max_new_tokens: int | None = None,
    ks: Sequence[int] | None = None,
    policy_key: str | None = None,
):
    """On-demand evaluation of a policy checkpoint on a problems dataset, run by a worker. Settings not
    given are the run's own (:func:`evaluation_settings`). ``ks``: the k values of pass@k / pass^k /
    maj@k (each at most the protocol's k, its samples per problem). ``policy_key`` (the run's eval
    policy, webapp.runs.eval_policy): when an evaluation with this key exists already, none is added
    and None is returned (checked under the checkpoint's row lock, so two saves of one checkpoint at
    once queue one)."""
    from webapp.datasets.models import Dataset
    from webapp.outbox import sender
    from webapp.runs.models import Evaluation

    if benchmark.kind != Dataset.Kind.PROBLEMS or benchmark.status != Dataset.Status.READY:
        raise RunError("invalid benchmark", {"benchmark": ["must be a ready problems dataset"]})
    from webapp.runs import upload_eval

    # the trainer declares an evaluator; an external run's uploads once the worker loads them
    if not upload_eval.evaluates(checkpoint.run.kind):
        evaluated = ", ".join(capabilities.kinds_that(capabilities.evaluates_checkpoints))
        raise RunError("invalid checkpoint", {"checkpoint": [f"not a policy checkpoint ({evaluated} run)"]})
    if checkpoint.run.kind == Run.EXTERNAL:
        # an upload with pickled weights or no safetensors is refused now, not failed by the worker
        from webapp.runs.checkpoint_paths import UntrustedCheckpoint

        try:
            upload_eval.uploaded_checkpoint_dir(checkpoint)
        except UntrustedCheckpoint as exc:
            raise RunError("invalid checkpoint", {"checkpoint": [str(exc)]}) from None
    given = {"k": k, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens}
    protocol = {
        **evaluation_settings(checkpoint.run, checkpoint.step),
        **{key: value for key, value in given.items() if value is not None},
    }
    if ks:
        if any(k > protocol["k"] for k in ks):
            raise RunError("invalid protocol", {"ks": [f"every k must be at most k = {protocol['k']}"]})
        protocol["ks"] = sorted(set(ks))
    elif "ks" in protocol:  # the run's own ks: those a smaller k asked here still allows
        protocol["ks"] = [k for k in protocol["ks"] if k <= protocol["k"]]
    if policy_key:
        protocol["policy_key"] = policy_key
    with transaction.atomic():
        # the row lock orders this request with retention (webapp.runs.retention): a checkpoint is
        # either deleted first (refused here) or protected by this queued evaluation
        locked = Checkpoint.objects.select_for_update().get(pk=checkpoint.pk)
        if locked.deleted_at is not None:
            raise RunError(
                "invalid checkpoint",
                {"checkpoint": [f"the step-{locked.step} checkpoint was deleted by the retention policy"]},
            )
        if (
            policy_key
            and Evaluation.objects.filter(checkpoint=locked, protocol__policy_key=policy_key).exists()
        ):
            return None
        evaluation = Evaluation.objects.create(
            run=checkpoint.run,
            checkpoint=checkpoint,
            benchmark=benchmark,
            benchmark_name=f"{benchmark.name} v{benchmark.version}",
            step=checkpoint.step,
            k=protocol["k"],
            protocol=protocol,
        )
        # in the row's transaction (webapp.outbox); evaluations have their own queue
        sender.record(
            "workers.tasks.evaluate_checkpoint",
            [evaluation.id],
            queue="eval",
            subject=sender.Subject.EVALUATION,
            subject_id=evaluation.id,
        )
    return evaluation
