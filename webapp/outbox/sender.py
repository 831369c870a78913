"""Recording, delivering, re-sending and claiming outbox messages.

- ``record`` writes the message in the caller's transaction and delivers it right after commit; a
  broker that is down only leaves the row unsent (the request still succeeds).
- ``deliver`` (after commit, and every few seconds from the housekeeping task on the ``control``
  worker) sends unsent rows; a row lock keeps the two senders from sending one row twice.
- ``resend_gone`` re-sends a sent message only when it is provably gone: its object still waits for
  it (no worker claimed it), it went out more than ORLAB_OUTBOX_RESEND_AFTER seconds ago, and the
  broker holds it neither in its queue nor as a fresh reservation of a worker (see
  webapp.outbox.broker; with late acks a live worker starts what it reserves at once and claims the
  object first, so a reservation that old with the object unclaimed belongs to a dead worker; the
  embedded broker names the process holding a reservation, so a dead one is seen as such). Redis and
  the embedded broker can be inspected; on RabbitMQ a sent message is never re-sent.
- ``claim`` is how a job without a heartbeat of its own (import, curation, scoring, evaluation)
  claims its message, and ``Heartbeat`` keeps the claim fresh while it works, so the housekeeping
  can fail the job of a worker that died (``sweep_dead_claims``). Runs claim the Run row instead
  (webapp.runs.services.run_claim) and have their own heartbeat.

A duplicate delivery (the sub-second window between a worker popping a message and recording its
reservation, or a broker restoring a reservation) is harmless: every task claims its object in the
database and drops a message whose object is already claimed or ended."""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from webapp.outbox import broker
from webapp.outbox.models import Message

log = logging.getLogger(__name__)
Subject = Message.Subject
#: one quick retry, so a request with the broker down answers at once (the row waits for the sender)
PUBLISH_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
#: a message the after-commit sender may still be sending is left to it for this long
FRESH_S = 2.0


def record(task: str, args: list, *, queue: str, subject: str, subject_id: int) -> Message:
    """Write the message in the current transaction and deliver it once that commits."""
    message = Message.objects.create(
        task=task, args=list(args), queue=queue, subject=subject, subject_id=subject_id
    )
    transaction.on_commit(lambda: deliver([message.pk]))
    return message


def _publish(message: Message) -> None:
    from workers.celery import app

    app.send_task(
        message.task,
        args=message.args,
        queue=message.queue,
        task_id=message.task_id,
        retry=True,
        retry_policy=PUBLISH_RETRY,
    )


def deliver(ids: list[int] | None = None) -> int:
    """Send unsent messages (``ids``, or every one older than a couple of seconds); stops at the first
    broker error, leaving the rest for the next pass. Never raises. Returns how many were sent."""
    pending = Message.objects.filter(sent_at__isnull=True, settled_at__isnull=True)
    if ids is not None:
        pending = pending.filter(pk__in=ids)
    else:
        pending = pending.filter(created_at__lt=timezone.now() - timedelta(seconds=FRESH_S))
    sent = 0
    for pk in list(pending.order_by("pk").values_list("pk", flat=True)[:1000]):
        try:
            with transaction.atomic():
                message = (
                    Message.objects.select_for_update(skip_locked=True)
                    .filter(pk=pk, sent_at__isnull=True)
                    .first()
                )
                if message is None:
                    continue  # the other sender has it
                try:
                    _publish(message)
                except Exception as exc:  # noqa: BLE001 (any broker failure: the row stays unsent)
                    Message.objects.filter(pk=pk).update(last_error=f"{type(exc).__name__}: {exc}"[:2000])
                    log.warning("outbox: could not send %s (%s); it stays pending", message, exc)
                    break
                Message.objects.filter(pk=pk).update(
                    sent_at=timezone.now(), sends=F("sends") + 1, last_error=""
                )
                sent += 1
        except Exception:  # noqa: BLE001 (after commit: the caller's response must not fail)
            log.exception("outbox: delivering message %s failed", pk)
            break
    return sent


def _subject_waiting(message: Message) -> bool:
    """Does the object still wait for this message (nothing claimed it, it has not ended)?"""
    from webapp.datasets.models import Dataset, ScoringJob
    from webapp.runs.models import Evaluation, Run

    pk = message.subject_id
    if message.subject == Subject.RUN:
        attempt = message.args[1] if len(message.args) > 1 else None
        return Run.objects.filter(pk=pk, status=Run.Status.QUEUED, attempt=attempt).exists()
    if message.subject == Subject.DATASET:
        return (
            message.claimed_at is None
            and Dataset.objects.filter(pk=pk, status=Dataset.Status.IMPORTING).exists()
        )
    if message.subject == Subject.SCORING:
        return ScoringJob.objects.filter(pk=pk, status=ScoringJob.Status.QUEUED).exists()
    if message.subject == Subject.EVALUATION:
        return Evaluation.objects.filter(pk=pk, status=Evaluation.Status.QUEUED).exists()
    return False


def _gone(message: Message, window: float) -> broker.Location | None:
    """The message's broker location when it proves the message gone, else None."""
    found = broker.locate(message.queue, message.task_id)
    if found is None or found.where == "queued":
        return None
    if found.where == "reserved" and found.since > time.time() - window:
        return None  # a worker took it recently: it is starting it
    return found


def resend_gone() -> int:
    """Re-send the sent messages that are provably gone (module docstring); settle the ones whose
    object no longer waits. Returns how many were re-sent."""
    window = settings.ORLAB_OUTBOX_RESEND_AFTER
    now = timezone.now()
    resent = 0
    candidates = Message.objects.filter(
        settled_at__isnull=True, claimed_at__isnull=True, sent_at__lt=now - timedelta(seconds=window)
    ).order_by("pk")[:200]
    for message in candidates:
        if not _subject_waiting(message):
            Message.objects.filter(pk=message.pk).update(settled_at=now)
            continue
        found = _gone(message, window)
        if found is None:
            continue
        # a worker may have popped it in the instant between the two looks: look again, later
        time.sleep(0.5)
        if not _subject_waiting(message) or (found := _gone(message, window)) is None:
            continue
        if found.where == "reserved":
            broker.drop_reservation(found.tag)
        try:
            _publish(message)
        except Exception as exc:  # noqa: BLE001 (broker down: try again next pass)
            log.warning("outbox: could not re-send %s (%s)", message, exc)
            return resent
        Message.objects.filter(pk=message.pk).update(sent_at=timezone.now(), sends=F("sends") + 1)
        log.warning("outbox: re-sent %s: it was %s in the broker", message, found.where)
        resent += 1
    return resent


# --- worker side ------------------------------------------------------------------------------


def _message_pk(task_id: str | None) -> int | None:
    if task_id and task_id.startswith("outbox-") and task_id[7:].isdigit():
        return int(task_id[7:])
    return None


def claim(task_id: str | None, worker: str) -> bool:
    """Claim the outbox message a task was delivered as. False: another delivery of it claimed it
    already (this one is a duplicate and must do nothing). A message sent outside the outbox (no
    row) is always True: its object's own state decides."""
    pk = _message_pk(task_id)
    if pk is None or not Message.objects.filter(pk=pk).exists():
        return True
    now = timezone.now()
    return bool(
        Message.objects.filter(pk=pk, claimed_at__isnull=True).update(
            claimed_at=now, claimed_by=worker[:255], heartbeat_at=now, settled_at=now
        )
    )


class Heartbeat:
    """Keeps a claimed message's heartbeat fresh from a thread while the job runs (only the claimant's
    own claim: ``claimed_by``); ``stop`` clears it (the job ended and set its object's state)."""

    def __init__(self, task_id: str | None, claimant: str):
        self.pk = _message_pk(task_id)
        self.claimant = claimant[:255]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="outbox-heartbeat", daemon=True)

    def _mine(self):
        return Message.objects.filter(pk=self.pk, claimed_by=self.claimant)

    def _beat(self) -> None:
        from django.db import connection

        try:
            while not self._stop.wait(settings.ORLAB_HEARTBEAT_INTERVAL):
                try:
                    self._mine().update(heartbeat_at=timezone.now())
                except Exception:  # noqa: BLE001 (a database blip: beat again next time)
                    log.warning("outbox: heartbeat of message %s failed", self.pk, exc_info=True)
        finally:
            connection.close()

    def start(self) -> None:
        if self.pk is not None:
            self._thread.start()

    def stop(self) -> None:
        if self.pk is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        self._mine().update(heartbeat_at=None)


# --- housekeeping -----------------------------------------------------------------------------


def _fail_subject(message: Message, reason: str) -> bool:
    from webapp.datasets.models import Dataset, ScoringJob
    from webapp.runs.models import Evaluation

    now, pk = timezone.now(), message.subject_id
    if message.subject == Subject.DATASET:
        failed = Dataset.objects.filter(pk=pk, status=Dataset.Status.IMPORTING).update(
            status=Dataset.Status.FAILED, error=reason, row_count=0, progress=0.0
        )
        if failed:
            discard_rows(pk)
        if message.task == "workers.tasks.import_dataset" and len(message.args) > 1:
            _remove_upload(str(message.args[1]))
        return bool(failed)
    if message.subject == Subject.SCORING:
        return bool(
            ScoringJob.objects.filter(
                pk=pk, status__in=[ScoringJob.Status.QUEUED, ScoringJob.Status.RUNNING]
            ).update(status=ScoringJob.Status.FAILED, error=reason, finished_at=now)
        )
    if message.subject == Subject.EVALUATION:
        return bool(
            Evaluation.objects.filter(
                pk=pk, status__in=[Evaluation.Status.QUEUED, Evaluation.Status.RUNNING]
            ).update(status=Evaluation.Status.FAILED, error=reason)
        )
    return False


#: rows deleted per statement by discard_rows: each delete is a short transaction of its own
DISCARD_BATCH = 5000


def discard_rows(dataset_id: int) -> int:
    """Delete every row a failed import or curation stored in dataset ``dataset_id``. On SQLite (the
    embedded default) an import commits batch by batch (webapp.datasets.services._import_transaction),
    so a worker killed mid-import leaves the batches it committed; deleting them here, when the
    housekeeping fails the dataset, makes imports all-or-nothing there too. On PostgreSQL the import
    is one transaction and a killed one leaves nothing: the deletes find no rows. Batches of
    DISCARD_BATCH rows, each its own transaction, so no delete holds SQLite's write lock for long.
    Returns how many rows were deleted."""
    from django.db import connection

    from webapp.datasets.models import PreferencePair, Problem, StepSolution

    deleted = 0
    for model in (PreferencePair, Problem, StepSolution):
        table = connection.ops.quote_name(model._meta.db_table)
        sql = (
            f"DELETE FROM {table} WHERE id IN "
            f"(SELECT id FROM {table} WHERE dataset_id = %s LIMIT {DISCARD_BATCH})"
        )
        while True:
            with transaction.atomic(), connection.cursor() as cur:
                cur.execute(sql, [dataset_id])
                count = cur.rowcount
            deleted += max(count, 0)
            if count < DISCARD_BATCH:
                break
    return deleted


def _remove_upload(path: str) -> None:
    """The upload a dead import left behind, if it is in the artifact store's uploads folder."""
    uploads = (Path(settings.ORLAB_ARTIFACTS) / "uploads").resolve()
    target = Path(path).resolve()
    if target.parent == uploads:
        target.unlink(missing_ok=True)


def sweep_dead_claims(timeout: float | None = None) -> int:
    """Jobs whose worker stopped heartbeating end failed with the reason (a dataset never stays
    `importing`, a scoring job or an evaluation never stays `running`). Returns how many failed."""
    timeout = settings.ORLAB_HEARTBEAT_TIMEOUT if timeout is None else timeout
    cutoff = timezone.now() - timedelta(seconds=timeout)
    failed = 0
    for message in Message.objects.filter(heartbeat_at__lt=cutoff).exclude(subject=Subject.RUN):
        reason = f"the worker {message.claimed_by} stopped (no heartbeat for more than {timeout:.0f} s)"
        failed += _fail_subject(message, reason)
        Message.objects.filter(pk=message.pk).update(heartbeat_at=None)
    return failed


def sweep_orphan_imports(max_age: float | None = None) -> int:
    """A dataset `importing` with no message at all was being imported inside a web request (a small
    upload) or by code that died before recording one; after ORLAB_IMPORT_STALE_AFTER seconds it is
    failed with that reason."""
    from webapp.datasets.models import Dataset

    max_age = settings.ORLAB_IMPORT_STALE_AFTER if max_age is None else max_age
    cutoff = timezone.now() - timedelta(seconds=max_age)
    with_message = Message.objects.filter(subject=Subject.DATASET).values("subject_id")
    stale = Dataset.objects.filter(status=Dataset.Status.IMPORTING, created_at__lt=cutoff).exclude(
        pk__in=with_message
    )
    failed = 0
    for pk in list(stale.values_list("pk", flat=True)[:1000]):
        # one by one: a dataset whose import ended meanwhile is left as it is, and only the ones
        # failed here lose their rows (an import inside a killed web request, on SQLite)
        if Dataset.objects.filter(pk=pk, status=Dataset.Status.IMPORTING).update(
            status=Dataset.Status.FAILED,
            row_count=0,
            progress=0.0,
            error=f"the import stopped: still importing after {max_age:.0f} s with no worker on it",
        ):
            discard_rows(pk)
            failed += 1
    return failed


def prune_settled(keep_days: float | None = None) -> int:
    """Settled messages older than ORLAB_OUTBOX_KEEP_DAYS are deleted (the table would otherwise grow
    by a row per launch, import and evaluation forever); a job still at work (a claim heartbeat)
    keeps its row whatever its age. Returns how many were deleted."""
    keep_days = settings.ORLAB_OUTBOX_KEEP_DAYS if keep_days is None else keep_days
    cutoff = timezone.now() - timedelta(days=keep_days)
    deleted, _ = Message.objects.filter(settled_at__lt=cutoff, heartbeat_at__isnull=True).delete()
    return deleted
