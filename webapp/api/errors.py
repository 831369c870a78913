"""One error shape for the whole API: ``{"detail": "...", "errors": {"field.path": ["message"]}}``."""

from rest_framework import status
from rest_framework.exceptions import APIException, UnsupportedMediaType, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from webapp.errors import ServiceError


def _flatten(data, prefix="") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            name = key if key != "non_field_errors" else "__all__"
            out.update(_flatten(value, f"{prefix}.{name}" if prefix else str(name)))
    elif isinstance(data, list) and data and all(not isinstance(v, dict | list) for v in data):
        out[prefix or "__all__"] = [str(v) for v in data]
    elif isinstance(data, list):
        for i, value in enumerate(data):
            if value:
                out.update(_flatten(value, f"{prefix}[{i}]"))
    else:
        out[prefix or "__all__"] = [str(data)]
    return out


def bad_request(detail: str, errors: dict[str, list[str]]) -> Response:
    return Response({"detail": detail, "errors": errors}, status=status.HTTP_400_BAD_REQUEST)


class WorkerRunConflict(APIException):
    """A client wrote results (metrics, samples, evaluations, checkpoints) into a run an orlab worker
    trains. 409, not 400: the request is well formed; the run's kind is what refuses it."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = (
        "this run is trained by an orlab worker, which records its own metrics, samples, evaluations and "
        "checkpoints; only external runs (kind 'external') accept them through the API"
    )
    default_code = "worker_run"


def exception_handler(exc, context):
    if isinstance(exc, ServiceError):  # every service's error (webapp.errors): 400 unless it says otherwise
        return Response({"detail": exc.message, "errors": exc.field_errors}, status=exc.status)
    if isinstance(exc, UnsupportedMediaType):
        # a body the API cannot parse is bad input like any other: 400 naming the header
        return bad_request("unsupported content type", {"content_type": [str(exc.detail)]})
    if isinstance(exc, WorkerRunConflict):
        return Response(
            {"detail": str(exc.detail), "errors": {"run": [str(exc.detail)]}}, status=exc.status_code
        )
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, ValidationError):
        response.data = {"detail": "invalid input", "errors": _flatten(response.data)}
    return response


def not_found(request, exception=None):
    """Django's 404 for a URL no pattern matches (``/api/runs/-1/``): the API's JSON shape under
    /api/, as its documented 404 says, and Django's own page elsewhere."""
    from django.http import JsonResponse
    from django.views.defaults import page_not_found

    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "not found", "errors": {}}, status=404)
    return page_not_found(request, exception)
