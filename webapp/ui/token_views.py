"""Settings: the user's API token."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

# --- settings: API token --------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def api_token(request: HttpRequest) -> HttpResponse:
    """The user's API token (one per user, rest_framework.authtoken): create, regenerate, revoke."""
    from rest_framework.authtoken.models import Token

    if request.method == "POST":
        action = request.POST.get("action")
        if action in ("create", "regenerate"):
            Token.objects.filter(user=request.user).delete()
            Token.objects.create(user=request.user)
            messages.success(
                request,
                "New API token created; the old one no longer works."
                if action == "regenerate"
                else "API token created.",
            )
        elif action == "revoke":
            deleted, _ = Token.objects.filter(user=request.user).delete()
            if deleted:
                messages.success(request, "API token revoked: scripts using it now get 401.")
        return redirect("api-token")
    token = Token.objects.filter(user=request.user).first()
    context = {
        "token": token,
        "api_url": request.build_absolute_uri("/api/"),
        "base_url": request.build_absolute_uri("/").rstrip("/"),
    }
    return render(request, "ui/api_token.html", context)
