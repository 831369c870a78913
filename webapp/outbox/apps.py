from django.apps import AppConfig


class OutboxConfig(AppConfig):
    name = "webapp.outbox"
    label = "outbox"
    verbose_name = "task outbox"
    default_auto_field = "django.db.models.BigAutoField"
