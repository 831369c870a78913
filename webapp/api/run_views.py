"""Runs: the list (the runs-table query, webapp.selectors.runs), launch, sweeps, one run and its
actions (cancel, resume, clone, finish), and what a run holds besides metrics: samples, checkpoints,
evaluations, scoring jobs."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from trainers.base import get_spec
from webapp.api import checkpoint_api
from webapp.api import serializers as s
from webapp.api.common import (
    FIELDS_PARAMETER,
    _external_run_for_write,
    _resolve_project,
    list_fields,
)
from webapp.api.errors import bad_request
from webapp.api.json_safety import MAX_CONFIG_BYTES, json_field_validator
from webapp.api.sample_views import SampleListMixin
from webapp.datasets.models import ScoringJob
from webapp.fleet.selectors import launch_check_summary
from webapp.runs import eval_policy, selectors, services
from webapp.runs import samples as rollout_samples
from webapp.runs.attempts import attempts_of
from webapp.runs.dependencies import waiting_for
from webapp.runs.models import Evaluation, Run
from webapp.selectors.runs import ORDERINGS as RUN_ORDERINGS
from webapp.selectors.runs import RunTableQuery


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
        # a list defers config: reading it here would cost one query a run (1,000 runs: 57 ms -> 1.1 s)
        **({"config": run.config} if config else {}),
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
    if detail:
        data["traceback"] = run.traceback
        data["memory_estimate"] = run.memory_estimate  # per GPU, computed at launch (may be {})
        data["launch_check"] = launch_check_summary(run)  # the workers the config was checked against
        # attempt boundaries (first step, start/end) for the charts: webapp.runs.attempts
        data["attempts"] = attempts_of(run)
        # {id, name, status} of the run a waiting run waits for (webapp.runs.dependencies); else null
        data["waiting_for"] = waiting_for(run)
    return data


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
        # one transaction: a policy refused (a 400 naming eval_policy.<field>) launches no run, and the
        # run's task message is sent only once both are committed (webapp.outbox)
        with transaction.atomic():
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
            if "eval_policy" in data:
                eval_policy.policy_set(run, data["eval_policy"], prefix="eval_policy.")
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


class RunSamplesApi(SampleListMixin, generics.ListAPIView):
    """POST: ingest. GET: the samples list through the shared sample query (SampleListMixin)."""

    serializer_class = s.SampleSerializer

    @extend_schema(
        request=s.SampleBatchSchema,
        responses={200: OpenApiTypes.OBJECT},
        description="Store up to 10,000 samples atomically (the record: README, Rollout samples); samples "
        "with a client_key the run has (or had, before retention) are skipped. A bad value is a 400 "
        "naming the row and the field (samples.3.finish_reason).",
    )
    def post(self, request: Request, pk: int) -> Response:
        run = _external_run_for_write(request, pk)
        ser = s.SampleBatchSerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        samples = ser.validated_data["samples"]
        written = rollout_samples.record_rows(run, samples)
        return Response({"received": len(samples), "written": written, "skipped": len(samples) - written})


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
