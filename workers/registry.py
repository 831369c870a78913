"""The worker registry, worker side: each worker's main process reports what it can run.

Every ORLAB_WORKER_REPORT_INTERVAL seconds (10 by default) a daemon thread in the worker's main
process (not in each prefork child: ``worker_ready`` is only sent there) stores a WorkerReport: host,
worker name, the queues it consumes, its slots (concurrency), the GPUs its processes see with their
total and free memory (workers.gpu_probe, NVML: no CUDA context in the parent), whether vLLM and
DeepSpeed can be imported (``importlib.util.find_spec``, which imports nothing) and their versions,
the torch version, and the catalogue of models under its ORLAB_MODEL_ROOTS. Launches are validated
against the fresh reports (webapp/runs/launch_checks.py); a clean shutdown marks the report stale.

Loaded by the worker through ``app.conf.imports`` (workers/celery.py)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import socket
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutdown

from trainers.common import model_roots
from workers import gpu_probe

log = logging.getLogger(__name__)

#: Import name -> distribution name of the packages a report states.
PACKAGES = {"torch": "torch", "vllm": "vllm", "deepspeed": "deepspeed"}


def package_versions() -> dict[str, str | None]:
    """Import name -> version ("" when importable but without metadata), None when not importable.
    ``find_spec`` of a top-level name locates the package without importing it (importing vLLM or
    DeepSpeed in the worker's main process would take seconds and, for vLLM, initialise CUDA)."""
    out: dict[str, str | None] = {}
    for module, dist in PACKAGES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out[module] = None
            continue
        try:
            out[module] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[module] = ""
    return out


def build_report(*, name: str, queues: list[str], slots: int) -> dict[str, Any]:
    """The keyword arguments of webapp.fleet.services.report_upsert for this process now."""
    devices, gpu_notes = gpu_probe.gpus()
    scan = model_roots.scan()
    roots = model_roots.model_roots()
    notes = [*gpu_notes, *scan.notes]
    if not roots:
        notes.append(f"no model roots: {model_roots.ENV} is not set, only 'tiny' can run here")
    return {
        "name": name,
        "host": socket.gethostname(),
        "queues": queues,
        "slots": slots,
        "gpus": devices,
        "visible_gpus": len(devices),
        "packages": package_versions(),
        "catalogue": scan.entries,
        "notes": notes,
    }


class Reporter(threading.Thread):
    """Publishes a report at once, then every ``interval`` seconds until stopped. A failed report
    (database restarting, an unreadable root) is logged and retried at the next tick: the registry
    must never take the worker down."""

    def __init__(self, consumer, interval: float):
        super().__init__(name="orlab-worker-registry", daemon=True)
        self.consumer = consumer
        self.interval = interval
        self.stopped = threading.Event()
        from django.utils import timezone

        self.started_at = timezone.now()

    @property
    def worker_name(self) -> str:
        return self.consumer.hostname

    def queues(self) -> list[str]:
        """The queues consumed now (a control command may have added or cancelled some)."""
        task_consumer = getattr(self.consumer, "task_consumer", None)
        if task_consumer is not None and task_consumer.queues:
            return sorted(q.name for q in task_consumer.queues)
        return sorted(self.consumer.app.amqp.queues.consume_from)

    def slots(self) -> int:
        return int(getattr(self.consumer.controller, "concurrency", 0) or 1)

    def publish(self) -> None:
        from webapp.fleet.services import report_upsert

        report = build_report(name=self.worker_name, queues=self.queues(), slots=self.slots())
        report_upsert(**report, started_at=self.started_at)

    def run(self) -> None:
        from django.db import close_old_connections, connection

        try:
            while not self.stopped.is_set():
                close_old_connections()
                try:
                    self.publish()
                except Exception:
                    log.exception("worker %s could not publish its registry report", self.worker_name)
                self.stopped.wait(self.interval)
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=self.interval + 5)


_reporter: Reporter | None = None


@worker_ready.connect
def _start_reporting(sender, **_kwargs) -> None:
    """``sender`` is the worker's Consumer (its hostname, controller and queues)."""
    global _reporter
    from django.conf import settings

    if _reporter is None:
        _reporter = Reporter(sender, settings.ORLAB_WORKER_REPORT_INTERVAL)
        _reporter.start()


@worker_shutdown.connect
def _stop_reporting(**_kwargs) -> None:
    global _reporter
    reporter, _reporter = _reporter, None
    if reporter is None:
        return
    reporter.stop()
    from django.db import connection

    from webapp.fleet.services import report_stopped

    try:
        report_stopped(reporter.worker_name)
    except Exception:
        log.exception("could not mark worker %s stopped in the registry", reporter.worker_name)
    finally:
        connection.close()
