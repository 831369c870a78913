"""Attempts of a run and the one rule for redone steps.

A run's first attempt starts at step 0; a resume starts a new attempt from the run's newest checkpoint
(step S), so the new attempt logs steps S+1, S+2, ... again. The rule: the newest attempt's metrics,
samples and evaluations replace the older attempts' for those steps. It is applied once, in the same
transaction as the new attempt's first write (``redone_steps_replace``): everything recorded after S
is removed and the new attempt writes its own. Removing at the first write, not at the claim, keeps
the older data when a resume fails before it produces anything.

Within an attempt a retried write is idempotent (metrics are keyed by (run, key, step), the sink's
samples carry a client key, trainer evaluations are keyed by (run, step, benchmark)).

Each attempt has a RunAttempt row (attempt, first step, start and end times, how it ended): the
boundaries the charts draw."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from webapp.runs.metric_store import metrics_truncate_after
from webapp.runs.models import Checkpoint, Evaluation, Run, RunAttempt, Sample
from webapp.runs.samples import stats_remove_after


def attempt_begin(run_id: int, attempt: int, resume_from: str | None, worker_host: str = "") -> RunAttempt:
    """Record the attempt's boundary (idempotent: a second call returns the same row). The first step
    is the one after the checkpoint it resumes from (0 without one): the run's newest checkpoint, the
    one a resume continues from (services.resume_directory)."""
    resumed_from_step = None
    if resume_from:
        resumed_from_step = (
            Checkpoint.objects.filter(run_id=run_id).order_by("-step").values_list("step", flat=True).first()
        )
    first_step = 0 if resumed_from_step is None else resumed_from_step + 1
    row, _ = RunAttempt.objects.get_or_create(
        run_id=run_id,
        attempt=attempt,
        defaults={
            "first_step": first_step,
            "resumed_from_step": resumed_from_step,
            "started_at": timezone.now(),
            "worker_host": worker_host,
        },
    )
    return row


def attempt_end(run_id: int, attempt: int, status: str) -> None:
    RunAttempt.objects.filter(run_id=run_id, attempt=attempt, ended_at__isnull=True).update(
        ended_at=timezone.now(), status=status
    )


def redone_steps_replace(run_id: int, attempt: int) -> None:
    """Remove what older attempts recorded at the steps this attempt redoes (its first step and
    later). Called inside the transaction of the attempt's first write; calling it again (a retried
    first write) removes nothing that is not written again in the same transaction."""
    row = RunAttempt.objects.filter(run_id=run_id, attempt=attempt).first()
    if row is None or attempt <= 1:
        return
    after = row.first_step - 1
    with transaction.atomic():
        metrics_truncate_after(run_id, after)
        Sample.objects.filter(run_id=run_id, step__gt=after).delete()
        stats_remove_after(run_id, after)  # their PromptStepStat rows (webapp.runs.samples)
        # trainer evaluations only: an on-demand evaluation (attempt null) belongs to its checkpoint
        Evaluation.objects.filter(run_id=run_id, step__gt=after, attempt__lt=attempt).delete()


def _seconds(row: RunAttempt, run: Run, now) -> float | None:
    """An attempt's time: start to end; the current attempt of an active run counts until now. An
    older attempt that never recorded its end (its worker was lost) counts as nothing rather than
    until now: its real end is unknown, and "until now" would grow forever."""
    if row.ended_at is not None:
        return max(0.0, (row.ended_at - row.started_at).total_seconds())
    if row.attempt == run.attempt and run.is_active:
        return max(0.0, (now - row.started_at).total_seconds())
    if row.attempt == run.attempt and run.finished_at is not None:
        return max(0.0, (run.finished_at - row.started_at).total_seconds())
    return None


def attempts_of(run: Run) -> list[dict]:
    """The run's attempt boundaries, oldest first (API and charts), each with its duration."""
    now = timezone.now()
    return [
        {
            "attempt": a.attempt,
            "first_step": a.first_step,
            "resumed_from_step": a.resumed_from_step,
            "started_at": a.started_at,
            "ended_at": a.ended_at,
            "duration_s": _seconds(a, run, now),
            "status": a.status or (run.status if a.attempt == run.attempt else ""),
            "worker_host": a.worker_host,
        }
        for a in RunAttempt.objects.filter(run=run).order_by("attempt")
    ]


def run_duration_s(run: Run, attempts: list[dict] | None = None) -> float | None:
    """The run's time over all its attempts (issue 16 point 6): a resumed run's duration is not just
    its last attempt's (Run.started_at is reset by each claim). A run without attempt rows (an
    external run, one from before attempts were recorded) falls back to Run.duration."""
    attempts = attempts_of(run) if attempts is None else attempts
    spans = [a["duration_s"] for a in attempts if a["duration_s"] is not None]
    if spans:
        return sum(spans)
    return run.duration.total_seconds() if run.duration is not None else None
