"""The worker registry API: ``GET /api/workers/`` lists the workers that reported recently (what a
launch is validated against): their queues, slots, GPUs, vLLM / DeepSpeed, and model catalogue.
Stale reports (older than ORLAB_WORKER_STALE_AFTER seconds, or of a worker that shut down) are left
out. Any logged-in user may read it: it describes the shared fleet, not a project."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import generics, serializers

from webapp.fleet.models import WorkerReport
from webapp.fleet.selectors import fresh_reports


class PackageSerializer(serializers.Serializer):
    available = serializers.BooleanField()
    version = serializers.CharField(help_text='"" when unknown or not installed')


class WorkerReportSerializer(serializers.ModelSerializer):
    vllm = serializers.SerializerMethodField()
    deepspeed = serializers.SerializerMethodField()
    models = serializers.JSONField(
        source="catalogue",
        help_text="[{name, architecture, model_type, parameters, parameters_source, weights_bytes, hidden_size, "
        "num_hidden_layers, num_attention_heads, num_key_value_heads, intermediate_size, vocab_size, "
        "max_position_embeddings, head_dim, torch_dtype, tie_word_embeddings, chat_template}]",
    )
    gpus = serializers.JSONField(help_text="[{index, name, total_bytes, free_bytes}], CUDA's numbering")

    class Meta:
        model = WorkerReport
        fields = [
            "name", "host", "queues", "slots", "visible_gpus", "gpus", "torch_version", "vllm", "deepspeed",
            "models", "notes", "started_at", "reported_at",
        ]  # fmt: skip

    @extend_schema_field(PackageSerializer)
    def get_vllm(self, report: WorkerReport) -> dict:
        return {"available": report.has_vllm, "version": report.vllm_version}

    @extend_schema_field(PackageSerializer)
    def get_deepspeed(self, report: WorkerReport) -> dict:
        return {"available": report.has_deepspeed, "version": report.deepspeed_version}


class WorkerListApi(generics.ListAPIView):
    serializer_class = WorkerReportSerializer
    filter_backends: list = []  # a list of reports, filtered by queue below

    @extend_schema(
        parameters=[OpenApiParameter("queue", str, description="only the workers consuming this queue")]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        return fresh_reports(self.request.query_params.get("queue") or None)


urlpatterns = [path("workers/", WorkerListApi.as_view(), name="api-workers")]
