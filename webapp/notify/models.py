"""Notification channels of a project and the deliveries sent through them (issue 15 point 3).

A ``Channel`` is a webhook or a list of e-mail addresses, with what it subscribes to: the ends of
the project's runs (by status) and health-rule events (all the project's rules, chosen ones by id,
or none). A ``Delivery`` is one notification to one channel: written once per (channel, subject)
(``key`` makes a repeated call a no-op), sent by a task on the ``control`` queue, retried with
exponential backoff, and left ``failed`` with the last error after the last attempt (README
"Notifications")."""

from django.conf import settings
from django.db import models

from webapp.projects.models import Project

#: run statuses a channel can subscribe to (webapp.runs.models.Run.Status values of an ended run)
RUN_END_STATUSES = ("succeeded", "failed", "lost", "cancelled", "interrupted")


class Channel(models.Model):
    class Kind(models.TextChoices):
        WEBHOOK = "webhook"
        EMAIL = "email"

    class Rules(models.TextChoices):
        ALL = "all"  # every rule of the project, present and future
        CHOSEN = "chosen"  # the rules listed in rule_ids
        NONE = "none"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="notify_channels")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    url = models.CharField(max_length=2000, blank=True)  # webhook
    # the webhook's HMAC-SHA256 key: kept in clear (a signature needs it), never shown back in full
    secret = models.CharField(max_length=200, blank=True)
    emails = models.JSONField(default=list, blank=True)  # e-mail: the addresses
    run_statuses = models.JSONField(default=list, blank=True)  # run ends that notify
    rules = models.CharField(max_length=8, choices=Rules.choices, default=Rules.ALL)
    # webapp.alerts rule ids (no foreign key: a deleted rule leaves a dangling id, which matches nothing)
    rule_ids = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="notify_channel_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class Delivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for its (next) attempt
        SENDING = "sending"  # a worker claimed it
        SENT = "sent"
        FAILED = "failed"  # every attempt failed (or it was refused): last_error says why

    class Subject(models.TextChoices):
        RUN_END = "run_end"
        EVENT = "event"
        TEST = "test"

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="deliveries")
    subject = models.CharField(max_length=16, choices=Subject.choices)
    # one delivery per (channel, key): "run:12:2:failed" (run, attempt, status), "event:55", "test:<uuid>"
    key = models.CharField(max_length=200)
    run = models.ForeignKey(
        "runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="notify_deliveries"
    )
    event_id = models.BigIntegerField(null=True, blank=True)  # a webapp.alerts event (no FK: its app)
    payload = models.JSONField(default=dict)  # the JSON body, fixed at creation: every attempt sends it
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # when a task message for the next attempt last went to the broker (the housekeeping re-sends
    # one only when this is old: a slow control queue is not flooded with copies)
    queued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["channel", "key"], name="notify_delivery_once")]
        indexes = [
            # the housekeeping's look for due and stuck deliveries: only unfinished ones are indexed
            models.Index(
                fields=["status", "next_attempt_at"],
                name="notify_delivery_open",
                condition=models.Q(status__in=["pending", "sending"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject} {self.key} -> {self.channel_id} ({self.status})"
