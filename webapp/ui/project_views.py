"""The projects page: your projects with their newest run, and the create form."""

from __future__ import annotations

from django.contrib import messages
from django.db import IntegrityError
from django.db.models import Count, OuterRef, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from webapp.projects import services as project_services
from webapp.projects.selectors import project_list
from webapp.runs.models import Run
from webapp.ui.forms import ProjectCreateForm

# --- projects ---------------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def project_index(request: HttpRequest) -> HttpResponse:
    form = ProjectCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            project = project_services.project_create(
                user=request.user,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
            )
        except IntegrityError:
            form.add_error("name", "a project with this name already exists")
        else:
            messages.success(request, f"Project {project.name} created.")
            return redirect("project", pk=project.pk)
    newest = Run.objects.filter(project=OuterRef("pk")).order_by("-created_at", "-id")
    projects = (
        project_list(user=request.user)
        .annotate(
            run_count=Count("runs", distinct=True),
            newest_run_id=Subquery(newest.values("id")[:1]),
            newest_run_name=Subquery(newest.values("name")[:1]),
            newest_run_status=Subquery(newest.values("status")[:1]),
            newest_run_at=Subquery(newest.values("created_at")[:1]),
        )
        .order_by("name")
    )
    return render(request, "ui/projects.html", {"projects": projects, "form": form})
