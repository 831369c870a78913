"""Celery tasks. A task takes ids, claims the run, and hands over to trainers/ through DbSink; no
algorithm code lives here.

Messages come from the outbox (webapp.outbox: written with the row, sent after commit or by the
housekeeping's sender) and are acked late (settings CELERY_TASK_ACKS_LATE): a message a dead worker
had taken is delivered again. Every task first claims its object in the database (a run: queued ->
running for its attempt; a scoring job or evaluation: queued -> running; an import or curation: its
outbox message) and drops a delivery whose object is already claimed or ended, so a redelivery never
runs anything twice. A worker that dies mid-run leaves its run running without heartbeats: the
housekeeping task (beat, every few seconds on the `control` queue, its own one-slot worker) marks it
lost, and the user resumes it from its newest checkpoint as a new attempt; a job whose worker dies
ends failed with the reason. This replaces the earlier ack-on-receipt design. Queues and the run
lifecycle: README "Queues and the run lifecycle"."""

from __future__ import annotations

import inspect
import logging
import socket
import traceback

from workers import shutdown  # connects worker_shutting_down: SIGTERM interrupts the runs held
from workers.celery import app

log = logging.getLogger(__name__)


def _allow_child_processes() -> None:
    """Celery's prefork pool marks its children daemonic, and the standard library refuses to start
    processes from a daemonic one; trainers run their reward scoring in a process pool (and close it
    when they finish), so the task lifts that flag for its own process."""
    import multiprocessing
    import os

    multiprocessing.current_process()._config["daemon"] = False
    os.environ["ORLAB_REWARD_MP_CONTEXT"] = "fork"


@app.task(name="workers.tasks.execute_run", ignore_result=True)
def execute_run(run_id: int, attempt: int) -> None:
    from trainers.base import get_spec
    from webapp.runs import services
    from webapp.runs.models import Run
    from workers import launch
    from workers.db_retry import db_retry
    from workers.sinks import DbSink

    host = f"{socket.gethostname()}"
    _allow_child_processes()
    layout = launch.process_layout(
        Run.objects.filter(pk=run_id).values_list("config", flat=True).first() or {}
    )
    if layout.needs_launcher:  # several processes: torch.distributed's elastic launcher starts them
        with shutdown.interrupt_on_sigterm(run_id, attempt):  # rank 0's sink sees the request
            launch.execute_node(run_id, attempt, host, layout)
        return
    if not services.run_claim(run_id, attempt, host):
        log.info("run %s attempt %s not claimable (cancelled, done or claimed elsewhere)", run_id, attempt)
        return
    run = Run.objects.get(pk=run_id)
    try:
        # only the run's own, worker-written checkpoints are resumed from (issue 11)
        resume_from = services.resume_directory(run) if attempt > 1 else None
    except Exception as exc:
        services.run_fail(run_id, attempt, error=f"{type(exc).__name__}: {exc}", traceback="")
        return
    sink = DbSink(run_id, attempt, resume_from=resume_from)
    try:
        spec = get_spec(run.kind)
        config = services.run_materialize_datasets(run)
        with shutdown.interrupt_on_sigterm(run_id, attempt):
            summary = spec.train_fn()(spec.validate(config), sink) or {}
        sink.close()
    except Exception as exc:
        try:
            sink.close()
        except Exception:
            log.exception("could not flush the metrics of failed run %s", run_id)
        services.run_fail(
            run_id, attempt, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc()
        )
        return
    if sink.lost:
        return  # the run was taken from us (marked lost); its state is no longer ours to set
    # interrupted only when the trainer did stop early (a run that had just finished succeeded)
    interrupted = sink.interrupted and bool(summary.get("stopped", True))
    db_retry(
        lambda: services.run_finish(
            run_id, attempt, cancelled=sink.cancelled, summary=summary, interrupted=interrupted
        ),
        f"record the end of run {run_id}",
    )


@app.task(name="workers.tasks.housekeeping", ignore_result=True)
def housekeeping() -> dict[str, int]:
    """Beat's periodic pass on the `control` worker: no state stays stuck. Each step is one or a few
    indexed queries; one failing step does not stop the others."""
    from webapp.alerts import stalled
    from webapp.notify import sender as notify_sender
    from webapp.outbox import sender
    from webapp.runs import sample_search, services

    steps = {
        "lost": services.runs_mark_lost,  # running runs whose heartbeat stopped
        "waiting_failed": services.runs_fail_orphaned_waiting,  # their parent ended without a checkpoint
        "jobs_failed": sender.sweep_dead_claims,  # imports, scoring, evaluations of dead workers
        "imports_failed": sender.sweep_orphan_imports,  # importing with no worker message, for too long
        "sent": sender.deliver,  # messages the broker refused at commit time
        "resent": sender.resend_gone,  # messages provably gone from the broker
        "pruned": sender.prune_settled,  # settled messages older than ORLAB_OUTBOX_KEEP_DAYS
        "notify": notify_sender.send_due,  # notification deliveries due for a (re)try (webapp.notify)
        "stalled": stalled.check_stalled,  # health rules of kind `stalled` (webapp.alerts)
        # samples left waiting for the search index by a process that ended first (bounded per pass)
        "samples_indexed": sample_search.sweep,
    }
    done = {}
    for name, step in steps.items():
        try:
            done[name] = step()
        except Exception:
            log.exception("housekeeping step %s failed", name)
    if any(done.values()):
        log.info("housekeeping: %s", done)
    return done


@app.task(name="workers.tasks.reap_lost_runs", ignore_result=True)
def reap_lost_runs() -> dict[str, int]:
    """The housekeeping's old name (messages queued by an older beat)."""
    return housekeeping()


@app.task(name="workers.tasks.import_dataset", ignore_result=True)
def import_dataset(dataset_id: int, path: str) -> None:
    """Background import of a large file; the outcome (ready, or failed with row errors) is on the
    dataset row."""
    from pathlib import Path as _Path

    from webapp.datasets import services
    from webapp.datasets.models import Dataset
    from workers import claims

    if not claims.claim(import_dataset):
        # a second delivery while (or after) the first imports: its file is the first's to remove
        log.info("import of dataset %s already claimed; duplicate delivery dropped", dataset_id)
        return
    dataset = Dataset.objects.filter(pk=dataset_id, status=Dataset.Status.IMPORTING).first()
    try:
        if dataset is not None:
            services.dataset_import(dataset, _Path(path))
    except services.ImportRejected:
        pass  # recorded on the dataset
    finally:
        _Path(path).unlink(missing_ok=True)


@app.task(name="workers.tasks.curate_dataset", ignore_result=True)
def curate_dataset(dataset_id: int) -> None:
    """Curate a dataset version created by dataset_curate; the outcome (ready with its curation
    stats, or failed with the error and no rows) is on the dataset row."""
    from webapp.datasets.curation import service
    from webapp.datasets.models import Dataset
    from workers import claims

    if not claims.claim(curate_dataset):
        log.info("curation of dataset %s already claimed; duplicate delivery dropped", dataset_id)
        return
    dataset = Dataset.objects.filter(pk=dataset_id, status=Dataset.Status.IMPORTING).first()
    if dataset is None:
        log.info("dataset %s is not waiting for curation", dataset_id)
        return
    try:
        service.curation_run(dataset)
    except Exception:
        log.info("curation of dataset %s failed (the error is on the dataset)", dataset_id)


@app.task(name="workers.tasks.score_dataset", ignore_result=True)
def score_dataset(job_id: int) -> None:
    """A reward-model checkpoint scores every pair of a dataset; scores land in PairScore in batches
    and the job row carries the progress."""
    from django.utils import timezone

    from trainers.base import get_spec
    from webapp.datasets import services
    from webapp.datasets.models import ScoringJob
    from webapp.runs.checkpoint_paths import worker_checkpoint_dir
    from workers import claims

    # the message first (its heartbeat tells the housekeeping this worker lives), then the job
    claimed = claims.claim(score_dataset) and ScoringJob.objects.filter(
        pk=job_id, status=ScoringJob.Status.QUEUED
    ).update(status=ScoringJob.Status.RUNNING)
    if not claimed:
        return
    job = ScoringJob.objects.select_related("dataset", "checkpoint__run").get(pk=job_id)
    total = max(1, job.dataset.row_count)
    try:
        # the scorer the checkpoint's trainer declares (TrainerSpec.scorer); it loads the model first
        score = get_spec(job.checkpoint.run.kind).score_fn()
        scores = score(
            str(worker_checkpoint_dir(job.checkpoint)), services.pair_rows_for_scoring(job.dataset), 32
        )
        batch, done = [], 0
        for pid, chosen, rejected in scores:
            batch.append((pid, chosen, rejected))
            if len(batch) >= 512:
                services.pair_scores_record(job.checkpoint_id, batch)
                done += len(batch)
                batch = []
                ScoringJob.objects.filter(pk=job_id).update(scored=done, progress=done / total)
        services.pair_scores_record(job.checkpoint_id, batch)
        done += len(batch)
        ScoringJob.objects.filter(pk=job_id).update(
            status=ScoringJob.Status.SUCCEEDED, scored=done, progress=1.0, finished_at=timezone.now()
        )
    except Exception as exc:
        log.exception("scoring job %s failed", job_id)
        ScoringJob.objects.filter(pk=job_id).update(
            status=ScoringJob.Status.FAILED, error=f"{type(exc).__name__}: {exc}", finished_at=timezone.now()
        )


def _record_eval_rollouts(ev, rollouts: list[dict]) -> None:
    """A checkpoint evaluation's rollouts as samples at the checkpoint's step; idempotent per evaluation
    (client keys), and a failure here leaves the evaluation's result standing."""
    from webapp.runs.samples import samples_record

    step = ev.checkpoint.step
    rows = [{**r, "step": step, "client_key": f"orlab:eval{ev.pk}:{i}"} for i, r in enumerate(rollouts)]
    try:
        samples_record(ev.run_id, rows)
    except Exception:
        log.exception("evaluation %s: its rollouts were not stored as samples", ev.pk)


@app.task(name="workers.tasks.evaluate_checkpoint", ignore_result=True)
def evaluate_checkpoint(evaluation_id: int) -> None:
    """avg@k / pass@k of a checkpoint on a benchmark; the result and its protocol go on the row."""
    from webapp.datasets.services import dataset_export_jsonl
    from webapp.runs.models import Evaluation
    from webapp.runs.upload_eval import evaluation_checkpoint_dir, evaluator_for
    from workers import claims

    _allow_child_processes()
    # the message first (its heartbeat tells the housekeeping this worker lives), then the evaluation
    if not claims.claim(evaluate_checkpoint) or not Evaluation.objects.filter(
        pk=evaluation_id, status=Evaluation.Status.QUEUED
    ).update(status=Evaluation.Status.RUNNING):
        return
    ev = Evaluation.objects.select_related("checkpoint", "benchmark", "run").get(pk=evaluation_id)
    try:
        p = ev.protocol
        # the evaluator the trainer declares (an external run's uploads: the policy trainers')
        run_eval = evaluator_for(ev.run.kind)
        # its rollouts of the benchmark's first problems, as samples of the run (issue 14: phase eval,
        # checkpoint_step), when the evaluator takes on_samples (trainers.eval.run.evaluate_checkpoint does)
        rollouts: list[dict] = []
        takes = "on_samples" in inspect.signature(run_eval).parameters
        extra = {"on_samples": rollouts.extend, "checkpoint_step": ev.checkpoint.step} if takes else {}
        if p.get("ks") and "ks" in inspect.signature(run_eval).parameters:
            # the k values of pass@k / pass^k / maj@k the request or the run's eval policy asked for
            extra["ks"] = [int(k) for k in p["ks"]]
        metrics, protocol = run_eval(
            # a worker's own checkpoint folder, or an external run's checked upload (webapp.runs.upload_eval)
            str(evaluation_checkpoint_dir(ev.checkpoint)),
            dataset_export_jsonl(ev.benchmark),
            k=ev.k,
            temperature=float(p.get("temperature", 0.6)),
            top_p=float(p.get("top_p", 1.0)),
            max_new_tokens=int(p.get("max_new_tokens", 512)),
            chat_template=str(p.get("chat_template", "auto")),
            **extra,
        )
        Evaluation.objects.filter(pk=evaluation_id).update(
            status=Evaluation.Status.SUCCEEDED, metrics=metrics, protocol={**p, **protocol}
        )
        if rollouts:
            _record_eval_rollouts(ev, rollouts)
    except Exception as exc:
        log.exception("evaluation %s failed", evaluation_id)
        Evaluation.objects.filter(pk=evaluation_id).update(
            status=Evaluation.Status.FAILED, error=f"{type(exc).__name__}: {exc}"
        )
