"""The curation API: curate a preference dataset with a recipe (a new version, curated by a
worker), read a curated version's recipe and stats, and the recipe schema and examples for the
browser's recipe builder. Thin views over webapp.datasets.curation.service."""

from __future__ import annotations

from django.http import Http404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.api import serializers as s
from webapp.api.common import _dataset_for
from webapp.api.errors import bad_request
from webapp.api.json_safety import SafeJSONField
from webapp.datasets.curation import recipes, service
from webapp.datasets.curation.example_ids import example_ids


class CurateRequestSerializer(serializers.Serializer):
    recipe = SafeJSONField(
        help_text='{"name": ..., "steps": [{"step": "<name>", ...params}]}; see /api/curation/steps/'
    )


def _recipe_errors(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    """Recipe paths rooted at the request body: steps[2].threshold -> recipe.steps[2].threshold."""
    out = {}
    for key, messages in errors.items():
        if key == "dataset":
            out[key] = messages
        elif key == "__all__":
            out["recipe"] = messages
        else:
            out[f"recipe.{key}"] = messages
    return out


class DatasetCurateApi(APIView):
    @extend_schema(
        request=CurateRequestSerializer,
        responses={202: s.DatasetSerializer},
        description="Curate a ready preference dataset with a recipe: creates the next version of the dataset "
        "(parent = this one, status importing) and curates it in the background; poll the new dataset for "
        "status and progress. Every pair of the source is in the new version, kept or dropped with a reason. "
        "A bad recipe answers 400 with field paths (recipe.steps[2].threshold).",
        examples=[
            OpenApiExample(
                "dedup",
                value={"recipe": recipes.example_recipes()[1]["recipe"]},
                request_only=True,
            )
        ],
    )
    def post(self, request: Request, pk: int) -> Response:
        dataset = _dataset_for(request, pk)
        ser = CurateRequestSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        recipe = ser.validated_data["recipe"]
        if not isinstance(recipe, dict):
            return bad_request("invalid recipe", {"recipe": ["must be an object"]})
        try:
            new = service.dataset_curate(user=request.user, dataset=dataset, recipe=recipe)
        except service.CurationError as exc:
            return bad_request(exc.message, _recipe_errors(exc.field_errors))
        return Response(s.DatasetSerializer(new).data, status=status.HTTP_202_ACCEPTED)


class DatasetCurationApi(APIView):
    @extend_schema(
        responses={
            200: inline_serializer(
                "DatasetCuration",
                {
                    "id": serializers.IntegerField(),
                    "name": serializers.CharField(),
                    "version": serializers.IntegerField(),
                    "parent": serializers.IntegerField(allow_null=True),
                    "status": serializers.CharField(),
                    "progress": serializers.FloatField(),
                    "error": serializers.CharField(),
                    "recipe": serializers.JSONField(),
                    "stats": serializers.JSONField(
                        help_text='{"rows", "in", "kept", "dropped", "kept_by_source", "seconds", "steps": '
                        '[{"step", "params", "in", "dropped", "by_source": {source: {"in", "dropped"}}}]}; '
                        "null until the curation has finished"
                    ),
                },
            )
        },
        description="The recipe and statistics of a curated dataset version (404 for a version that was "
        "imported, not curated).",
    )
    def get(self, request: Request, pk: int) -> Response:
        dataset = _dataset_for(request, pk)
        if "recipe" not in dataset.meta:
            raise Http404("this dataset version was not made by curation")
        return Response(
            {
                "id": dataset.id,
                "name": dataset.name,
                "version": dataset.version,
                "parent": dataset.parent_id,
                "status": dataset.status,
                "progress": dataset.progress,
                "error": dataset.error,
                "recipe": dataset.meta["recipe"],
                "stats": dataset.meta.get("curation_stats"),
            }
        )


class CurationStepsApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "dataset",
                int,
                description="fill the examples with this dataset's project's own benchmark and reward "
                "checkpoint ids (a step with none is left out, its description says why)",
            )
        ],
        responses={200: OpenApiTypes.OBJECT},
        description='{"schema": JSON Schema of a recipe, "steps": [{"step", "title", "description", "schema"}], '
        '"examples": [{"name", "description", "recipe"}]} (without ?dataset= the example ids of benchmarks and '
        "checkpoints are placeholders).",
    )
    def get(self, request: Request) -> Response:
        raw = request.query_params.get("dataset")
        ids = {}
        if raw is not None:
            try:
                pk = int(raw)
            except ValueError:
                return bad_request("invalid parameter", {"dataset": ["must be a dataset id"]})
            ids = example_ids(request.user, _dataset_for(request, pk))
        return Response(
            {
                "schema": recipes.recipe_json_schema(),
                "steps": recipes.step_catalogue(),
                "examples": recipes.example_recipes(**ids),
            }
        )


urlpatterns = [
    path("datasets/<int:pk>/curate/", DatasetCurateApi.as_view(), name="api-dataset-curate"),
    path("datasets/<int:pk>/curation/", DatasetCurationApi.as_view(), name="api-dataset-curation"),
    path("curation/steps/", CurationStepsApi.as_view(), name="api-curation-steps"),
]
