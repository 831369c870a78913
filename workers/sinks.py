"""DbSink: the trainers' Sink backed by the database.

The trainer thread only appends to an in-memory buffer (a few hundred ns a point); a background
thread flushes the buffer every ORLAB_SINK_FLUSH_INTERVAL seconds in one transaction per flush,
beats the run's heartbeat and reads its cancel and interrupt flags. So ``log`` and ``should_stop``
never touch the database, and a chart sees a point at most about one flush interval after it was
logged.

Through a database outage every write is retried with backoff (workers.db_retry) while the trainer
goes on logging into the buffer; each write is atomic and idempotent (metrics keyed by (run, key,
step), samples by a client key of attempt, step and index, trainer evaluations by (run, step,
benchmark)), so a retried write whose commit did happen stores nothing twice. The attempt's first
write also replaces what older attempts recorded at the steps it redoes (webapp.runs.attempts)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction

from trainers.common import sandbox_record
from webapp.runs import attempts, sample_search, services
from webapp.runs import samples as rollout_samples
from webapp.runs.metric_store import Columns, metrics_record
from workers import shutdown
from workers.db_retry import db_retry

log = logging.getLogger(__name__)

# Beyond this many buffered points the trainer thread waits for the flusher (bounded memory).
MAX_BUFFERED_POINTS = 2_000_000


class DbSink:
    def __init__(self, run_id: int, attempt: int, resume_from: Path | None = None):
        self.run_id = run_id
        self.attempt = attempt
        self.resume_from = resume_from
        self.artifact_dir = Path(settings.ORLAB_ARTIFACTS) / "runs" / str(run_id)
        self.workdir = self.artifact_dir / f"attempt-{attempt}"
        self.cancelled = False  # set when a user asked to stop (vs. the run being taken away)
        self.interrupted = False  # set when the worker shuts down (SIGTERM): end interrupted
        self.lost = False
        self._sample_seq: dict[int, int] = {}  # step -> samples keyed so far (client keys)
        self._replaced = False  # older attempts' records of the redone steps removed
        db_retry(
            lambda: attempts.attempt_begin(
                run_id, attempt, resume_from and str(resume_from), socket.gethostname()
            ),
            "record the attempt",
        )
        self._stop = False
        self._lock = threading.Lock()
        # One write at a time: a checkpoint's flush must not be recorded while the background thread
        # is still committing earlier points (a kill then would leave a hole before the checkpoint).
        self._write_lock = threading.Lock()
        self._flushed = threading.Condition(self._lock)
        self._buffer: dict[str, tuple[list, list, list]] = {}
        self._samples: list[dict] = []  # webapp.runs.samples.normalize's rows
        self._buffered = 0
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._background, name=f"sink-run-{run_id}", daemon=True)
        self._thread.start()
        sandbox_record.listen(self._note_sandbox)

    # --- Sink protocol (trainer thread) --------------------------------------------------------
    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        wall = time.time()
        with self._lock:
            for key, value in metrics.items():
                columns = self._buffer.get(key)
                if columns is None:
                    columns = self._buffer[key] = ([], [], [])
                columns[0].append(step)
                columns[1].append(value)
                columns[2].append(wall)
            self._buffered += len(metrics)
            while self._buffered > MAX_BUFFERED_POINTS and self._error is None:
                self._flushed.wait(timeout=1.0)
        self._raise_if_failed()

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        with self._lock:
            first = self._sample_seq.get(step, 0)
            self._sample_seq[step] = first + len(samples)
            rows = [
                rollout_samples.normalize(
                    s, i, step=step, client_key=f"orlab:a{self.attempt}:s{step}:{first + i}", lenient=True
                )
                for i, s in enumerate(samples)
            ]
            self._samples.extend(rows)

    def log_evaluation(
        self, step: int, benchmark: str, metrics: Mapping[str, float], protocol: Mapping[str, Any]
    ):
        """Stored at once (evaluations are rare and people wait for them). ``benchmark`` is a config
        field naming a dataset (e.g. "eval_dataset") or the name of a generated benchmark."""

        def write():
            with transaction.atomic():
                self._replace_redone()
                services.evaluation_record(self.run_id, step, benchmark, metrics, protocol, self.attempt)

        with self._write_lock:
            db_retry(write, f"record the step-{step} evaluation of run {self.run_id}")
        self._replaced = True

    def checkpoint_dir(self, step: int) -> Path:
        path = self.workdir / f"checkpoint-{step:08d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save_checkpoint(self, step: int, directory: Path, metrics: Mapping[str, float] | None = None) -> None:
        # Everything logged before the checkpoint is stored before the checkpoint is recorded: a
        # resume from it recomputes only later steps, so no point can fall into a hole.
        self.flush()
        db_retry(
            lambda: services.checkpoint_record(
                self.run_id, self.attempt, step, str(directory), metrics or {}
            ),
            f"record the step-{step} checkpoint of run {self.run_id}",
        )

    def should_stop(self) -> bool:
        return self._stop

    def publish_dataset(
        self, kind: str, name: str, path: Path, meta: Mapping[str, Any] | None = None
    ) -> None:
        """Stored at once, in one transaction (a rare, large write the trainer's next stage may be
        waiting to show); a bad file fails the run with the row errors."""
        from webapp.datasets.services import ImportRejected
        from webapp.datasets.step_values import step_values_publish
        from webapp.runs.models import Run

        run = Run.objects.select_related("project").get(pk=self.run_id)
        try:
            step_values_publish(run, kind=kind, name=name, path=Path(path), meta=meta)
        except ImportRejected as exc:  # the run's error message should say which rows and why
            raise ValueError(f"{exc.detail}: {json.dumps(exc.errors)}") from None

    def note_summary(self, values: Mapping[str, Any]) -> None:
        """Stored in the run's summary at once (not by the trainer's return), so a run that fails, is
        cancelled or is lost before its trainer returns keeps them."""
        db_retry(
            lambda: services.run_summary_note(self.run_id, self.attempt, values),
            f"record the summary of run {self.run_id}",
        )

    def _note_sandbox(self, guards: dict[str, Any]) -> None:
        """While the sink is open: the guards a reward pool's first batch with code runs under
        (trainers.common.sandbox_record.announce), stored when scoring starts."""
        self.note_summary({"sandbox": guards})

    # --- lifecycle ------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write everything buffered so far (from the calling thread), after any write in flight."""
        with self._write_lock:
            self._write(self._swap())
        self._raise_if_failed()

    def close(self) -> None:
        sandbox_record.unlisten(self._note_sandbox)
        self._closing = True
        self._thread.join(timeout=30)
        self.flush()
        try:  # the run's search vectors: this process's indexer thread dies with it
            sample_search.index_pending(run_id=self.run_id)
        except Exception:  # never fails a trainer: the queue keeps the rows, searches recheck them
            log.exception("indexing the samples of run %s failed", self.run_id)

    # --- internals -------------------------------------------------------------------------------
    def _swap(self):
        with self._lock:
            buffer, samples = self._buffer, self._samples
            self._buffer, self._samples, self._buffered = {}, [], 0
            self._flushed.notify_all()
        return buffer, samples

    def _write(self, swapped) -> None:
        """One atomic write of a swapped buffer, retried through database outages (the same batch:
        points already stored are skipped, samples already stored conflict on their key)."""
        buffer, samples = swapped
        if not buffer and not samples:
            return
        batch = {k: Columns.of(c[0], c[1], c[2]) for k, c in buffer.items()}

        def write():
            with transaction.atomic():
                self._replace_redone()
                if batch:
                    metrics_record(self.run_id, batch)
                if samples:  # the record, its aggregates; keys already stored are skipped
                    rollout_samples.record_rows(self.run_id, samples, attempt=self.attempt)

        db_retry(write, f"store the metrics of run {self.run_id}")
        self._replaced = True

    def _replace_redone(self) -> None:
        """Inside the attempt's first write: older attempts' records of the steps it redoes go."""
        if not self._replaced and self.attempt > 1:
            attempts.redone_steps_replace(self.run_id, self.attempt)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError("the metric sink failed to write to the database") from self._error

    def _background(self) -> None:
        interval = settings.ORLAB_SINK_FLUSH_INTERVAL
        beat_every = settings.ORLAB_HEARTBEAT_INTERVAL
        next_beat = 0.0
        try:
            while not self._closing:
                time.sleep(interval)
                with self._write_lock:
                    self._write(self._swap())
                if shutdown.INTERRUPTED.is_set():  # SIGTERM in this process (workers.shutdown)
                    self.interrupted = True
                    self._stop = True
                if time.monotonic() >= next_beat:
                    ours, cancel, interrupt = db_retry(
                        lambda: services.run_beat(self.run_id, self.attempt),
                        f"beat the heartbeat of run {self.run_id}",
                    )
                    self.lost = not ours
                    self.cancelled = ours and cancel
                    self.interrupted = self.interrupted or (ours and interrupt)
                    self._stop = self._stop or not ours or cancel or self.interrupted
                    next_beat = time.monotonic() + beat_every
        except BaseException as exc:  # surfaced in the trainer thread at its next log()
            log.exception("sink of run %s failed", self.run_id)
            self._error = exc
            self._stop = True
            with self._lock:
                self._flushed.notify_all()
        finally:
            close_old_connections()
            connection.close()
