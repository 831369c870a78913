"""The project notifications page (issue 15 point 3): channels and their deliveries. The page is a
shell; notify.js reads and writes everything through the API (webapp/api/notify_views.py), so the
page and a script see and may do the same things (owners manage, members look)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from webapp.notify.models import RUN_END_STATUSES, Channel
from webapp.notify.services import DEFAULT_RUN_STATUSES, is_owner
from webapp.projects.models import Project
from webapp.projects.selectors import project_list


def _rules(project: Project) -> list[dict]:
    """The project's health rules a channel can choose (webapp.alerts)."""
    from webapp.alerts.models import Rule

    return list(Rule.objects.filter(project=project).order_by("name", "id").values("id", "name", "kind"))


def notify_page(request: HttpRequest, pk: int) -> HttpResponse:
    try:
        project = project_list(user=request.user).get(pk=pk)
    except Project.DoesNotExist:
        raise Http404("no such project") from None
    return render(
        request,
        "ui/notify.html",
        {
            "project": project,
            "is_owner": is_owner(request.user, project),
            "page_data": {
                "project": project.pk,
                "owner": is_owner(request.user, project),
                "rules": _rules(project),
                "run_statuses": list(RUN_END_STATUSES),
                "default_run_statuses": DEFAULT_RUN_STATUSES,
                "rule_modes": list(Channel.Rules.values),
            },
        },
    )
