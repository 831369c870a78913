"""API of the runs table and the compare page: the table (config filters, metric/config columns,
sorting, the entropy-collapse flag), the fields to offer as filters and columns, saved views, and
the evaluations of compared runs. Errors use the API's one shape (webapp.api.errors)."""

from __future__ import annotations

from django.db import IntegrityError
from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.api.common import FIELDS_PARAMETER, _int_param, list_fields
from webapp.api.metrics_io import render_series
from webapp.api.pagination import PageNumberPagination
from webapp.api.run_views import ORDERING_DOC, RUN_QUERY_PARAMETERS, run_to_dict
from webapp.projects.selectors import project_list
from webapp.runs import collapse, selectors, services, table
from webapp.runs.models import MetricSeries, Run, SavedView
from webapp.runs.services import RunError
from webapp.selectors.runs import RunTableQuery

MAX_ID = 2**63 - 1


def _id(raw, field: str) -> int:
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise RunError("invalid query", {field: ["must be an integer"]}) from None
    if not 0 < value <= MAX_ID:
        raise RunError("invalid query", {field: ["no such id"]})
    return value


def _ids(raw: str, field: str, limit: int) -> list[int]:
    ids = list(dict.fromkeys(_id(x, field) for x in raw.split(",") if x.strip()))
    if not ids or len(ids) > limit:
        raise RunError("invalid query", {field: [f"give 1 to {limit} comma-separated ids"]})
    return ids


COLUMN_DOC = (
    "repeat for several: config:<dotted path> or metric:<key>:<agg>, agg = last | min | max | best_min | "
    "best_max | mean_last_<N>"
)


BEST_DOC = (
    "a column spec (as col): mark each group's best run by it (best_in_group), runs without a group "
    "forming one group; with best_only=true only those runs are listed"
)


class RunTableApi(APIView):
    """The runs table: GET /api/runs/ plus config filters, metric and config columns, sorting by any
    of them, and the entropy-collapse verdict of each run.

    Config filters: ``config.<dotted path>[__op]=<value>``, op = exact (default), ne, gt, gte, lt, lte,
    in, exists; the value is read as JSON when it parses (``config.lr__gt=1e-6``,
    ``config.entropy.target=0.2``). A bad filter answers 400 naming the parameter."""

    @extend_schema(
        parameters=[
            *RUN_QUERY_PARAMETERS,
            OpenApiParameter("col", str, many=True, description=COLUMN_DOC),
            OpenApiParameter(
                "ordering",
                str,
                description=ORDERING_DOC,
            ),
            OpenApiParameter("best", str, description=BEST_DOC),
            OpenApiParameter("best_dir", str, enum=["max", "min"], description="default max"),
            OpenApiParameter("best_only", bool, description="only each group's best run"),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
            FIELDS_PARAMETER,
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        with_config = "config" in list_fields(request)
        services.runs_mark_lost()
        query = RunTableQuery.parse(request.query_params, selectors.run_list(user=request.user))
        cols = query.columns
        deferred = ("traceback",)
        if not with_config and not any(c.kind == "config" for c in cols):
            deferred += ("config",)  # read only for config columns or ?fields=config
        paginator = PageNumberPagination()
        page, _ = query.rows(
            lambda items: paginator.paginate_queryset(items, request, view=self), defer=deferred
        )

        rule = collapse.Rule.from_settings()
        series = table.series_rows(
            [r.id for r in page], {c.key for c in cols if c.kind == "metric"} | set(rule.keys)
        )
        values = table.column_values(page, cols, series=series)
        verdicts = collapse.verdicts([r.id for r in page], rule, series=series)
        last = selectors.last_values(page)
        results = []
        for run in page:
            data = run_to_dict(run, last[run.id], detail=False, config=with_config)
            data["columns"] = {spec: cell.as_dict() for spec, cell in values[run.id].items()}
            verdict = verdicts.get(run.id)
            data["collapse"] = verdict.as_dict() if verdict else None
            if query.best_col is not None:
                data["best_in_group"] = run.id in query.best_ids
            results.append(data)
        response = paginator.get_paginated_response(results)
        response.data["columns"] = [
            {"spec": c.spec, "kind": c.kind, "key": c.key, "agg": c.agg, "n": c.n, "label": c.label}
            for c in cols
        ]
        response.data["collapse_rule"] = rule.describe()
        if query.best_col is not None:
            response.data["best"] = {
                "column": query.best_col.spec,
                "direction": query.best_dir,
                "only": query.best_only,
            }
        return response


class RunFieldsApi(APIView):
    """What the runs table offers to filter and show: the config paths of a project's newest runs
    and every metric key logged in it."""

    @extend_schema(
        parameters=[OpenApiParameter("project", int, required=True)],
        responses={
            200: inline_serializer(
                "RunFields",
                {
                    "config": serializers.ListField(child=serializers.CharField()),
                    "metrics": serializers.ListField(child=serializers.CharField()),
                },
            )
        },
    )
    def get(self, request: Request) -> Response:
        pid = _id(request.query_params.get("project"), "project")
        if not project_list(user=request.user).filter(pk=pid).exists():
            raise Http404("no such project")
        runs = Run.objects.filter(project_id=pid)
        paths: dict[str, None] = {}
        for config in runs.order_by("-created_at", "-id").values_list("config", flat=True)[:200]:
            for path in table.flatten_config(config):
                paths.setdefault(path, None)
        keys = (
            MetricSeries.objects.filter(run__project_id=pid)
            .order_by("key")
            .values_list("key", flat=True)
            .distinct()
        )
        # Capped like the metric keys: one run's config with thousands of leaves would otherwise make
        # this answer (and the runs page that reads it) as large as the config.
        return Response({"config": sorted(paths)[:2000], "metrics": list(keys[:2000])})


# --- saved views --------------------------------------------------------------------------------


class SavedViewSerializer(serializers.ModelSerializer):
    query = serializers.CharField(
        max_length=4000,
        allow_blank=True,
        required=False,
        default="",
        help_text="the runs table's query string",
    )

    class Meta:
        model = SavedView
        fields = ["id", "project", "name", "query", "created_at", "updated_at"]
        read_only_fields = ["id", "created_at", "updated_at"]
        validators = []  # (project, user, name) is unique: a POST with a known name replaces it


def _views_of(user):
    return SavedView.objects.filter(user=user, project__in=project_list(user=user))


class SavedViewListApi(APIView):
    """Your saved runs-table views (named query strings per project). POST with a name you already
    used in that project replaces the view (200); a new name creates one (201)."""

    @extend_schema(parameters=[OpenApiParameter("project", int)], responses=SavedViewSerializer(many=True))
    def get(self, request: Request) -> Response:
        qs = _views_of(request.user)
        pids = request.query_params.getlist("project")
        if pids:  # given: one integer (an empty or repeated one is a 400, not "all projects")
            if len(pids) > 1:
                raise RunError("invalid query", {"project": ["an integer, given once"]})
            qs = qs.filter(project_id=_id(pids[0], "project"))
        return Response(SavedViewSerializer(qs.order_by("project_id", "name"), many=True).data)

    @extend_schema(
        request=SavedViewSerializer, responses={201: SavedViewSerializer, 200: SavedViewSerializer}
    )
    def post(self, request: Request) -> Response:
        ser = SavedViewSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        project = data["project"]
        if not project_list(user=request.user).filter(pk=project.pk).exists():
            raise RunError("unknown project", {"project": ["no such project among yours"]})
        query = data.get("query", "").lstrip("?")
        try:
            view, created = SavedView.objects.update_or_create(
                project=project, user=request.user, name=data["name"], defaults={"query": query}
            )
        except IntegrityError:  # a concurrent save of the same name
            view, created = (
                SavedView.objects.get(project=project, user=request.user, name=data["name"]),
                False,
            )
        return Response(SavedViewSerializer(view).data, status=status.HTTP_201_CREATED if created else 200)


class SavedViewDetailApi(APIView):
    def _get(self, request, pk) -> SavedView:
        try:
            return _views_of(request.user).get(pk=pk)
        except SavedView.DoesNotExist:
            raise Http404("no such view") from None

    @extend_schema(responses=SavedViewSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(SavedViewSerializer(self._get(request, pk)).data)

    @extend_schema(request=None, responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        self._get(request, pk).delete()
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- compare ---------------------------------------------------------------------------------------


class CompareEvaluationsApi(APIView):
    """avg@k / pass@k (and any other metric) of the compared runs' succeeded evaluations."""

    @extend_schema(
        parameters=[OpenApiParameter("runs", str, required=True, description="comma-separated run ids")],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        ids = _ids(request.query_params.get("runs", ""), "runs", 100)
        visible = set(selectors.run_list(user=request.user).filter(pk__in=ids).values_list("pk", flat=True))
        if missing := set(ids) - visible:
            raise Http404(f"no such run: {sorted(missing)}")
        return Response({"evaluations": table.evaluations_of(ids)})


class CompareSeriesApi(APIView):
    """What GET /api/compare/ answers (``{run_id: {key: {steps, values[, walls]}}}``, non-finite values
    null), through the one metric reader (webapp.runs.table.compare_series over
    metric_store.series_read, with its cache). The compare page fetches one key per request."""

    @extend_schema(
        parameters=[
            OpenApiParameter("runs", str, required=True, description="comma-separated run ids (at most 100)"),
            OpenApiParameter("keys", str, description="comma-separated keys (default: all)"),
            OpenApiParameter(
                "max_points", int, description="downsample each series to at most N points (M4)"
            ),
            OpenApiParameter("since_step", int, description="only points with step > since_step"),
            OpenApiParameter("with_wall", bool, description="also return walls (unix seconds)"),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> HttpResponse:
        ids = _ids(request.query_params.get("runs", ""), "runs", 100)
        visible = set(selectors.run_list(user=request.user).filter(pk__in=ids).values_list("pk", flat=True))
        if missing := set(ids) - visible:
            raise Http404(f"no such run: {sorted(missing)}")
        raw_keys = request.query_params.get("keys")
        data = table.compare_series(
            ids,
            [k for k in raw_keys.split(",") if k] if raw_keys else None,
            since_step=_int_param(request, "since_step", -1, 2**62),
            max_points=_int_param(request, "max_points", 4, 1_000_000),
            with_wall=request.query_params.get("with_wall") in ("1", "true"),
        )
        return HttpResponse(
            render_series({str(k): v for k, v in data.items()}), content_type="application/json"
        )
