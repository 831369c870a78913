"""Runs that start from another run's checkpoint (config ``init_from_run``, the parent).

A child whose parent has not succeeded with a checkpoint yet is created ``waiting``: it has no task
message and holds no worker slot. The parent's end moves its waiting children on in the same
transaction as the parent's own status change (webapp.runs.services: run_finish, run_fail,
runs_mark_lost, run_request_cancel):

- succeeded with a checkpoint: each child is queued and its message recorded in the outbox;
- failed, cancelled or lost (or succeeded without a checkpoint): each child fails with that reason,
  and so do the children waiting on it, down the chain;
- interrupted: the children keep waiting (an interrupted run is resumed, by hand or by
  ORLAB_REQUEUE_INTERRUPTED=1).

A parent resumed after it failed does not bring its children back: they failed with it, and are
resumed (or launched again) by hand; a resumed child waits again while its parent is not done.
The housekeeping's ``services.runs_fail_orphaned_waiting`` is the backstop for a child left
waiting behind a parent that ended some other way. README "Queues and the run lifecycle"."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from webapp.runs.models import Checkpoint, Run

Status = Run.Status

#: a parent that ended in one of these will never have a checkpoint for its waiting children
#: (unless resumed, which does not bring them back)
ENDED_WITHOUT_CHECKPOINT = (Status.FAILED, Status.CANCELLED, Status.LOST)


def parent_id_of(config: Any) -> int | None:
    """The ``init_from_run`` of a run's config, or None."""
    value = config.get("init_from_run") if isinstance(config, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def has_checkpoint(parent_id: int) -> bool:
    return Checkpoint.objects.filter(run_id=parent_id, deleted_at__isnull=True).exists()


def launch_status(parent: Run) -> str:
    """What a new (or resumed) child of ``parent`` starts as: queued when the parent's checkpoint is
    ready, else waiting. Call it inside the transaction that writes the child, with ``parent`` read
    ``select_for_update`` (``locked_parent``): the parent's end then waits for that transaction, and
    finds the child when it looks for waiting children."""
    if parent.status == Status.SUCCEEDED and has_checkpoint(parent.id):
        return Status.QUEUED
    return Status.WAITING


def launch_problem(parent: Run) -> str | None:
    """Why a child of ``parent`` can never start (a launch refuses it), or None."""
    if parent.status in ENDED_WITHOUT_CHECKPOINT:
        return f"run {parent.id} ended {parent.status}: no checkpoint to start from (resume it first)"
    if parent.status == Status.SUCCEEDED and not has_checkpoint(parent.id):
        return f"run {parent.id} succeeded without a checkpoint to start from"
    return None


def locked_parent(parent_id: int, project_id: int) -> Run | None:
    """The parent row, locked until the caller's transaction ends (see ``launch_status``)."""
    return Run.objects.select_for_update().filter(pk=parent_id, project_id=project_id).first()


def waiting_children(parent: Run):
    # in launch order: children released together are enqueued first-in-first-out (Run's default
    # ordering is newest first, which queued the demo's last RL run before its first)
    return Run.objects.filter(
        status=Status.WAITING, project_id=parent.project_id, config__init_from_run=parent.id
    ).order_by("id")


def parent_ended(parent_ids: Iterable[int]) -> int:
    """Move on the waiting children of runs whose status just changed (call it in the transaction of
    that change). Returns how many children were queued or failed."""
    from webapp.runs.services import _enqueue, _notify_ended

    moved = 0
    failed: list[int] = []
    pending = list(parent_ids)
    with transaction.atomic():
        while pending:
            parent = Run.objects.filter(pk=pending.pop()).first()
            if parent is None:
                continue
            ready = parent.status == Status.SUCCEEDED and has_checkpoint(parent.id)
            if parent.status == Status.SUCCEEDED and not ready:
                reason = f"init_from_run {parent.id} succeeded without a checkpoint to start from"
            elif parent.status in ENDED_WITHOUT_CHECKPOINT:
                reason = f"init_from_run {parent.id} ended {parent.status}: no checkpoint to start from"
            elif not ready:
                continue  # queued, waiting, running, interrupted: the children keep waiting
            for child in waiting_children(parent):
                if ready:
                    if Run.objects.filter(pk=child.pk, status=Status.WAITING).update(status=Status.QUEUED):
                        child.refresh_from_db()
                        _enqueue(child)
                        moved += 1
                elif Run.objects.filter(pk=child.pk, status=Status.WAITING).update(
                    status=Status.FAILED, finished_at=timezone.now(), error=reason
                ):
                    moved += 1
                    failed.append(child.pk)
                    pending.append(child.pk)  # its own waiting children fail too
        # a child failed with its parent is a run that failed: its channels hear of it (after commit)
        _notify_ended(failed)
    return moved


def waiting_for(run: Run) -> dict[str, Any] | None:
    """The run a waiting run waits for ({id, name, status}), for the run page and the API; None for a
    run that is not waiting."""
    parent_id = parent_id_of(run.config) if run.status == Status.WAITING else None
    if parent_id is None:
        return None
    row = Run.objects.filter(pk=parent_id, project_id=run.project_id).values("id", "name", "status").first()
    return row or {"id": parent_id, "name": "", "status": "missing"}
