"""Who calls: ``Authorization: Bearer <orlab API token>`` (MLFLOW_TRACKING_TOKEN), orlab's own
``Token <key>``, or HTTP basic auth with the orlab username and password
(MLFLOW_TRACKING_USERNAME/PASSWORD). The token and password checks are DRF's, as /api/ uses them;
no session cookie is accepted, so these endpoints need no CSRF token."""

from __future__ import annotations

from rest_framework.authentication import BasicAuthentication, TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from webapp.mlflow_api.errors import MlflowApiError


class BearerTokenAuthentication(TokenAuthentication):
    keyword = "Bearer"


_AUTHS = (BearerTokenAuthentication(), TokenAuthentication(), BasicAuthentication())


def authenticate(request):
    """The calling user, or MlflowApiError(UNAUTHENTICATED)."""
    for auth in _AUTHS:
        try:
            found = auth.authenticate(request)
        except AuthenticationFailed as exc:
            raise MlflowApiError("UNAUTHENTICATED", str(exc.detail)) from None
        if found is not None:
            return found[0]
    raise MlflowApiError(
        "UNAUTHENTICATED",
        "credentials required: set MLFLOW_TRACKING_TOKEN to an orlab API token, or "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
    )
