"""Node claims of multi-process runs: every write for them goes through here (the worker's node tasks
call it), as every other write to a Run goes through webapp.runs.services.

A run trained by several processes is started by ``nodes`` node tasks (one per host). Each claims the
next free node rank of the attempt in one transaction that locks the run row, so ranks are handed out
0, 1, ... exactly once, a redelivered or surplus task finds none, and node 0's claim moves the run to
running and records the rendezvous endpoint that the later claims read."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from webapp.runs.models import Run, RunNode

Status = Run.Status


@dataclass(frozen=True)
class NodeClaim:
    node_rank: int
    endpoint: str  # host:port of the c10d rendezvous (blank for a one-host run)


def node_claim(run_id: int, attempt: int, *, host: str, nodes: int, endpoint: str) -> NodeClaim | None:
    """Claim the next node rank of ``attempt`` on ``host``, or None when the attempt is not startable
    (cancelled, finished, superseded) or all ``nodes`` ranks are taken. ``endpoint`` is recorded when
    this claim is node 0's; the others get node 0's."""
    with transaction.atomic():
        run = (
            Run.objects.select_for_update()
            .filter(pk=run_id, attempt=attempt, status__in=Run.ACTIVE, cancel_requested=False)
            .first()
        )
        if run is None:
            return None
        taken = RunNode.objects.filter(run=run, attempt=attempt).count()
        if taken >= nodes or (taken == 0 and run.status != Status.QUEUED):
            return None
        RunNode.objects.create(run=run, attempt=attempt, node_rank=taken, host=host)
        if taken == 0:
            now = timezone.now()
            Run.objects.filter(pk=run_id).update(
                status=Status.RUNNING,
                worker_host=host,
                heartbeat_at=now,
                started_at=now,
                rendezvous_endpoint=endpoint,
            )
            return NodeClaim(0, endpoint)
        return NodeClaim(taken, run.rendezvous_endpoint)


def nodes_joined(run_id: int, attempt: int) -> int:
    return RunNode.objects.filter(run_id=run_id, attempt=attempt).count()


def attempt_state(run_id: int, attempt: int) -> tuple[bool, bool]:
    """(still running this attempt, cancel requested), without touching the heartbeat: what a node
    other than node 0 checks while its ranks run."""
    row = Run.objects.filter(pk=run_id).values("status", "attempt", "cancel_requested").first()
    if row is None or row["status"] != Status.RUNNING or row["attempt"] != attempt:
        return False, True
    return True, bool(row["cancel_requested"])
