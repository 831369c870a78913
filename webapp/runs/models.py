from django.conf import settings
from django.db import models

from webapp.datasets.models import Dataset
from webapp.projects.models import Project


class Run(models.Model):
    """One training (or evaluation) job.

    Status transitions, made only through webapp.runs.services:
        queued -> running -> succeeded | failed | cancelled | lost
        queued -> cancelled                    (cancelled before a worker claimed it)
        waiting -> queued | failed | cancelled (init_from_run: its parent succeeded | ended without
                                                a checkpoint | the user; webapp.runs.dependencies)
        failed | cancelled | lost -> queued    (resume: attempt += 1, continues from the newest checkpoint)
    A run of kind ``external`` trains elsewhere and only logs through the API: it is created running
    and finished by its client; no worker ever claims it.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"
        # waiting for a parent run's checkpoint before it can be queued (the read-path issue builds it)
        WAITING = "waiting"
        RUNNING = "running"
        # stopped on request of its worker's shutdown (SIGTERM) after a checkpoint; resumable
        INTERRUPTED = "interrupted"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"
        LOST = "lost"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    RESUMABLE = (Status.FAILED, Status.CANCELLED, Status.LOST, Status.INTERRUPTED)
    EXTERNAL = "external"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=64)
    config = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    queue = models.CharField(max_length=64, default="cpu")
    group = models.CharField(max_length=200, blank=True)
    tags = models.JSONField(default=list, blank=True)
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children"
    )
    attempt = models.PositiveIntegerField(default=1)
    cancel_requested = models.BooleanField(default=False)
    # Set when the worker holding the run shuts down (SIGTERM): the trainer checkpoints and stops, and
    # the run ends interrupted (resumable) rather than cancelled.
    interrupt_requested = models.BooleanField(default=False)
    worker_host = models.CharField(max_length=255, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    code_version = models.CharField(max_length=64, blank=True)
    datasets = models.ManyToManyField(Dataset, blank=True, related_name="runs")
    dataset_versions = models.JSONField(default=dict, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    # Per-GPU memory estimate computed at launch (trainers.common.memory_estimate), shown next to the
    # measured peak on the run page; empty when the model's shape was not known at launch.
    memory_estimate = models.JSONField(default=dict, blank=True)
    # host:port of the c10d rendezvous of the current attempt of a multi-node run, chosen by node 0
    # when it claims (RunNode) and read by the other nodes' tasks; blank for a one-host run.
    rendezvous_endpoint = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["project", "-created_at"], name="run_project_created"),
            models.Index(fields=["status", "heartbeat_at"], name="run_status_heartbeat"),
            models.Index(fields=["project", "group"], name="run_project_group"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}, {self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def waiting_for(self) -> dict | None:
        """{id, name, status} of the run this waiting run waits for (webapp.runs.dependencies)."""
        from webapp.runs.dependencies import waiting_for

        return waiting_for(self)

    @property
    def duration(self):
        if not self.started_at:
            return None
        from django.utils import timezone

        return (self.finished_at or timezone.now()) - self.started_at


class RunAttempt(models.Model):
    """One attempt of a run (attempt 1, then one per resume): where it started (the step after the
    checkpoint it resumed from) and when it started and ended, for the charts' attempt boundaries.
    Its metrics, samples and evaluations from ``first_step`` on replace the older attempts' ones."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="attempts")
    attempt = models.PositiveIntegerField()
    first_step = models.BigIntegerField(default=0)
    resumed_from_step = models.BigIntegerField(null=True, blank=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, blank=True)  # how it ended (a Run.Status); blank while running
    worker_host = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["run", "attempt"]
        constraints = [models.UniqueConstraint(fields=["run", "attempt"], name="runattempt_run_attempt")]


class RunNode(models.Model):
    """One host's part of an attempt of a multi-process run. A run with ``nodes: N`` queues N node
    tasks; each claims the next free node rank (0, 1, ...) when it starts, so a task redelivered or
    beyond N finds none. Node 0 coordinates: it moves the run to running, records the rendezvous
    endpoint and beats the heartbeat until the ranks' own sink takes over."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="nodes")
    attempt = models.PositiveIntegerField()
    node_rank = models.PositiveIntegerField()
    host = models.CharField(max_length=255)
    claimed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "attempt", "node_rank"]
        constraints = [
            models.UniqueConstraint(fields=["run", "attempt", "node_rank"], name="runnode_run_attempt_rank")
        ]


class MetricSeries(models.Model):
    """One metric key of one run. Points live in MetricChunk rows; this row keeps the running
    aggregates (count, last, min, max) so lists and tables never touch the points, and it is the
    row writers lock to keep (run, key, step) unique."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="series")
    key = models.CharField(max_length=255)
    count = models.BigIntegerField(default=0)
    last_step = models.BigIntegerField(null=True)
    last_value = models.FloatField(null=True)
    min_value = models.FloatField(null=True)
    max_value = models.FloatField(null=True)
    tail_chunk = models.ForeignKey("MetricChunk", null=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="series_run_key_unique")]


class MetricChunk(models.Model):
    """Up to CHUNK_POINTS consecutive points of a series, stored column-wise as little-endian arrays
    (int64 steps, float64 values, float64 unix wall times).

    Why chunks and not a row per point: a 1,000,000-point series is ~250 rows instead of 10^6, so
    reading it for a chart is a few MB of bytea decoded by numpy in milliseconds, and ingestion is
    one row write per key per batch. Steps inside a chunk are strictly increasing; chunks of one
    series may interleave only if points arrived out of order (readers then sort)."""

    CHUNK_POINTS = 4096

    series = models.ForeignKey(MetricSeries, on_delete=models.CASCADE, related_name="chunks")
    step_lo = models.BigIntegerField()
    step_hi = models.BigIntegerField()
    n = models.PositiveIntegerField()
    steps = models.BinaryField()
    values = models.BinaryField()
    walls = models.BinaryField()
    # Summary records of the points in blocks of 64 / 256 / 1,024 / 4,096 (webapp.runs.summaries),
    # written with the points: downsampled reads of long series read these instead of the points.
    summary_64 = models.BinaryField(null=True)
    summary_256 = models.BinaryField(null=True)
    summary_1024 = models.BinaryField(null=True)
    summary_4096 = models.BinaryField(null=True)

    class Meta:
        indexes = [models.Index(fields=["series", "step_hi"], name="chunk_series_step_hi")]


class Checkpoint(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.BigIntegerField()
    path = models.CharField(max_length=1024)
    attempt = models.PositiveIntegerField(default=1)
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Bytes on disk when recorded (directory walk); null for rows recorded before sizes were kept.
    size_bytes = models.BigIntegerField(null=True, blank=True)
    # Set when the retention policy removed the files: the row stays so charts and links can say so.
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "-step"]
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="checkpoint_run_step_unique")]


class Evaluation(models.Model):
    """avg@k / pass@k of one checkpoint on one benchmark, with the protocol that produced them."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        # waiting for a parent run's checkpoint before it can be queued (the read-path issue builds it)
        WAITING = "waiting"
        RUNNING = "running"
        # stopped on request of its worker's shutdown (SIGTERM) after a checkpoint; resumable
        INTERRUPTED = "interrupted"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="evaluations")
    checkpoint = models.ForeignKey(
        Checkpoint, null=True, on_delete=models.SET_NULL, related_name="evaluations"
    )
    # A benchmark dataset, or null for a generated one (benchmark_name then says which).
    benchmark = models.ForeignKey(
        Dataset, null=True, blank=True, on_delete=models.PROTECT, related_name="evaluations"
    )
    benchmark_name = models.CharField(max_length=200, blank=True)
    step = models.BigIntegerField()
    k = models.PositiveIntegerField()
    # The run attempt whose trainer recorded it during training; null for an on-demand evaluation.
    attempt = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    metrics = models.JSONField(default=dict, blank=True)
    protocol = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "step"]
        indexes = [models.Index(fields=["run", "benchmark", "step"], name="eval_run_bench_step")]


# The verifiers' verdicts (trainers.common.verifiers.verdict.VERDICTS). webapp may import only
# trainers.base, so they are repeated here; tests/webapp/test_api_samples.py checks the two agree.
SAMPLE_VERDICTS = ("correct", "wrong", "no_answer", "timeout", "error")
SAMPLE_FINISH_REASONS = ("stop", "length", "error")
SAMPLE_PHASES = ("train", "eval")
GROUP_STATUSES = ("kept", "zero_variance", "solved_all", "unsolved_all")


class RolloutPrompt(models.Model):
    """One prompt text of a run, stored once (samples reference it; webapp.runs.samples)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="rollout_prompts")
    digest = models.CharField(max_length=64, help_text="sha256 hex of the text")
    text = models.TextField()
    # the reference answer: shown in list rows, never sent to sandboxed code
    expected_answer = models.TextField(blank=True)
    data_source = models.CharField(max_length=100, blank=True)
    # the first step whose PromptStepStat (train or eval) has a correct rollout; kept on ingest
    first_solved_step = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["run", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "digest"], name="rolloutprompt_run_digest")]
        indexes = [models.Index(fields=["run", "first_solved_step"], name="rolloutprompt_run_solved")]


class Sample(models.Model):
    """One rollout: what the policy wrote for a prompt and how it was judged.

    New rows reference their prompt (``prompt_ref``) and leave ``prompt`` empty; rows stored before
    RolloutPrompt existed keep the text in ``prompt`` (readers: webapp.runs.samples.prompt_text).

    The completion (PostgreSQL, since migration 0017): a zstd frame in ``completion_z`` compressed with
    the run's dictionary ``completion_dict`` (a SampleTextDictionary id; 0: none), ``completion`` left
    empty (webapp.runs.sample_text). Rows stored before keep their text in ``completion`` (completion_z
    NULL). Loading a row with ``completion_z`` decodes it into ``completion`` (``from_db``); SQL never
    reads the text (the search index gets the decoded text from webapp.runs.sample_search)."""

    # no index of their own (migration 0018): (run, ...) and (prompt_ref, step) below lead with them
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="samples", db_index=False)
    step = models.BigIntegerField()
    prompt = models.TextField(blank=True)
    prompt_ref = models.ForeignKey(
        RolloutPrompt, null=True, blank=True, on_delete=models.CASCADE, related_name="samples", db_index=False
    )
    completion = models.TextField(blank=True)  # legacy rows (and SQLite); see completion_z
    completion_z = models.BinaryField(null=True, blank=True)
    completion_dict = models.IntegerField(default=0)
    reward = models.FloatField(null=True)
    advantage = models.FloatField(null=True)
    verdict = models.CharField(max_length=32, blank=True)
    length = models.PositiveIntegerField(default=0)
    truncated = models.BooleanField(default=False)
    group_index = models.IntegerField(null=True, blank=True)
    member_index = models.IntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=8, blank=True)  # stop | length | error
    rewards = models.JSONField(default=dict, blank=True)  # reward function name -> value
    extracted_answer = models.TextField(blank=True)
    phase = models.CharField(max_length=5, default="train")  # train | eval
    checkpoint_step = models.BigIntegerField(null=True, blank=True)
    attempt = models.IntegerField(null=True, blank=True)
    data_source = models.CharField(max_length=100, blank=True)
    # kept | zero_variance | solved_all | unsolved_all (GROUP_STATUSES) on rows with a group_index: the
    # trainer's reading or derived from the members (webapp.runs.samples); "" for rows in no group
    group_status = models.CharField(max_length=16, blank=True, default="")
    extra = models.JSONField(default=dict, blank=True)
    # Set by API clients so that a re-sent batch (retry, offline sync) is stored once.
    client_key = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001 (NULLs never collide)

    class Meta:
        ordering = ["run", "step", "id"]
        constraints = [models.UniqueConstraint(fields=["run", "client_key"], name="sample_client_key_unique")]
        indexes = [
            # (run, step) was dropped (migration 0018): a prefix of sample_run_group, which serves its queries
            models.Index(fields=["run", "verdict", "step"], name="sample_run_verdict"),
            models.Index(fields=["run", "step", "group_index", "member_index"], name="sample_run_group"),
            models.Index(fields=["prompt_ref", "step"], name="sample_prompt_step"),
            models.Index(fields=["run", "group_status", "step"], name="sample_run_gstatus"),
            # PostgreSQL also has the sorts' (run, key asc/desc nulls last, id) indexes (migration 0012)
        ]

    @classmethod
    def from_db(cls, db, field_names, values):
        obj = super().from_db(db, field_names, values)
        frame = obj.__dict__.get("completion_z")
        if frame is not None:
            from webapp.runs import sample_text

            obj.completion = sample_text.decode(frame, obj.completion_dict)
        return obj


class SampleTextDictionary(models.Model):
    """A run's zstd dictionary for its completions (webapp.runs.sample_text): trained once, on the
    run's first completions, when it has stored enough of them; never changed (rows name it by id)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    data = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)


class SampleTokens(models.Model):
    """Per-token arrays of one sample (a sampled subset of rollouts carries them): int32 / float16,
    little-endian, one value per token."""

    sample = models.OneToOneField(Sample, on_delete=models.CASCADE, related_name="tokens", primary_key=True)
    offsets = models.BinaryField()  # int32 LE: each token's first character in the completion
    logprobs = models.BinaryField(null=True)  # float16 LE
    entropies = models.BinaryField(null=True)  # float16 LE
    engine_logprobs = models.BinaryField(null=True)  # float16 LE: the rollout engine's log-prob


class SampleSearch(models.Model):
    """A completion's full-text vector, written after ingest commits (webapp.runs.sample_search), not by
    the insert: the GIN index on the samples table cost ingest ~25x the COPY itself (bench/RESULTS.md,
    issue 14). Searches read this table's GIN index and recheck the rows not indexed yet.

    No Django foreign keys: the database's own (migration 0013) delete these rows with their sample
    (ON DELETE CASCADE), so retention's and a resume's raw DELETEs need not know this table."""

    sample = models.OneToOneField(
        Sample, on_delete=models.DO_NOTHING, db_constraint=False, primary_key=True, related_name="+"
    )
    run = models.ForeignKey(
        Run, on_delete=models.DO_NOTHING, db_constraint=False, db_index=False, related_name="+"
    )
    # PostgreSQL also has ``tsv tsvector`` = to_tsvector('simple', completion) and its GIN index
    # (migration 0013; raw SQL like datasets' pair search column: SQLite searches by substring)


class SampleSearchPending(models.Model):
    """One ingest batch whose completions are not in SampleSearch yet: the run and the batch's lowest
    and highest sample id. A queue rather than a watermark on sample id because ingest draws its ids
    before COPY and concurrent batches commit out of id order (a watermark would skip a slow batch's
    rows). The indexer deletes a row in the transaction that indexes its samples."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="+")
    first_id = models.BigIntegerField()
    last_id = models.BigIntegerField()


class PromptStepStat(models.Model):
    """Aggregates of one prompt's rollouts at one step and phase, kept on ingest and never deleted by
    retention (the solve matrix and a prompt's history read these)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="prompt_step_stats")
    prompt = models.ForeignKey(RolloutPrompt, on_delete=models.CASCADE, related_name="step_stats")
    step = models.BigIntegerField()
    phase = models.CharField(max_length=5, default="train")
    n = models.PositiveIntegerField(default=0)
    correct = models.PositiveIntegerField(default=0)  # verdict == "correct"
    truncated = models.PositiveIntegerField(default=0)
    # reward_* cover the samples that carry a reward; n_rewarded counts them (mean = reward_sum / n_rewarded)
    n_rewarded = models.PositiveIntegerField(default=0)
    reward_sum = models.FloatField(default=0.0)
    reward_sq_sum = models.FloatField(default=0.0)
    reward_min = models.FloatField(null=True)
    reward_max = models.FloatField(null=True)

    class Meta:
        ordering = ["run", "prompt", "step", "phase"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "prompt", "step", "phase"], name="promptstepstat_run_prompt_step_phase"
            )
        ]
        indexes = [models.Index(fields=["run", "phase", "step"], name="promptstepstat_run_phase_step")]


class SampleKeptKey(models.Model):
    """The client_key of a sample retention deleted: a re-sent copy stays skipped (webapp.runs.retention)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="sample_kept_keys")
    client_key = models.CharField(max_length=100)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "client_key"], name="samplekeptkey_run_key")]


class SavedView(models.Model):
    """A named runs-table view of a project: the table's query string (filters, config filters,
    columns, ordering, page size), saved by one user and applied from the table."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="saved_views")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="saved_views")
    name = models.CharField(max_length=100)
    query = models.TextField(blank=True, help_text="the runs table's query string, without the leading ?")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "user", "name"], name="savedview_project_user_name")
        ]

    def __str__(self) -> str:
        return self.name


# Models kept in their own modules (one owner each), registered with the app by importing them here,
# after the models above that they refer to.
from webapp.runs.models_charts import *  # noqa: E402,F403
from webapp.runs.models_eval import *  # noqa: E402,F403
