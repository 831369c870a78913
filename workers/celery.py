"""The Celery app. It imports nothing of the project at module level, so the web app can send tasks
by name through it without importing the workers' code (or torch)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

app = Celery("orlab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_routes = {"workers.tasks.*": {"queue": "cpu"}}
# workers.registry: the worker reports its queues, GPUs and models (connects to worker_ready)
app.conf.imports = ("workers.tasks", "workers.registry")
