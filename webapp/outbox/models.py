"""One row per task message: written in the transaction that creates or re-queues the object it is
about, so a committed object always has its message, whether or not the broker was up then."""

from django.db import models


class Message(models.Model):
    class Subject(models.TextChoices):
        RUN = "run"
        DATASET = "dataset"  # an import or a curation: the dataset stays `importing` until it ends
        SCORING = "scoring"
        EVALUATION = "evaluation"

    task = models.CharField(max_length=200)
    args = models.JSONField(default=list)
    queue = models.CharField(max_length=64)
    subject = models.CharField(max_length=16, choices=Subject.choices)
    subject_id = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    # the last time the message went to the broker (None: not delivered yet)
    sent_at = models.DateTimeField(null=True, blank=True)
    sends = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # claimed by a worker's task (jobs without a heartbeat of their own: imports, curation, scoring,
    # evaluations); the claim's heartbeat tells the housekeeping whether that worker still lives
    claimed_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # the subject no longer waits for this message (claimed, ended or gone): the sender stops looking
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["settled_at", "sent_at"], name="outbox_open"),
            models.Index(fields=["subject", "subject_id"], name="outbox_subject"),
            # the housekeeping looks for stale heartbeats every few seconds: only jobs at work have one
            models.Index(
                fields=["heartbeat_at"], name="outbox_beating", condition=models.Q(heartbeat_at__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task}{self.args} -> {self.queue}"

    @property
    def task_id(self) -> str:
        """The Celery task id: the worker finds its message row from it, the sender finds the message
        in the broker by it."""
        return f"outbox-{self.pk}"
