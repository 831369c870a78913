"""POST /api/runs/{id}/checkpoints/: an external run uploads a checkpoint directory (issue 11).

The body is the directory as a tar archive (``Content-Type: application/x-tar``, gzip allowed as
``application/gzip``), streamed into the artifact store by webapp.runs.checkpoint_upload; the step
and metrics come as query parameters, because the body is the archive. A JSON body recording a
``path`` (what the API took before) is refused with a 400 naming ``path``: a worker must never be
handed a path a user chose."""

from __future__ import annotations

from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from webapp.api import serializers as s
from webapp.api.errors import bad_request
from webapp.api.json_safety import loads as safe_loads
from webapp.runs import services
from webapp.runs.checkpoint_upload import UploadRefused, store_checkpoint_upload
from webapp.runs.models import Checkpoint, Run

#: Body types read as a tar stream (tarfile detects gzip, bzip2 and xz itself).
ARCHIVE_TYPES = ("application/x-tar", "application/tar", "application/gzip", "application/x-gzip")

DESCRIPTION = (
    "Upload a checkpoint directory of an **external** run (a worker run records its own: 409). The "
    "body is the directory as a tar archive (`Content-Type: application/x-tar`, or `application/gzip` "
    "for a .tar.gz), streamed into the artifact store; `step` (required) and `metrics` (a JSON object "
    "of numbers) are query parameters. Member names must stay inside the directory (no absolute "
    "paths, no `..`); only files and folders are accepted (400). A body or unpacked total beyond "
    "ORLAB_CHECKPOINT_UPLOAD_MAX_BYTES is a 413. Re-uploading a step replaces it. A JSON body with a "
    "`path` is refused (400 naming `path`): checkpoints are uploaded, never recorded by path."
)


def checkpoint_post(request: Request, run: Run) -> Response:
    if run.kind != Run.EXTERNAL:
        # a worker run's checkpoints are the ones its worker wrote (and resumes from); 409 as the
        # other write endpoints answer for worker runs
        message = "this run is trained by an orlab worker, which records its own checkpoints"
        return Response({"detail": message, "errors": {"run": [message]}}, status=status.HTTP_409_CONFLICT)
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    if content_type not in ARCHIVE_TYPES:
        return _refuse_non_archive(request, content_type)
    ser = s.CheckpointInSerializer(data=_query_fields(request))
    ser.is_valid(raise_exception=True)
    step, metrics = ser.validated_data["step"], ser.validated_data["metrics"]
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0) or None
    except ValueError:
        length = None
    try:
        # request.stream: the raw body, read in chunks (request.data / .body would buffer it)
        stored = store_checkpoint_upload(run.id, step, request.stream or _Empty(), length)
    except UploadRefused as exc:
        return Response(
            {"detail": exc.message, "errors": {exc.field: [exc.message]}},
            status=exc.status,
        )
    checkpoint = services.checkpoint_record(run.id, run.attempt, step, str(stored.directory), metrics)
    # retention measures only worker-written folders; an upload's size is known from its archive
    Checkpoint.objects.filter(pk=checkpoint.pk).update(size_bytes=stored.size_bytes)
    checkpoint.size_bytes = stored.size_bytes
    return Response(s.CheckpointSerializer(checkpoint).data, status=status.HTTP_201_CREATED)


def _query_fields(request: Request) -> dict:
    data: dict = {}
    if "step" in request.query_params:
        data["step"] = request.query_params["step"]
    raw = request.query_params.get("metrics")
    if raw:
        try:
            data["metrics"] = safe_loads(raw)  # the API's JSON limits (depth, NUL, 2^53), not json.loads
        except ValueError:
            data["metrics"] = raw  # the serializer names the field
    return data


def _refuse_non_archive(request: Request, content_type: str) -> Response:
    if content_type in ("application/json", ""):
        data = request.data if content_type else {}
        if isinstance(data, dict) and "path" in data:
            return bad_request(
                "invalid input",
                {
                    "path": [
                        "checkpoints are not recorded by path: upload the directory as a tar archive "
                        "(Content-Type: application/x-tar, ?step=N)"
                    ]
                },
            )
    return bad_request(
        "invalid input",
        {"Content-Type": [f"send the checkpoint directory as a tar archive ({', '.join(ARCHIVE_TYPES)})"]},
    )


class _Empty:
    def read(self, size: int = -1) -> bytes:
        return b""
