"""The queue page (issue 16 point 5): ``/queues/`` (every project of the user named) and
``/projects/<id>/queues/`` (that project's runs named, the others counted). The body is one partial;
u3-queues.js re-reads it with ``?fragment=1`` every few seconds, so the live view and the first view
are drawn by the same template."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from webapp.projects.selectors import project_list
from webapp.runs.queue import queues_overview


def _render(request: HttpRequest, project=None) -> HttpResponse:
    context = {
        "queues": queues_overview(request.user, project.pk if project else None),
        "project": project,
    }
    if request.GET.get("fragment") == "1":
        return render(request, "ui/_u3_queues_body.html", context)
    return render(request, "ui/u3_queues.html", context)


@require_GET
def queues(request: HttpRequest) -> HttpResponse:
    return _render(request)


@require_GET
def project_queues(request: HttpRequest, pk: int) -> HttpResponse:
    project = project_list(user=request.user).filter(pk=pk).first()
    if project is None:
        raise Http404("no such project")
    return _render(request, project)
