"""Jobs without a heartbeat of their own (imports, curation, scoring, evaluations) claim the outbox
message they were delivered as, and a thread beats the claim while they work, so the housekeeping
can fail the job of a worker that died (webapp.outbox.sender.sweep_dead_claims). Runs claim their
Run row instead and have the sink's heartbeat."""

from __future__ import annotations

import os
import socket

from celery.signals import task_postrun

_beating: dict[str, object] = {}


def claimant() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def claim(task) -> bool:
    """Claim the message ``task`` (the running task) was delivered as; False for a duplicate
    delivery of a message another delivery claimed, which must do nothing."""
    from webapp.outbox import sender

    task_id = task.request.id
    if not sender.claim(task_id, claimant()):
        return False
    beat = sender.Heartbeat(task_id, claimant())
    if beat.pk is not None:  # an outbox message (a task called directly has no request id)
        beat.start()
        _beating[task_id] = beat
    return True


@task_postrun.connect
def _stop_heartbeat(task_id=None, **_):
    beat = _beating.pop(task_id, None)
    if beat is not None:
        beat.stop()
