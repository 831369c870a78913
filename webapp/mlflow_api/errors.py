"""MLflow's error format: ``{"error_code": "...", "message": "..."}`` with MLflow's HTTP statuses."""

from __future__ import annotations

import orjson
from django.http import HttpResponse

STATUS = {
    "INVALID_PARAMETER_VALUE": 400,
    "BAD_REQUEST": 400,
    "INVALID_STATE": 400,
    "RESOURCE_ALREADY_EXISTS": 400,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "INTERNAL_ERROR": 500,
    "TEMPORARILY_UNAVAILABLE": 503,
}


class MlflowApiError(Exception):
    def __init__(self, error_code: str, message: str):
        super().__init__(message)
        self.error_code = error_code
        self.message = message

    def response(self) -> HttpResponse:
        return error_response(self.error_code, self.message)


def error_response(error_code: str, message: str) -> HttpResponse:
    response = HttpResponse(
        orjson.dumps({"error_code": error_code, "message": message}),
        status=STATUS.get(error_code, 400),
        content_type="application/json",
    )
    if error_code == "UNAUTHENTICATED":
        response["WWW-Authenticate"] = 'Bearer realm="orlab", Basic realm="orlab"'
    return response


def invalid(message: str) -> MlflowApiError:
    return MlflowApiError("INVALID_PARAMETER_VALUE", message)


def missing(what: str) -> MlflowApiError:
    return MlflowApiError("RESOURCE_DOES_NOT_EXIST", what)
