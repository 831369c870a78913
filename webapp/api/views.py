"""The REST API. Thin views: validate input, call one service or selector, render."""

from __future__ import annotations

from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from trainers.base import all_specs, get_spec
from webapp.api import checkpoint_api
from webapp.api import serializers as s
from webapp.api.errors import WorkerRunConflict, bad_request
from webapp.api.filters import DatasetFilter
from webapp.api.json_safety import MAX_CONFIG_BYTES, json_field_validator
from webapp.api.metrics_io import BatchError, parse_metric_batch, render_series
from webapp.api.pagination import PageNumberPagination
from webapp.api.parsers import FormParser, MultiPartParser
from webapp.datasets import services as dataset_services
from webapp.datasets.models import Dataset, Problem, ScoringJob
from webapp.fleet.selectors import launch_check_summary
from webapp.projects import services as project_services
from webapp.projects.models import Project
from webapp.projects.selectors import project_list
from webapp.runs import selectors, services
from webapp.runs.attempts import attempts_of
from webapp.runs.dependencies import waiting_for
from webapp.runs.metric_store import metrics_record, series_read
from webapp.runs.models import Checkpoint, Evaluation, Run, Sample
from webapp.selectors.pairs import MAX_LEN as PAIR_MAX_LEN
from webapp.selectors.pairs import MAX_QUERY_CHARS as PAIR_MAX_QUERY_CHARS
from webapp.selectors.pairs import PAIR_SORT_KEYS, PairQuery
from webapp.selectors.runs import ORDERINGS as RUN_ORDERINGS
from webapp.selectors.runs import RunTableQuery

# --- projects ---------------------------------------------------------------------------------


class ProjectListApi(generics.ListCreateAPIView):
    serializer_class = s.ProjectSerializer
    queryset = Project.objects.none()  # for the schema generator; requests use get_queryset()
    ordering_fields = ["name", "created_at"]

    def get_queryset(self):
        return project_list(user=self.request.user).order_by("name")

    def perform_create(self, serializer):
        data = serializer.validated_data
        try:
            serializer.instance = project_services.project_create(
                user=self.request.user, name=data["name"], description=data.get("description", "")
            )
        except project_services.ProjectNameTaken:
            # only the caller's own projects are consulted: other teams' names stay unknown
            raise services.RunError(
                "name taken", {"name": ["you already have a project with this name"]}
            ) from None


class ProjectDetailApi(generics.RetrieveAPIView):
    serializer_class = s.ProjectSerializer

    def get_queryset(self):
        return project_list(user=self.request.user)


# --- trainers -----------------------------------------------------------------------------------


def trainer_to_dict(spec) -> dict:
    return {
        "kind": spec.kind,
        "title": spec.title,
        "description": spec.description,
        "queue": spec.queue,
        "config_schema": spec.json_schema(),
        "presets": spec.presets,
        "preset_hardware": spec.preset_hardware,
        "sweep_presets": spec.sweep_presets,
        "primary_metrics": list(spec.primary_metrics),
    }


class TrainerListApi(generics.ListAPIView):
    """Every trainer kind, with its config JSON Schema and presets (what the launch form renders)."""

    serializer_class = s.TrainerSerializer
    filter_backends = []

    def get_queryset(self):
        return all_specs()

    def list(self, request, *args, **kwargs):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([trainer_to_dict(spec) for spec in page])


# --- runs ---------------------------------------------------------------------------------------


LIST_FIELDS = ("config",)  # what ?fields= can add to a list's runs


def list_fields(request) -> set[str]:
    """?fields=config: what a list endpoint adds to each run. A run's config can be large (up to
    256 KB), so lists leave it out unless asked; an unknown name is a 400."""
    raw = request.query_params.get("fields")
    if raw is None:
        return set()
    names = {f.strip() for f in raw.split(",")}
    if unknown := names - set(LIST_FIELDS):
        raise services.RunError(
            "invalid query",
            {"fields": [f"unknown field {sorted(unknown)[0]!r}; one of {', '.join(LIST_FIELDS)}"]},
        )
    return names


FIELDS_PARAMETER = OpenApiParameter(
    "fields",
    str,
    enum=list(LIST_FIELDS),
    description="config: include each run's config (left out of lists by default)",
)


def run_to_dict(run: Run, last: dict | None = None, *, detail: bool = True, config: bool = True) -> dict:
    """``detail=False`` is a list's shape; ``config=False`` leaves the config out (lists, unless
    asked with ?fields=config)."""
    duration = run.duration
    data = {
        "id": run.id,
        "project": run.project_id,
        "name": run.name,
        "kind": run.kind,
        "status": run.status,
        "queue": run.queue,
        "group": run.group,
        "tags": run.tags,
        "config": run.config,
        "parent": run.parent_id,
        "attempt": run.attempt,
        "cancel_requested": run.cancel_requested,
        "worker_host": run.worker_host,
        "heartbeat_at": run.heartbeat_at,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_s": duration.total_seconds() if duration is not None else None,
        "error": run.error,
        "code_version": run.code_version,
        "dataset_versions": run.dataset_versions,
        "summary": run.summary,
        "last": last or {},
    }
    if not config:
        del data["config"]
    if detail:
        data["traceback"] = run.traceback
        data["memory_estimate"] = run.memory_estimate  # per GPU, computed at launch (may be {})
        data["launch_check"] = launch_check_summary(run)  # the workers the config was checked against
        # attempt boundaries (first step, start/end) for the charts: webapp.runs.attempts
        data["attempts"] = attempts_of(run)
        # {id, name, status} of the run a waiting run waits for (webapp.runs.dependencies); else null
        data["waiting_for"] = waiting_for(run)
    return data


def _resolve_project(user, project_id) -> Project:
    try:
        return project_list(user=user).get(pk=project_id)
    except Project.DoesNotExist:
        # Same answer for "does not exist" and "not yours": no probing of other teams' ids.
        raise services.RunError("unknown project", {"project": ["no such project among yours"]}) from None


def _check_config_size(config: dict, field: str = "config") -> dict:
    """A merged config (preset + overrides, a clone's source + overrides) keeps the 256 KB limit too."""
    try:
        json_field_validator(MAX_CONFIG_BYTES)(config)
    except ValidationError as exc:
        raise services.RunError("invalid input", {field: [str(m) for m in exc.detail]}) from None
    return config


def _launch_config(kind: str, preset: str, config: dict) -> dict:
    if not preset:
        return config
    try:
        presets = get_spec(kind).presets
    except KeyError as exc:
        raise services.RunError("unknown kind", {"kind": [str(exc.args[0])]}) from None
    if preset not in presets:
        raise services.RunError("unknown preset", {"preset": [f"known presets: {sorted(presets)}"]})
    return _check_config_size(services._merge(dict(presets[preset]), config or {}))


def _sweep_preset(kind: str, name: str) -> dict:
    try:
        named = get_spec(kind).sweep_presets
    except KeyError as exc:
        raise services.RunError("unknown kind", {"kind": [str(exc.args[0])]}) from None
    if name not in named:
        raise services.RunError("unknown sweep preset", {"sweep_preset": [f"known: {sorted(named)}"]})
    return named[name]


ORDERING_DOC = (
    "[-]<name or column spec>; names: " + ", ".join(RUN_ORDERINGS) + " (also created_at, started_at, "
    "finished_at); several names comma-separated. Default -created, ties by id. Sorting by mean_last_N is "
    "done in Python over at most 5,000 matching runs (a 400 beyond)."
)
#: The runs-table query's parameters (webapp.selectors.runs), shared by GET /api/runs/ and /api/runs/table/.
RUN_QUERY_PARAMETERS = [
    OpenApiParameter("project", {"type": "integer", "minimum": 1, "maximum": 2**53}),
    OpenApiParameter("kind", str),
    OpenApiParameter("status", str, description="a status, or several comma-separated"),
    OpenApiParameter("status__in", str, description="old spelling of status (comma-separated)"),
    OpenApiParameter("group", str),
    OpenApiParameter("tag", str, description="runs carrying this tag"),
    OpenApiParameter("q", str, description="substring of name or group"),
    OpenApiParameter("search", str, description="old spelling of q"),
    OpenApiParameter("ids", str, description="only these runs (comma-separated ids, at most 1000)"),
]


class RunListApi(generics.ListAPIView):
    """Runs of your projects: the runs-table query (webapp.selectors.runs, the same as the runs page and
    GET /api/runs/table/). Filter with ?project= &kind= &status= &group= &tag= &q= &ids= and
    config.<path>[__op]=<value>; sort with ?ordering=[-]<name or column spec>."""

    serializer_class = s.RunSerializer
    queryset = Run.objects.none()  # for the schema generator; requests use the runs-table query
    filter_backends = []

    @extend_schema(
        parameters=[
            *RUN_QUERY_PARAMETERS,
            OpenApiParameter("ordering", str, description=ORDERING_DOC),
            FIELDS_PARAMETER,
        ]
    )
    def get(self, request, *args, **kwargs):
        with_config = "config" in list_fields(request)
        services.runs_mark_lost()
        query = RunTableQuery.parse(request.query_params, selectors.run_list(user=request.user))
        deferred = ("traceback",) if with_config else ("traceback", "config")
        page, _ = query.rows(self.paginate_queryset, defer=deferred)
        last = selectors.last_values(page)
        return self.get_paginated_response(
            [run_to_dict(r, last[r.id], detail=False, config=with_config) for r in page]
        )

    @extend_schema(
        request=s.RunCreateSerializer,
        responses={201: s.RunSerializer},
        examples=[
            OpenApiExample(
                "tabular NPG on a random MDP",
                value={
                    "project": 1,
                    "name": "npg eta=1",
                    "kind": "tabular",
                    "config": {
                        "method": "softmax_npg",
                        "step_size": 1.0,
                        "iterations": 200,
                        "mdp": {
                            "kind": "garnet",
                            "states": 20,
                            "actions": 5,
                            "branching": 3,
                            "seed": 0,
                            "gamma": 0.9,
                        },
                    },
                },
                request_only=True,
            )
        ],
    )
    def post(self, request: Request) -> Response:
        ser = s.RunCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        project = _resolve_project(request.user, data["project"])
        run = services.run_create(
            user=request.user,
            project=project,
            name=data["name"],
            kind=data["kind"],
            config=_launch_config(data["kind"], data["preset"], data["config"]),
            group=data["group"],
            tags=data["tags"],
            queue=data.get("queue"),
        )
        return Response(run_to_dict(run), status=status.HTTP_201_CREATED)


class SweepCreateApi(APIView):
    """Launch one run per point of a grid over config fields, all in one group."""

    @extend_schema(request=s.SweepCreateSerializer, responses={201: s.RunSerializer(many=True)})
    def post(self, request: Request) -> Response:
        ser = s.SweepCreateSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        project = _resolve_project(request.user, data["project"])
        preset, grid = data["preset"], data["grid"]
        if data["sweep_preset"]:
            named = _sweep_preset(data["kind"], data["sweep_preset"])
            preset, grid = preset or named.get("preset", ""), {**named["grid"], **grid}
        runs = services.sweep_create(
            user=request.user,
            project=project,
            name=data["name"],
            kind=data["kind"],
            config=_launch_config(data["kind"], preset, data["config"]),
            grid=grid,
            group=data["group"],
            tags=data["tags"],
            queue=data.get("queue"),
        )
        return Response({"group": runs[0].group, "runs": [run_to_dict(r) for r in runs]}, status=201)


class RunDetailApi(APIView):
    @extend_schema(responses=s.RunSerializer)
    def get(self, request: Request, pk: int) -> Response:
        services.runs_mark_lost()
        run = selectors.run_get(user=request.user, pk=pk)
        data = run_to_dict(run, selectors.last_values([run])[run.id])
        data["keys"] = selectors.metric_keys(run)
        return Response(data)


class RunCancelApi(APIView):
    @extend_schema(request=None, responses=s.RunSerializer)
    def post(self, request: Request, pk: int) -> Response:
        run = services.run_request_cancel(selectors.run_get(user=request.user, pk=pk))
        return Response(run_to_dict(run))


class RunResumeApi(APIView):
    @extend_schema(request=None, responses=s.RunSerializer)
    def post(self, request: Request, pk: int) -> Response:
        run = services.run_resume(selectors.run_get(user=request.user, pk=pk))
        return Response(run_to_dict(run))


class RunCloneApi(APIView):
    @extend_schema(request=s.RunCloneSerializer, responses={201: s.RunSerializer})
    def post(self, request: Request, pk: int) -> Response:
        source = selectors.run_get(user=request.user, pk=pk)
        ser = s.RunCloneSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        override = ser.validated_data.get("config")
        if override is not None and not isinstance(override, dict):
            return bad_request("invalid input", {"config": ["must be an object"]})
        if override:
            _check_config_size(services._merge(dict(source.config), override))
        run = services.run_clone(
            source,
            user=request.user,
            # the default name keeps within the 200-character limit of a long source name
            name=ser.validated_data.get("name") or f"{source.name[:192]} (clone)",
            config=override,
        )
        return Response(run_to_dict(run), status=status.HTTP_201_CREATED)


class RunFinishApi(APIView):
    """An external run's client reports the end of training."""

    @extend_schema(request=s.RunFinishSerializer, responses=s.RunSerializer)
    def post(self, request: Request, pk: int) -> Response:
        run = selectors.run_get(user=request.user, pk=pk)
        ser = s.RunFinishSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        run = services.run_finish_external(run, **ser.validated_data)
        return Response(run_to_dict(run))


def _external_run_for_write(request, pk) -> Run:
    """The run a client writes results into. Only an external run: a worker run's results come from
    its worker, and a client's write would race it (the first write of a step wins, so the worker's
    real values would be dropped). 409 Conflict: the request is well formed, the run's kind refuses it."""
    run = selectors.run_get(user=request.user, pk=pk)
    if run.kind != Run.EXTERNAL:
        raise WorkerRunConflict()
    return run


def _bool_param(request, name: str) -> bool:
    """true/1 or false/0 (absent: false); anything else is a 400 naming the parameter."""
    raw = request.query_params.get(name)
    if raw is None:
        return False
    if raw.lower() in ("1", "true"):
        return True
    if raw.lower() in ("0", "false"):
        return False
    raise services.RunError("invalid query", {name: ["must be true or false"]})


def _int_param(request, name: str, lo: int, hi: int) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise services.RunError("invalid query", {name: ["must be an integer"]}) from None
    if not lo <= value <= hi:
        raise services.RunError("invalid query", {name: [f"must be between {lo} and {hi}"]})
    return value


def _keys_param(request) -> list[str] | None:
    raw = request.query_params.get("keys")
    return [k for k in raw.split(",") if k] if raw else None


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


class RunSamplesApi(generics.ListAPIView):
    serializer_class = s.SampleSerializer
    filter_backends = []

    @extend_schema(
        request=s.SampleBatchSerializer,
        responses={200: OpenApiTypes.OBJECT},
        description="Store up to 10,000 samples atomically; samples with a client_key already stored are skipped.",
    )
    def post(self, request: Request, pk: int) -> Response:
        run = _external_run_for_write(request, pk)
        ser = s.SampleBatchSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        samples = ser.validated_data["samples"]
        written = services.samples_record(run, samples)
        return Response({"received": len(samples), "written": written, "skipped": len(samples) - written})

    @extend_schema(
        parameters=[
            OpenApiParameter("step", int, description="one step"),
            OpenApiParameter("step_min", int, description="steps >= step_min"),
            OpenApiParameter("step_max", int, description="steps <= step_max"),
            OpenApiParameter(
                "verdict", str, description=f"comma-separated, of {', '.join(s.SAMPLE_VERDICTS)}"
            ),
            OpenApiParameter("truncated", str, enum=["true", "false"]),
        ],
        description="Samples in step order. A bad filter value is a 400 naming the parameter.",
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        run = selectors.run_get(user=self.request.user, pk=self.kwargs["pk"])
        # a plain dict: DRF reads a missing boolean of a QueryDict as False
        ser = s.SampleFilterSerializer(data=self.request.query_params.dict())
        ser.is_valid(raise_exception=True)
        f = ser.validated_data
        qs = Sample.objects.filter(run=run)
        if "step" in f:
            qs = qs.filter(step=f["step"])
        if "step_min" in f:
            qs = qs.filter(step__gte=f["step_min"])
        if "step_max" in f:
            qs = qs.filter(step__lte=f["step_max"])
        if f.get("verdict"):
            qs = qs.filter(verdict__in=f["verdict"])
        if "truncated" in f:
            qs = qs.filter(truncated=f["truncated"] == "true")
        return qs.order_by("step", "id")


class RunCheckpointsApi(generics.ListAPIView):
    serializer_class = s.CheckpointSerializer
    filter_backends = []

    @extend_schema(
        request={"application/x-tar": OpenApiTypes.BINARY, "application/gzip": OpenApiTypes.BINARY},
        parameters=[
            OpenApiParameter("step", int, required=True, description="the checkpoint's step (0 to 2^62)"),
            OpenApiParameter("metrics", str, description='a JSON object of numbers, e.g. {"val/loss": 0.1}'),
        ],
        responses={201: s.CheckpointSerializer, 400: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT,
                   413: OpenApiTypes.OBJECT},
        description=checkpoint_api.DESCRIPTION,
    )  # fmt: skip
    def post(self, request: Request, pk: int) -> Response:
        """Upload an external run's checkpoint directory (a tar body; webapp/api/checkpoint_api.py)."""
        return checkpoint_api.checkpoint_post(request, selectors.run_get(user=request.user, pk=pk))

    def get_queryset(self):
        return selectors.checkpoint_list(selectors.run_get(user=self.request.user, pk=self.kwargs["pk"]))


class RunEvaluationsApi(generics.ListAPIView):
    """Evaluations of a run in step order (each with its protocol and, if it failed, the error)."""

    serializer_class = s.EvaluationSerializer
    filter_backends = []

    @extend_schema(request=s.EvaluationInSerializer, responses={201: s.EvaluationSerializer})
    def post(self, request: Request, pk: int) -> Response:
        """Record an evaluation the client ran (what a trainer's sink.log_evaluation stores)."""
        run = _external_run_for_write(request, pk)
        ser = s.EvaluationInSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        ev = services.evaluation_record(
            run.id, data["step"], data["benchmark"], data["metrics"], data["protocol"]
        )
        return Response(s.EvaluationSerializer(ev).data, status=status.HTTP_201_CREATED)

    def get_queryset(self):
        run = selectors.run_get(user=self.request.user, pk=self.kwargs["pk"])
        return Evaluation.objects.filter(run=run).order_by("step", "id")


# --- datasets (import and curation arrive with the preference-data issue) -----------------------


class DatasetListApi(generics.ListAPIView):
    serializer_class = s.DatasetSerializer
    queryset = Dataset.objects.none()  # for the schema generator; requests use get_queryset()
    filterset_class = DatasetFilter
    ordering_fields = ["created_at", "name", "version"]
    parser_classes = [MultiPartParser, FormParser]

    def get_queryset(self):
        return Dataset.objects.filter(project__in=project_list(user=self.request.user))

    @extend_schema(
        request={"multipart/form-data": s.DatasetUploadSerializer},
        responses={201: s.DatasetSerializer, 202: s.DatasetSerializer, 400: OpenApiTypes.OBJECT},
        description="Import a file of preference pairs or problems. Every row is validated; a file with a "
        "bad row is rejected with the line numbers and reasons of the first errors, and nothing is stored. "
        f"Files up to {dataset_services.SYNC_IMPORT_BYTES // 2**20} MB are imported in the request (201 or "
        "400); larger ones, and small ones whose rows pass 64 MB of text, in the background (202: poll the "
        "dataset for status, progress and row errors; "
        "a failure ends it `failed` with its reason). 400 also for a file beyond the upload limit, a file "
        "already imported or being imported, and a file beyond the reading limits (record size, nesting, "
        "Parquet sizes: see the README).",
    )
    def post(self, request: Request) -> Response:
        ser = s.DatasetUploadSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        project = _resolve_project(request.user, data["project"])
        try:
            dataset, background = dataset_services.dataset_upload(
                user=request.user, project=project, name=data["name"], kind=data["kind"], upload=data["file"]
            )
        except dataset_services.ImportRejected as exc:
            return bad_request(exc.detail, exc.errors)
        code = status.HTTP_202_ACCEPTED if background else status.HTTP_201_CREATED
        return Response(s.DatasetSerializer(dataset).data, status=code)


class DatasetDetailApi(generics.RetrieveAPIView):
    serializer_class = s.DatasetSerializer

    def get_queryset(self):
        return Dataset.objects.filter(project__in=project_list(user=self.request.user))


def _dataset_for(request, pk) -> Dataset:
    try:
        return Dataset.objects.filter(project__in=project_list(user=request.user)).get(pk=pk)
    except Dataset.DoesNotExist:
        raise Http404("no such dataset") from None


class PairPagination(PageNumberPagination):
    """Counts stop a little past the requested page (at least datasets.selectors.COUNT_CAP):
    ``count_capped`` then says ``count`` is a lower bound. An unfiltered list counts exactly (the
    dataset's row count)."""

    def paginate_queryset(self, queryset, request, view=None):
        self.django_paginator_class = view.pair_query.paginator
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data):
        response = super().get_paginated_response(data)
        response.data["count_capped"] = self.page.paginator.capped
        return response

    def get_paginated_response_schema(self, schema):
        out = super().get_paginated_response_schema(schema)
        out["properties"]["count_capped"] = {"type": "boolean"}
        return out


class DatasetPairsApi(generics.ListAPIView):
    """Pairs of a preference dataset, selected as the pair browser selects them (webapp.selectors.pairs):
    ?q= (full text over prompt and chosen response; ?search= is the old spelling) &source=
    &kept=true|false &drop_reason= &min_len= &max_len= (chosen length, inclusive) &rm=<checkpoint id>
    (a reward model that scored the dataset: each pair gets its ``margin``)
    &ordering=[-]row|chosen_len|rejected_len|source|margin (margin needs rm; unscored pairs last).
    Counts of filtered lists stop at 10,000 (``count_capped``)."""

    serializer_class = s.PreferencePairSerializer
    filter_backends = []
    pagination_class = PairPagination
    pair_query: PairQuery | None = None

    @extend_schema(
        parameters=[
            OpenApiParameter("q", str, description=f"full text, at most {PAIR_MAX_QUERY_CHARS} characters"),
            OpenApiParameter("search", str, description="old spelling of q"),
            OpenApiParameter("source", str),
            OpenApiParameter("kept", bool),
            OpenApiParameter("drop_reason", str),
            OpenApiParameter("min_len", {"type": "integer", "minimum": 0, "maximum": PAIR_MAX_LEN}),
            OpenApiParameter("max_len", {"type": "integer", "minimum": 0, "maximum": PAIR_MAX_LEN}),
            OpenApiParameter("rm", int, description="a reward-model checkpoint that scored this dataset"),
            OpenApiParameter("ordering", str, enum=[f"{d}{k}" for k in PAIR_SORT_KEYS for d in ("", "-")]),
        ]
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        dataset = _dataset_for(self.request, self.kwargs["pk"])
        self.pair_query = PairQuery(
            self.request.query_params, dataset, user=self.request.user, strict=True, list_reward_models=False
        )
        return self.pair_query.queryset()


class DatasetProblemsApi(generics.ListAPIView):
    serializer_class = s.ProblemSerializer
    filter_backends = []

    def get_queryset(self):
        dataset = _dataset_for(self.request, self.kwargs["pk"])
        qs = Problem.objects.filter(dataset=dataset).order_by("row")
        if domain := self.request.query_params.get("domain"):
            qs = qs.filter(domain=domain)
        return qs


# --- checkpoints: on-demand evaluation and reward-model scoring ------------------------------------


def _checkpoint_for(request, pk) -> Checkpoint:
    try:
        return Checkpoint.objects.select_related("run").get(
            pk=pk, run__project__in=project_list(user=request.user)
        )
    except Checkpoint.DoesNotExist:
        raise Http404("no such checkpoint") from None


class CheckpointEvaluateApi(APIView):
    """Evaluate a policy checkpoint on a benchmark (problems dataset): k samples per problem, avg@k and
    pass@k, stored with the protocol. Runs in a worker; poll GET /api/runs/{run}/evaluations/."""

    @extend_schema(request=s.EvaluateRequestSerializer, responses={202: s.EvaluationSerializer})
    def post(self, request: Request, pk: int) -> Response:
        checkpoint = _checkpoint_for(request, pk)
        ser = s.EvaluateRequestSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        data = ser.validated_data
        try:
            benchmark = Dataset.objects.get(pk=data["benchmark"], project__in=project_list(user=request.user))
        except Dataset.DoesNotExist:
            return bad_request("invalid input", {"benchmark": ["no such dataset among yours"]})
        # settings left out are the run's own (services.evaluation_settings); a RunError is a 400
        given = {key: data[key] for key in ("k", "temperature", "top_p", "max_new_tokens") if key in data}
        ev = services.evaluation_request(checkpoint=checkpoint, benchmark=benchmark, **given)
        return Response(s.EvaluationSerializer(ev).data, status=status.HTTP_202_ACCEPTED)


class CheckpointScoreApi(APIView):
    """Score every pair of a preference dataset with this reward-model checkpoint (a worker task);
    the scores appear in the pair browser and feed the margin/consistency curation steps."""

    @extend_schema(request=s.ScoreRequestSerializer, responses={202: s.ScoringJobSerializer})
    def post(self, request: Request, pk: int) -> Response:
        checkpoint = _checkpoint_for(request, pk)
        ser = s.ScoreRequestSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        try:
            dataset = _dataset_for(request, ser.validated_data["dataset"])
        except Http404:
            return bad_request("invalid input", {"dataset": ["no such dataset among yours"]})
        try:
            job = dataset_services.scoring_job_create(
                user=request.user, dataset=dataset, checkpoint=checkpoint
            )
        except dataset_services.ImportRejected as exc:
            return bad_request(exc.detail, exc.errors)
        return Response(s.ScoringJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)


class DatasetScoringJobsApi(generics.ListAPIView):
    serializer_class = s.ScoringJobSerializer
    filter_backends = []

    def get_queryset(self):
        dataset = _dataset_for(self.request, self.kwargs["pk"])
        return (
            ScoringJob.objects.filter(dataset=dataset).select_related("dataset", "checkpoint").order_by("-id")
        )


class RunScoringJobsApi(generics.ListAPIView):
    """Scoring jobs of a reward-model run's checkpoints, newest first (the run page polls them)."""

    serializer_class = s.ScoringJobSerializer
    filter_backends = []

    def get_queryset(self):
        run = selectors.run_get(user=self.request.user, pk=self.kwargs["pk"])
        return (
            ScoringJob.objects.filter(checkpoint__run=run)
            .select_related("dataset", "checkpoint")
            .order_by("-id")
        )
