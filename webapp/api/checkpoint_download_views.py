"""``GET /api/checkpoints/{id}/download/``: a checkpoint as a streamed tar (issue 16 point 8), for
scripts (token) as for the pages (session). The rules are webapp/runs/checkpoint_download.py's: model
files only unless ``?include=optimizer``, ``?archive=tar.gz`` to compress, 404 for a checkpoint outside
the caller's projects or without trusted files, 410 for one the retention policy deleted."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.api.common import _checkpoint_for
from webapp.api.errors import bad_request
from webapp.runs import selectors
from webapp.runs.checkpoint_download import (
    ARCHIVES,
    INCLUDES,
    DownloadOptionsInvalid,
    DownloadRefused,
    download_choices,
    download_response,
    parse_options,
)

_ERROR = OpenApiResponse(OpenApiTypes.OBJECT, description='{"detail": "..."}')


class CheckpointDownloadApi(APIView):
    def perform_content_negotiation(self, request, force=False):
        # The archive is not one of the API's renderers: a client asking for application/x-tar must not
        # get a 406; errors still render as the API's JSON (the first renderer).
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="checkpoint_download",
        parameters=[
            OpenApiParameter(
                "include",
                str,
                enum=list(INCLUDES),
                description="model (default): weights, config and tokenizer files only; optimizer: the whole "
                "directory, optimizer and scheduler state included",
            ),
            OpenApiParameter("archive", str, enum=list(ARCHIVES), description="tar (default) or tar.gz"),
        ],
        responses={
            (200, "application/x-tar"): OpenApiTypes.BINARY,
            (200, "application/gzip"): OpenApiTypes.BINARY,
            400: _ERROR,
            404: _ERROR,
            410: _ERROR,
        },
    )
    def get(self, request: Request, pk: int):
        """Download a checkpoint as a tar archive generated while it is sent."""
        checkpoint = _checkpoint_for(request, pk)
        try:
            include, archive = parse_options(request.query_params)
            return download_response(checkpoint, include, archive)
        except DownloadOptionsInvalid as exc:
            return bad_request("invalid query", exc.errors)
        except DownloadRefused as exc:
            return Response({"detail": exc.message}, status=exc.status)


class DownloadChoiceSerializer(serializers.Serializer):
    include = serializers.ChoiceField(choices=INCLUDES)
    label = serializers.CharField()
    bytes = serializers.IntegerField(help_text="bytes of the files sent (before tar framing or gzip)")
    files = serializers.IntegerField()
    url = serializers.CharField(help_text="the page's download link (session login)")
    url_gz = serializers.CharField(help_text="the same, as tar.gz")
    api_url = serializers.CharField(help_text="the API's download (token or session)")


class CheckpointDownloadsSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    step = serializers.IntegerField()
    deleted = serializers.BooleanField()
    choices = DownloadChoiceSerializer(many=True, help_text="[] when the checkpoint cannot be downloaded")


class RunCheckpointDownloadsApi(APIView):
    @extend_schema(
        operation_id="run_checkpoint_downloads", responses={200: CheckpointDownloadsSerializer(many=True)}
    )
    def get(self, request: Request, pk: int):
        """What each checkpoint of a run offers to download, with sizes (the run page's table)."""
        run = selectors.run_get(user=request.user, pk=pk)
        rows = [
            {"id": c.pk, "step": c.step, "deleted": c.deleted_at is not None, "choices": download_choices(c)}
            for c in selectors.checkpoint_list(run)
        ]
        return Response(CheckpointDownloadsSerializer(rows, many=True).data)
