"""The step-value API: the solutions of a run-produced "step_values" dataset (DAPO's data), each
with its steps and the Monte-Carlo value of every prefix. Read-only: these datasets are written by
runs through their sink, never uploaded."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers

from webapp.api.common import _dataset_for
from webapp.api.errors import bad_request
from webapp.datasets.models import Dataset, StepSolution


class StepSolutionSerializer(serializers.ModelSerializer):
    class Meta:
        model = StepSolution
        fields = ["row", "prompt", "answer", "solution", "steps", "values", "correct", "verdict", "metadata"]


class DatasetSolutionsApi(generics.ListAPIView):
    """Solutions of a step_values dataset in row order: ?correct=true|false filters by outcome."""

    serializer_class = StepSolutionSerializer
    filter_backends = []

    @extend_schema(parameters=[OpenApiParameter("correct", bool)])
    def get(self, request, *args, **kwargs):
        correct = request.query_params.get("correct")
        if correct not in (None, "", "true", "false"):
            return bad_request("invalid query", {"correct": ["must be true or false"]})
        dataset = _dataset_for(request, kwargs["pk"])
        if dataset.kind != Dataset.Kind.STEP_VALUES:
            return bad_request("invalid dataset", {"dataset": [f"holds {dataset.kind}, not step_values"]})
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        qs = StepSolution.objects.filter(dataset_id=self.kwargs["pk"]).order_by("row")
        correct = self.request.query_params.get("correct")
        if correct in ("true", "false"):
            qs = qs.filter(correct=correct == "true")
        return qs


urlpatterns = [
    path("datasets/<int:pk>/solutions/", DatasetSolutionsApi.as_view(), name="api-dataset-solutions"),
]
