"""Health rules and their events (issue 15 points 1-2).

A Rule watches one metric key (or an alias of the RL presets' table, ``@entropy``...) of the runs
of its project that pass its run filter. It is evaluated where the points arrive
(webapp.alerts.ingest, after the batch commits), except ``stalled``, which the housekeeping task
checks (webapp.alerts.stalled). A rule fires once per *episode*: when its condition becomes true
on a (run, key); it re-arms when the condition clears, so a metric that stays above a threshold
for 10,000 steps is one event, not 10,000."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.projects.models import Project
from webapp.runs.models import Run


class Rule(models.Model):
    class Kind(models.TextChoices):
        THRESHOLD = "threshold"  # value op bound
        CHANGE = "change"  # value moved by more than x over the last N points
        ZSCORE = "zscore"  # value is z standard deviations from the run's own history
        NAN_INF = "nan_inf"  # a non-finite value
        STALLED = "stalled"  # no new point for T seconds (housekeeping)
        COLLAPSE = "collapse"  # entropy collapse (webapp.runs.collapse's rule, on ingest)

    class Severity(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        CRITICAL = "critical"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="alert_rules")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # a metric key, or "@<alias>" (webapp.alerts.presets.ALIASES); blank for `stalled` (any key)
    key = models.CharField(max_length=255, blank=True)
    params = models.JSONField(default=dict, blank=True)
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    # run filter: every set field must match (none set: every run of the project)
    run_kind = models.CharField(max_length=64, blank=True)
    run_group = models.CharField(max_length=200, blank=True)
    run_tag = models.CharField(max_length=200, blank=True)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    enabled = models.BooleanField(default=True)
    preset = models.CharField(max_length=64, blank=True)  # the preset that created it, if any
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["project", "name", "id"]
        indexes = [models.Index(fields=["kind", "enabled"], name="alertrule_kind_enabled")]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"


class RulesVersion(models.Model):
    """Bumped on every change of a project's rules: ingest caches compiled rules per process and
    re-reads them when this moved (one indexed lookup, at most every ORLAB_ALERT_RULES_TTL s)."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, primary_key=True, related_name="+")
    version = models.BigIntegerField(default=0)


class RuleState(models.Model):
    """What a rule remembers of one (run, key) between batches, kept small: whether an episode is
    open, and for z-score the running count/mean/M2 (Welford), for change the last N values, for
    collapse and stalled what the last firing saw (``buffer``)."""

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    active = models.BooleanField(default=False)
    n = models.BigIntegerField(default=0)
    mean = models.FloatField(default=0.0)
    m2 = models.FloatField(default=0.0)
    buffer = models.JSONField(default=list, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "rule", "key"], name="rulestate_unique")]


class RunPulse(models.Model):
    """When a run last stored a point (server time), written on ingest only for projects with a
    `stalled` rule and at most every few seconds a process: what check_stalled compares."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, primary_key=True, related_name="+")
    last_point_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["last_point_at"], name="runpulse_last_point")]


class Event(models.Model):
    """A rule fired on a run. Kept when its rule is deleted (``rule_name`` says what it was)."""

    rule = models.ForeignKey(Rule, null=True, on_delete=models.SET_NULL, related_name="events")
    rule_name = models.CharField(max_length=200)
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="alert_events")
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255, blank=True)
    step = models.BigIntegerField(null=True)
    value = models.FloatField(null=True)
    message = models.TextField()
    severity = models.CharField(max_length=16, choices=Rule.Severity.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["run", "-created_at"], name="alertevent_run_created"),
            models.Index(fields=["project", "-created_at"], name="alertevent_project_created"),
        ]

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_at is not None


class Mute(models.Model):
    """A rule silenced for one run, or for every run (``run`` null), until a time or for good."""

    rule = models.ForeignKey(Rule, on_delete=models.CASCADE, related_name="mutes")
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    until = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
