from django.apps import AppConfig


class NotifyConfig(AppConfig):
    name = "webapp.notify"
    label = "notify"
    verbose_name = "notifications"

    def ready(self) -> None:
        # registers the delivery task with the Celery app: the worker loads every installed app
        # (Celery's Django fixup sets Django up first), so it knows the task without a line in
        # workers.celery's imports
        from webapp.notify import tasks  # noqa: F401
