"""Input validation and the documented output shapes. Hot read paths (runs list, metrics) build
their JSON directly from these shapes without DRF's per-field machinery (see views.run_to_dict)."""

import math

from django.conf import settings
from django.db import models
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from webapp.api.json_safety import MAX_CONFIG_BYTES, SafeJSONField, json_field_validator
from webapp.datasets.models import Dataset, PreferencePair, Problem
from webapp.projects.models import Project
from webapp.runs import eval_policy as policy_rules
from webapp.runs.models import (
    GROUP_STATUSES,
    SAMPLE_FINISH_REASONS,
    SAMPLE_PHASES,
    Checkpoint,
    Evaluation,
    Run,
    Sample,
)
from webapp.runs.samples import SampleError
from webapp.runs.samples import normalize as sample_normalize
from webapp.runs.samples import prompt_text as sample_prompt_text


class TextField(serializers.CharField):
    """A string field that takes strings only: DRF's CharField turns a number into its text, so a
    name sent as 222141 was accepted where the schema says string."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        # the schema's maxLength is on what was sent: DRF measures after trimming whitespace, so a
        # name padded past the limit with trailing whitespace (\x1c counts as such) was accepted
        if self.max_length is not None and len(data) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        return super().to_internal_value(data)


class ProjectSerializer(serializers.ModelSerializer):
    # the model's text columns as TextField (strings only): schemathesis's stateful phase sent a number
    # as the name and DRF's CharField stored its text (201)
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: TextField,
        models.TextField: TextField,
    }

    class Meta:
        model = Project
        fields = ["id", "name", "description", "created_at"]
        read_only_fields = ["id", "created_at"]


class TrainerSerializer(serializers.Serializer):
    kind = TextField()
    title = TextField()
    description = TextField()
    queue = TextField()
    config_schema = serializers.JSONField(help_text="JSON Schema of the run config")
    presets = serializers.JSONField(help_text="name -> a complete config")
    preset_hardware = serializers.JSONField(
        help_text="preset name -> {summary, gpu_memory_gb (null: CPU), gpus_per_node, nodes}: what it needs"
    )
    primary_metrics = serializers.ListField(child=TextField())
    capabilities = serializers.JSONField(
        help_text="{policy_checkpoints: another run may start from its checkpoints, evaluate_checkpoints: "
        "POST /api/checkpoints/{id}/evaluate/ takes them, score_datasets: they score preference datasets, "
        "publishes_datasets: dataset kinds its runs publish, panels: run-page panels}"
    )


# Ids and steps beyond these are refused with a 400 naming the field (PostgreSQL's bigint would 500).
MAX_ID = 2**53
MAX_STEP = 2**62


def _config(**kwargs) -> serializers.JSONField:
    """A run config: check_json's limits (webapp/api/json_safety.py) and at most 256 KB."""
    return SafeJSONField(
        validators=[json_field_validator(MAX_CONFIG_BYTES)],
        help_text=f"at most {MAX_CONFIG_BYTES // 1024} KB encoded",
        **kwargs,
    )


class StrictBooleanField(serializers.BooleanField):
    """true or false only: DRF's BooleanField also takes "yes", "1", 1, which the schema's boolean does not."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only: DRF's IntegerField also takes "3" and 3.0, which the schema's integer does not."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A JSON number only (DRF's FloatField also takes the string "0.5")."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class EvalPolicySerializer(serializers.Serializer):
    """A run's evaluation policy (webapp.runs.eval_policy): whenever the run saves its every-th
    checkpoint, a worker evaluates it on each benchmark. Null settings are the run's own (``defaults``
    in the answer). The types and bounds are checked here; the datasets, k <= n and the run's kind by
    webapp.runs.evalpolicy_rules.validate."""

    enabled = StrictBooleanField(required=False, default=True)
    benchmarks = serializers.ListField(
        child=StrictIntegerField(min_value=1, max_value=MAX_ID),
        max_length=policy_rules.MAX_BENCHMARKS,
        required=False,
        default=list,
        help_text="ids of ready problems datasets of the run's project",
    )
    every = StrictIntegerField(
        min_value=1, max_value=policy_rules.MAX_EVERY, required=False, default=1,
        help_text="evaluate the run's every N-th checkpoint (1: each one)",
    )  # fmt: skip
    n = StrictIntegerField(
        min_value=1, max_value=policy_rules.MAX_N, required=False, allow_null=True, default=None,
        help_text="samples per problem (null: the run's own eval k)",
    )  # fmt: skip
    ks = serializers.ListField(
        child=StrictIntegerField(min_value=1, max_value=policy_rules.MAX_N),
        max_length=policy_rules.MAX_KS,
        required=False,
        default=list,
        help_text="k values of pass@k, pass^k, maj@k, each <= n (empty: 1, 2, 4, ... n)",
    )
    temperature = StrictFloatField(
        min_value=0.0, max_value=policy_rules.MAX_TEMPERATURE, required=False, allow_null=True, default=None
    )
    top_p = StrictFloatField(min_value=0.0, max_value=1.0, required=False, allow_null=True, default=None)
    max_new_tokens = StrictIntegerField(
        min_value=1, max_value=policy_rules.MAX_NEW_TOKENS, required=False, allow_null=True, default=None
    )


class RunCreateSerializer(serializers.Serializer):
    project = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, help_text="id of a project you belong to"
    )
    name = TextField(max_length=200, required=False, allow_blank=True, default="")
    kind = TextField(max_length=64, help_text="a trainer kind from /api/trainers/, or 'external'")
    config = _config(required=False, default=dict)
    preset = TextField(
        required=False,
        allow_blank=True,
        default="",
        help_text="start from this preset; config keys override it",
    )
    group = TextField(max_length=200, required=False, allow_blank=True, default="")
    tags = serializers.ListField(child=TextField(max_length=64), required=False, default=list, max_length=100)
    queue = serializers.ChoiceField(
        choices=list(settings.ORLAB_RUN_QUEUES), required=False, help_text="default: the trainer's queue"
    )
    # created in the launch's transaction: a bad policy launches nothing
    eval_policy = EvalPolicySerializer(
        required=False, help_text="the run's evaluation policy (GET/PUT /api/runs/{id}/eval-policy/)"
    )


class SweepCreateSerializer(RunCreateSerializer):
    eval_policy = None  # a sweep's runs get none at launch (each one's is set on it afterwards)
    grid = serializers.DictField(
        child=serializers.ListField(max_length=1000),
        validators=[json_field_validator(MAX_CONFIG_BYTES)],
        required=False,
        default=dict,
        help_text='dotted config path -> values, e.g. {"step_size": [0.1, 1]}; overrides the sweep preset\'s',
    )
    sweep_preset = TextField(
        required=False,
        allow_blank=True,
        default="",
        help_text="a named sweep of the trainer (GET /api/trainers/: sweep_presets): its preset and grid",
    )


class RunCloneSerializer(serializers.Serializer):
    name = TextField(max_length=200, required=False, allow_blank=True)
    config = SafeJSONField(
        required=False,
        validators=[json_field_validator(MAX_CONFIG_BYTES)],
        help_text="fields to override in the cloned config",
    )


class RunFinishSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["succeeded", "failed"])
    error = TextField(required=False, allow_blank=True, default="")
    summary = serializers.DictField(required=False, default=dict, validators=[json_field_validator()])


class RunSerializer(serializers.ModelSerializer):
    """The output shape of a run (documentation; rendering is done by views.run_to_dict)."""

    last = serializers.DictField(help_text="key -> {step, value}: last values of the primary metrics")
    keys = serializers.ListField(
        child=TextField(), required=False, help_text="every metric key logged (detail view only)"
    )
    duration_s = serializers.FloatField(allow_null=True)
    launch_check = serializers.DictField(
        allow_null=True,
        required=False,
        help_text="{queue, workers, checked} (detail view only): the fresh workers of the run's queue its "
        "config was checked against at launch; checked is false when none of them had reported",
    )
    attempts = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        help_text="(detail view only) one per attempt, oldest first: {attempt, first_step, "
        "resumed_from_step, started_at, ended_at, status, worker_host}; a resumed attempt's metrics, "
        "samples and evaluations from first_step on replace the older attempts'",
    )
    waiting_for = serializers.DictField(
        allow_null=True,
        required=False,
        help_text="(detail view only) {id, name, status} of the run a waiting run waits for (its "
        "init_from_run); null unless the run is waiting",
    )

    class Meta:
        model = Run
        fields = [
            "id", "project", "name", "kind", "status", "queue", "group", "tags", "config", "parent", "attempt",
            "cancel_requested", "worker_host", "heartbeat_at", "created_at", "started_at", "finished_at",
            "duration_s", "error", "traceback", "code_version", "dataset_versions", "summary", "last", "keys",
            "memory_estimate", "launch_check", "attempts", "waiting_for",
        ]  # fmt: skip


class MetricPointSerializer(serializers.Serializer):
    key = TextField(max_length=255)
    step = serializers.IntegerField(min_value=0, max_value=MAX_STEP)
    value = serializers.FloatField(allow_null=True, help_text="null stores a non-finite value (NaN/inf)")
    wall_time = serializers.FloatField(required=False, help_text="unix seconds; default: time of receipt")


class SampleTokensInSerializer(serializers.Serializer):
    offsets = serializers.ListField(
        child=serializers.IntegerField(min_value=0, max_value=2**31 - 1),
        help_text="each token's first character in the completion (non-decreasing)",
    )
    logprobs = serializers.ListField(child=serializers.FloatField(allow_null=True), required=False)
    entropies = serializers.ListField(child=serializers.FloatField(allow_null=True), required=False)
    engine_logprobs = serializers.ListField(
        child=serializers.FloatField(allow_null=True),
        required=False,
        help_text="the rollout engine's log-probs",
    )


class SampleInSerializer(serializers.Serializer):
    """One sample of POST /api/runs/{id}/samples/ (the record: webapp.runs.samples). Documents the
    schema; the batch is checked by SampleBatchSerializer with webapp.runs.samples.normalize, which
    names the row and the field of a bad value (``samples.3.finish_reason``). Keys outside these go
    into ``extra``."""

    step = serializers.IntegerField(min_value=0, max_value=MAX_STEP)
    prompt = TextField(allow_blank=True, trim_whitespace=False)
    completion = TextField(allow_blank=True, trim_whitespace=False)
    reward = serializers.FloatField(required=False, allow_null=True, default=None, help_text="the total")
    advantage = serializers.FloatField(required=False, allow_null=True, default=None)
    verdict = TextField(max_length=32, required=False, allow_blank=True, default="")
    length = serializers.IntegerField(
        min_value=0, max_value=2**31 - 1, required=False, help_text="tokens; default: characters"
    )
    truncated = serializers.BooleanField(required=False, default=False)
    group_index = serializers.IntegerField(
        min_value=0,
        max_value=2**31 - 1,
        required=False,
        allow_null=True,
        help_text="which group of the step (0..G-1)",
    )
    member_index = serializers.IntegerField(
        min_value=0,
        max_value=2**31 - 1,
        required=False,
        allow_null=True,
        help_text="its place in the group (0..n-1)",
    )
    finish_reason = serializers.ChoiceField(choices=list(SAMPLE_FINISH_REASONS), required=False)
    rewards = serializers.DictField(
        child=serializers.FloatField(allow_null=True), required=False, help_text="reward function -> value"
    )
    extracted_answer = TextField(required=False, allow_blank=True)
    expected_answer = TextField(required=False, allow_blank=True, help_text="stored once, on the prompt")
    data_source = TextField(max_length=100, required=False, allow_blank=True)
    phase = serializers.ChoiceField(choices=list(SAMPLE_PHASES), required=False, default="train")
    checkpoint_step = serializers.IntegerField(
        min_value=0, max_value=MAX_STEP, required=False, allow_null=True
    )
    attempt = serializers.IntegerField(
        min_value=0,
        max_value=2**31 - 1,
        required=False,
        allow_null=True,
        help_text="default: the run's current attempt",
    )
    group_status = serializers.ChoiceField(
        choices=list(GROUP_STATUSES), required=False, help_text="default: derived from the group's members"
    )
    tokens = SampleTokensInSerializer(
        required=False, help_text="per-token arrays (a sampled subset of rollouts), each as long as offsets"
    )
    extra = serializers.DictField(required=False, default=dict, validators=[json_field_validator()])
    client_key = TextField(
        max_length=100, required=False, allow_null=True, default=None,
        help_text="unique per run: a re-sent sample with the same key is stored once (also after "
        "retention deleted it)",
    )  # fmt: skip


class SampleBatchSchema(serializers.Serializer):
    """The documented request body of POST /api/runs/{id}/samples/."""

    samples = SampleInSerializer(many=True, max_length=10_000, allow_empty=False)


class SampleBatchSerializer(serializers.Serializer):
    """The request body as checked: each row through webapp.runs.samples.normalize (one pass; DRF's
    per-field serializers cost more than the insert at 10,000 rows). validated_data["samples"]
    holds the normalized rows for webapp.runs.samples.record_rows."""

    samples = serializers.ListField(max_length=10_000, allow_empty=False)

    def validate_samples(self, value):
        rows = []
        for i, sample in enumerate(value):
            try:
                rows.append(sample_normalize(sample, i))
            except SampleError as exc:
                raise serializers.ValidationError({str(exc.row): {exc.field: [exc.reason]}}) from None
        return rows


class CheckpointInSerializer(serializers.Serializer):
    """The query parameters of a checkpoint upload (the body is the tar archive; no ``path``: a
    checkpoint is uploaded, never recorded by path, webapp/api/checkpoint_api.py)."""

    step = serializers.IntegerField(min_value=0, max_value=2**62)
    metrics = serializers.DictField(
        child=serializers.FloatField(allow_null=True), required=False, default=dict
    )


class EvaluateRequestSerializer(serializers.Serializer):
    benchmark = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="id of a problems dataset")
    # Unset: the run's own generation settings (its eval section, the stage's response limit, its chat
    # template: webapp.runs.services.evaluation_settings).
    k = serializers.IntegerField(min_value=1, max_value=1024, required=False, help_text="samples per problem")
    temperature = serializers.FloatField(min_value=0.0, max_value=5.0, required=False)
    top_p = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    max_new_tokens = serializers.IntegerField(min_value=1, max_value=131072, required=False)


class EvaluationInSerializer(serializers.Serializer):
    """An evaluation a client ran itself (an external run), as trainers log them through the sink."""

    step = serializers.IntegerField(min_value=0, max_value=2**62)
    benchmark = TextField(max_length=200, help_text="the benchmark's name")
    metrics = serializers.DictField(
        child=serializers.JSONField(allow_null=True),
        allow_empty=False,
        validators=[json_field_validator()],  # refuses NaN/Infinity, which jsonb cannot hold
        help_text="e.g. avg@4, pass@1: numbers (or null); '<name>_ci': [lo, hi], the number's 95 % "
        "interval (the run page draws it as a band)",
    )
    protocol = serializers.DictField(
        required=False,
        default=dict,
        validators=[json_field_validator()],
        help_text="k, temperature, top_p, max_new_tokens, verifier, ...",
    )

    def validate_metrics(self, value: dict) -> dict:
        """Numbers (or null), and intervals [lo, hi] under '<name>_ci'."""

        def number(x) -> float | None:
            if isinstance(x, bool) or not isinstance(x, int | float):
                return None
            try:
                f = float(x)
            except OverflowError:
                return None
            return f if math.isfinite(f) else None

        out = {}
        for name, v in value.items():
            if name.endswith("_ci") and isinstance(v, list):
                ends = [number(x) for x in v]
                if len(ends) != 2 or None in ends or ends[0] > ends[1]:
                    # keyed by the metric, so the 400 names `metrics.<name>`
                    raise serializers.ValidationError(
                        {name: ["an interval is [lo, hi], two numbers, lo <= hi"]}
                    )
                out[name] = ends
            elif v is None:
                out[name] = None
            elif (f := number(v)) is not None:
                out[name] = f
            else:
                raise serializers.ValidationError({name: ["a number, null, or [lo, hi] under '<name>_ci'"]})
        return out

    def validate_protocol(self, value: dict) -> dict:
        k = value.get("k", 1)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 2**31 - 1:
            raise serializers.ValidationError("k must be an integer from 1 to 2^31 - 1")
        return value


class ScoreRequestSerializer(serializers.Serializer):
    dataset = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, help_text="id of a preference dataset to score with this reward model"
    )


class ScoringJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    dataset = serializers.IntegerField(source="dataset_id")
    dataset_name = TextField(source="dataset.name")
    dataset_version = serializers.IntegerField(source="dataset.version")
    checkpoint = serializers.IntegerField(source="checkpoint_id")
    checkpoint_step = serializers.IntegerField(source="checkpoint.step")
    status = TextField()
    progress = serializers.FloatField()
    scored = serializers.IntegerField()
    error = TextField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)


class CheckpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = Checkpoint
        fields = ["id", "run", "step", "path", "attempt", "metrics", "size_bytes", "deleted_at", "created_at"]


class SampleSerializer(serializers.ModelSerializer):
    """A stored sample (the prompt resolved: its RolloutPrompt's text, or a legacy row's own)."""

    prompt = serializers.SerializerMethodField()
    prompt_id = serializers.IntegerField(source="prompt_ref_id", allow_null=True, read_only=True)

    class Meta:
        model = Sample
        fields = [
            "id",
            "step",
            "prompt",
            "prompt_id",
            "completion",
            "reward",
            "advantage",
            "verdict",
            "length",
            "truncated",
            "group_index",
            "member_index",
            "finish_reason",
            "rewards",
            "extracted_answer",
            "phase",
            "checkpoint_step",
            "attempt",
            "data_source",
            "extra",
        ]

    def get_prompt(self, obj) -> str:
        return sample_prompt_text(obj)


class EvaluationSerializer(serializers.ModelSerializer):
    protocol_key = serializers.SerializerMethodField(
        help_text="8 hex digits naming the protocol's measuring fields (webapp.runs.eval_protocol): "
        "evaluations with different keys are not comparable points of one line"
    )

    class Meta:
        model = Evaluation
        fields = [
            "id",
            "run",
            "checkpoint",
            "benchmark",
            "benchmark_name",
            "step",
            "k",
            "status",
            "metrics",
            "protocol",
            "protocol_key",
            "error",
            "created_at",
        ]

    def get_protocol_key(self, obj: Evaluation) -> str:
        from webapp.runs.eval_protocol import protocol_key

        return protocol_key(obj.protocol)


class DatasetSerializer(serializers.ModelSerializer):
    class Meta:
        model = Dataset
        fields = [
            "id", "project", "name", "kind", "version", "parent", "status", "sha256", "row_count", "progress",
            "error", "meta", "created_at",
        ]  # fmt: skip


class DatasetUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="JSONL, JSON (one array), CSV or Parquet")
    name = TextField(max_length=200)
    kind = serializers.ChoiceField(choices=["preference", "problems"])
    project = serializers.IntegerField(min_value=1, max_value=MAX_ID)


class PreferencePairSerializer(serializers.ModelSerializer):
    margin = serializers.SerializerMethodField(help_text="chosen - rejected score of ?rm= (null without it)")

    class Meta:
        model = PreferencePair
        fields = [
            "id", "row", "prompt", "chosen", "rejected", "source", "metadata", "chosen_len", "rejected_len",
            "kept", "drop_reason", "margin",
        ]  # fmt: skip

    @extend_schema_field({"type": "number", "format": "double", "nullable": True})
    def get_margin(self, pair) -> float | None:
        return getattr(pair, "margin", None)


class ProblemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Problem
        fields = ["id", "row", "domain", "prompt", "answer", "tests", "metadata"]


class EvalPolicyOutSerializer(EvalPolicySerializer):
    run = serializers.IntegerField(read_only=True)
    available = serializers.BooleanField(read_only=True, help_text="the run's kind has policy checkpoints")
    defaults = serializers.JSONField(read_only=True, help_text="the run's own n and sampling settings")
    updated_at = serializers.DateTimeField(read_only=True, allow_null=True)
