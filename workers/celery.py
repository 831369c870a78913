"""The Celery app. It imports nothing of the project at module level, so the web app can send tasks
by name through it without importing the workers' code (or torch)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("orlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Where a task goes when its sender names no queue (README "Queues and the run lifecycle"). Runs go
# to their run's queue (the trainer spec's, or the launch's), so execute_run has no route here.
app.conf.task_routes = {
    "workers.tasks.housekeeping": {"queue": "control"},
    "workers.tasks.reap_lost_runs": {"queue": "control"},
    "workers.tasks.import_dataset": {"queue": "short"},
    "workers.tasks.curate_dataset": {"queue": "short"},
    "workers.tasks.score_dataset": {"queue": "short"},
    "workers.tasks.evaluate_checkpoint": {"queue": "eval"},
    "workers.tasks.*": {"queue": "cpu"},
}
# workers.registry: the worker reports its queues, GPUs and models (connects to worker_ready)
# workers.claims: the heartbeat of claimed outbox messages stops when their task returns
# workers.task_threads: each model task gets cores // slots CPU threads, set anew before every task
app.conf.imports = ("workers.tasks", "workers.registry", "workers.claims", "workers.task_threads")
