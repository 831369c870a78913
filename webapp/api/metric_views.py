"""Metrics: one run's series (read and, for external runs, written) and several runs' series at once."""

from __future__ import annotations

from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.api import serializers as s
from webapp.api.common import (
    _bool_param,
    _external_run_for_write,
    _int_param,
    _keys_param,
)
from webapp.api.errors import bad_request
from webapp.api.metrics_io import BatchError, parse_metric_batch, render_series
from webapp.runs import selectors
from webapp.runs.metric_store import metrics_record, series_read


class RunMetricsApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("keys", str, description="comma-separated keys (default: all)"),
            OpenApiParameter(
                "max_points", int, description="downsample each series to at most N points (M4)"
            ),
            OpenApiParameter("since_step", int, description="only points with step > since_step"),
            OpenApiParameter("with_wall", bool, description="also return wall_times (unix seconds)"),
        ],
        responses={200: OpenApiTypes.OBJECT},
        description='{key: {"steps": [...], "values": [...]}}; non-finite values are null.',
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        run = selectors.run_get(user=request.user, pk=pk)
        data = series_read(
            [run.id],
            _keys_param(request),
            since_step=_int_param(request, "since_step", -1, 2**62),
            max_points=_int_param(request, "max_points", 4, 1_000_000),
            with_wall=_bool_param(request, "with_wall"),
        )[run.id]
        return HttpResponse(render_series(data), content_type="application/json")

    @extend_schema(
        request=s.MetricPointSerializer(many=True),
        responses={200: OpenApiTypes.OBJECT},
        description="Store a batch of at most 100,000 points atomically. Idempotent per (run, key, step): "
        "points already stored are skipped. null values are stored as NaN.",
        examples=[
            OpenApiExample("two points", value=[{"key": "loss", "step": 0, "value": 1.5}], request_only=True)
        ],
    )
    def post(self, request: Request, pk: int) -> Response:
        run = _external_run_for_write(request, pk)
        try:
            batch, n = parse_metric_batch(request.body)
        except BatchError as exc:
            return bad_request(exc.detail, exc.errors)
        written = metrics_record(run.id, batch)
        return Response({"received": n, "written": written, "skipped": n - written})


class CompareMetricsApi(APIView):
    """Several runs' series at once, for overlays: ``{run_id: {key: {steps, values}}}``."""

    @extend_schema(
        parameters=[
            OpenApiParameter("runs", str, required=True, description="comma-separated run ids"),
            OpenApiParameter("keys", str, description="comma-separated keys (default: all)"),
            OpenApiParameter("max_points", int),
            OpenApiParameter("since_step", int),
            OpenApiParameter("with_wall", bool),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> HttpResponse:
        try:
            ids = [int(x) for x in request.query_params.get("runs", "").split(",") if x]
        except ValueError:
            return bad_request("invalid query", {"runs": ["comma-separated integers"]})
        if not ids or len(ids) > 100:
            return bad_request("invalid query", {"runs": ["give 1 to 100 run ids"]})
        visible = set(selectors.run_list(user=request.user).filter(pk__in=ids).values_list("pk", flat=True))
        if missing := set(ids) - visible:
            raise Http404(f"no such run: {sorted(missing)}")
        data = series_read(
            ids,
            _keys_param(request),
            since_step=_int_param(request, "since_step", -1, 2**62),
            max_points=_int_param(request, "max_points", 4, 1_000_000),
            with_wall=_bool_param(request, "with_wall"),
        )
        return HttpResponse(
            render_series({str(k): v for k, v in data.items()}), content_type="application/json"
        )
