"""The run page's chart API (issue 16 points 2, 6, 7): a user's chart preferences per project (pinned
charts, collapsed sections), a run's chart markers (attempt boundaries and health-rule events, polled
by the live page) and a run's metrics as CSV. Members only: another team's project or run is a 404."""

from __future__ import annotations

from django.http import Http404, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.alerts.markers import run_event_markers
from webapp.api.serializers import TextField
from webapp.projects.models import Project
from webapp.projects.selectors import project_list
from webapp.runs import chart_prefs, selectors
from webapp.runs.attempts import attempts_of, run_duration_s
from webapp.runs.metrics_csv import metrics_csv_filename, metrics_csv_rows

MAX_OPS = 100  # names per operation and request


def _names(help_text: str) -> serializers.ListField:
    return serializers.ListField(
        # exact names: a metric key may hold any character but NUL (MetricSeries.key is 255 long)
        child=TextField(min_length=1, max_length=255, trim_whitespace=False),
        max_length=MAX_OPS,
        required=False,
        default=list,
        help_text=help_text,
    )


class ChartPrefsUpdateSerializer(serializers.Serializer):
    pin = _names("metric keys to pin on top of the run pages of this project")
    unpin = _names("metric keys to unpin")
    collapse = _names("sections (metric key prefixes, e.g. 'actor') to collapse")
    expand = _names("sections to expand")


ChartPrefsSerializer = inline_serializer(
    "ChartPrefs",
    {
        "project": serializers.IntegerField(),
        "pinned": serializers.ListField(child=serializers.CharField()),
        "collapsed": serializers.ListField(child=serializers.CharField()),
    },
)


def _project(request: Request, pk: int) -> Project:
    try:
        return project_list(user=request.user).get(pk=pk)
    except Project.DoesNotExist:
        raise Http404("no such project") from None


class ChartPrefsApi(APIView):
    """Your run-page chart layout in a project: the pinned charts (metric keys, shown on top of every
    run page of the project) and the collapsed sections. PATCH applies operations (pin, unpin,
    collapse, expand), so two open pages never overwrite each other's changes. JSON bodies only: a
    form body cannot tell an empty list from a field left out (schemathesis's `expand: {}` as
    multipart was read as "no names" and answered 200)."""

    parser_classes = [JSONParser]

    @extend_schema(responses=ChartPrefsSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(chart_prefs.prefs_get(_project(request, pk), request.user))

    @extend_schema(request=ChartPrefsUpdateSerializer, responses=ChartPrefsSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        project = _project(request, pk)
        ser = ChartPrefsUpdateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        return Response(chart_prefs.prefs_update(project, request.user, **ser.validated_data))


class RunChartMarkersApi(APIView):
    """What the run page draws on every chart besides the metric: the attempt boundaries (a resumed
    attempt's first step), the health-rule events (webapp.alerts.markers) and the run's duration
    summed over its attempts."""

    @extend_schema(
        responses=inline_serializer(
            "RunChartMarkers",
            {
                "attempts": serializers.ListField(child=serializers.DictField()),
                "events": serializers.ListField(child=serializers.DictField()),
                "duration_s": serializers.FloatField(allow_null=True),
            },
        )
    )
    def get(self, request: Request, pk: int) -> Response:
        run = selectors.run_get(user=request.user, pk=pk)
        attempts = attempts_of(run)
        return Response(
            {
                "attempts": attempts,
                "events": run_event_markers(run.id),
                "duration_s": run_duration_s(run, attempts),
            }
        )


class RunMetricsCsvApi(APIView):
    """Every point of the run's metrics as CSV: run_id, run (its name), key, step, value."""

    @extend_schema(
        operation_id="runs_metrics_csv",
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR)},
    )
    def get(self, request: Request, pk: int) -> StreamingHttpResponse:
        return metrics_csv_response(selectors.run_get(user=request.user, pk=pk))


def metrics_csv_response(run) -> StreamingHttpResponse:
    response = StreamingHttpResponse(metrics_csv_rows(run), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{metrics_csv_filename(run)}"'
    return response
