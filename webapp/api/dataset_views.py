"""Datasets: upload and list, one dataset, its pairs (webapp.selectors.pairs, shared with the pair
browser), problems and scoring jobs."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.api import serializers as s
from webapp.api.common import (
    _dataset_for,
    _resolve_project,
)
from webapp.api.errors import bad_request
from webapp.api.filters import DatasetFilter
from webapp.api.pagination import CappedCountPagination
from webapp.api.parsers import FormParser, MultiPartParser
from webapp.datasets import services as dataset_services
from webapp.datasets.models import Dataset, Problem, ScoringJob
from webapp.projects.selectors import project_list
from webapp.selectors.pairs import MAX_LEN as PAIR_MAX_LEN
from webapp.selectors.pairs import MAX_QUERY_CHARS as PAIR_MAX_QUERY_CHARS
from webapp.selectors.pairs import PAIR_SORT_KEYS, PairQuery


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


class PairPagination(CappedCountPagination):
    """Counts stop a little past the requested page (at least datasets.selectors.COUNT_CAP):
    ``count_capped`` then says ``count`` is a lower bound. An unfiltered list counts exactly (the
    dataset's row count)."""

    query_attr = "pair_query"


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


class DatasetScoringJobsApi(generics.ListAPIView):
    serializer_class = s.ScoringJobSerializer
    filter_backends = []

    def get_queryset(self):
        dataset = _dataset_for(self.request, self.kwargs["pk"])
        return (
            ScoringJob.objects.filter(dataset=dataset).select_related("dataset", "checkpoint").order_by("-id")
        )
