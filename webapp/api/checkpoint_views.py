"""Checkpoints: on-demand evaluation on a benchmark and reward-model scoring of a dataset."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.api import serializers as s
from webapp.api.common import (
    _checkpoint_for,
    _dataset_for,
)
from webapp.api.errors import bad_request
from webapp.datasets import services as dataset_services
from webapp.datasets.models import Dataset
from webapp.projects.selectors import project_list
from webapp.runs import services


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
