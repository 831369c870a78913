from django.contrib import admin

from webapp.runs.models import Checkpoint, Evaluation, MetricSeries, Run, Sample


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "kind", "status", "project", "group", "attempt", "created_at"]
    list_filter = ["status", "kind", "project"]
    search_fields = ["name", "group"]
    readonly_fields = ["traceback", "heartbeat_at", "worker_host", "code_version"]


@admin.register(MetricSeries)
class MetricSeriesAdmin(admin.ModelAdmin):
    list_display = ["run", "key", "count", "last_step", "last_value"]
    raw_id_fields = ["run", "tail_chunk"]


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ["run", "step", "path", "created_at"]
    raw_id_fields = ["run"]


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ["run", "benchmark", "step", "k", "status"]
    raw_id_fields = ["run", "checkpoint", "benchmark"]


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ["run", "step", "verdict", "reward", "length", "truncated"]
    raw_id_fields = ["run"]
    # shown decoded (Sample.from_db), never edited: a row's text lives in its zstd frame
    # (webapp.runs.sample_text), and a save would write the legacy column, which readers ignore
    readonly_fields = ["completion"]
