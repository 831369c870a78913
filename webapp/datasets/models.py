from django.conf import settings
from django.db import models

from webapp.projects.models import Project


class Dataset(models.Model):
    """A versioned, immutable set of rows. Curation and re-imports make new versions (``parent``
    points at the version it came from); a run records the versions it used."""

    class Kind(models.TextChoices):
        PREFERENCE = "preference"
        PROBLEMS = "problems"
        STEP_VALUES = "step_values"  # produced by a run (DAPO's Monte-Carlo step values), not imported

    class Status(models.TextChoices):
        IMPORTING = "importing"
        READY = "ready"
        FAILED = "failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    version = models.PositiveIntegerField(default=1)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.IMPORTING)
    sha256 = models.CharField(max_length=64, blank=True, db_index=True)
    row_count = models.PositiveIntegerField(default=0)
    progress = models.FloatField(default=0.0)
    error = models.TextField(blank=True)
    meta = models.JSONField(default=dict, blank=True)
    # The run that produced this dataset (None for imports and curation results).
    source_run = models.ForeignKey(
        "runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_datasets"
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name", "version"], name="dataset_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


class PreferencePair(models.Model):
    """One (prompt, chosen, rejected) comparison. ``chosen``/``rejected`` hold either plain text or a
    chat conversation (list of {role, content}); ``kept``/``drop_reason`` record curation."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="pairs")
    row = models.PositiveIntegerField()
    prompt = models.TextField()
    chosen = models.JSONField()
    rejected = models.JSONField()
    source = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Text of the final chosen/rejected responses (for search, diffs and length filters).
    chosen_text = models.TextField(default="")
    rejected_text = models.TextField(default="")
    chosen_len = models.PositiveIntegerField(default=0)
    rejected_len = models.PositiveIntegerField(default=0)
    kept = models.BooleanField(default=True)
    drop_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["dataset", "row"]
        constraints = [models.UniqueConstraint(fields=["dataset", "row"], name="pair_row_unique")]
        indexes = [
            models.Index(fields=["dataset", "source"], name="pair_dataset_source"),
            models.Index(fields=["dataset", "kept", "drop_reason"], name="pair_dataset_kept"),
        ]


class Problem(models.Model):
    """A verifiable problem: math (reference answer) or code (tests)."""

    class Domain(models.TextChoices):
        MATH = "math"
        CODE = "code"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="problems")
    row = models.PositiveIntegerField()
    domain = models.CharField(max_length=8, choices=Domain.choices)
    prompt = models.TextField()
    answer = models.TextField(blank=True)
    tests = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["dataset", "row"]
        constraints = [models.UniqueConstraint(fields=["dataset", "row"], name="problem_row_unique")]


class StepSolution(models.Model):
    """A sampled solution split into reasoning steps, with the Monte-Carlo value of every prefix:
    ``values[t]`` = fraction of rollouts from (prompt + first t steps) that ended correct, so
    ``len(values) == len(steps) + 1`` and the last value is the solution's own verifier reward."""

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="step_solutions")
    row = models.PositiveIntegerField()
    prompt = models.TextField()
    answer = models.TextField(blank=True)
    solution = models.TextField()
    steps = models.JSONField(default=list)
    values = models.JSONField(default=list)
    correct = models.BooleanField(default=False)
    verdict = models.CharField(max_length=32, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["dataset", "row"]
        constraints = [models.UniqueConstraint(fields=["dataset", "row"], name="stepsolution_row_unique")]


class PairScore(models.Model):
    """A reward model's scores for one pair: what the pair browser shows and what the margin and
    consistency filters of curation use. ``scorer`` names the reward model (run and checkpoint)."""

    pair = models.ForeignKey(PreferencePair, on_delete=models.CASCADE, related_name="scores")
    checkpoint = models.ForeignKey("runs.Checkpoint", on_delete=models.CASCADE, related_name="pair_scores")
    chosen = models.FloatField()
    rejected = models.FloatField()
    margin = models.FloatField()  # chosen - rejected

    class Meta:
        constraints = [models.UniqueConstraint(fields=["checkpoint", "pair"], name="pairscore_unique")]
        indexes = [models.Index(fields=["checkpoint", "margin"], name="pairscore_ckpt_margin")]


class ScoringJob(models.Model):
    """A reward-model checkpoint scoring every pair of a dataset version (a background task)."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="scoring_jobs")
    checkpoint = models.ForeignKey("runs.Checkpoint", on_delete=models.CASCADE, related_name="scoring_jobs")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0)
    scored = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
