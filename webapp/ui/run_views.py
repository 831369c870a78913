"""One run's page (charts, panels, checkpoints) and its actions: cancel, resume, clone."""

from __future__ import annotations

import json
from datetime import timedelta

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webapp.alerts.markers import run_event_markers
from webapp.errors import ServiceError
from webapp.fleet.selectors import launch_check_for
from webapp.mlflow_api.views import run_artifacts
from webapp.runs import chart_prefs, selectors, services
from webapp.runs.attempts import attempts_of, run_duration_s
from webapp.runs.models import Run
from webapp.ui import run_panels
from webapp.ui.helpers import _error_text, _spec, format_duration

# --- one run --------------------------------------------------------------------------------------


def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    services.runs_mark_lost()
    run = selectors.run_get(user=request.user, pk=pk)
    spec = _spec(run.kind)
    keys = selectors.metric_keys(run)
    primary = list(spec.primary_metrics) if spec else []
    keys = [k for k in primary if k in keys] + [k for k in keys if k not in primary]
    attempts = attempts_of(run)
    duration_s = run_duration_s(run, attempts)  # over all attempts, not only the last one
    page_data = {
        "id": run.id,
        "project": run.project_id,
        "status": run.status,
        "keys": keys,
        "primary": primary,
        "log_keys": list(spec.log_scale_metrics) if spec else [],
        "run_api": reverse("api-run", args=[run.pk]),
        "metrics_api": reverse("api-run-metrics", args=[run.pk]),
        "checkpoints_api": reverse("api-run-checkpoints", args=[run.pk]),
        # the Metrics card (run.js): sections, pins, markers, exports
        "chart_prefs": chart_prefs.prefs_get(run.project, request.user),
        "chart_prefs_api": reverse("api-chart-prefs", args=[run.project_id]),
        "markers_api": reverse("api-run-chart-markers", args=[run.pk]),
        "metrics_csv": reverse("api-run-metrics-csv", args=[run.pk]),
        "run_name": run.name,
        "attempts": attempts,  # json_script encodes their datetimes
        "events": run_event_markers(run.id),
        "duration_s": duration_s,
    }
    panels, panels_data = run_panels.panels_context(request, run)
    page_data.update(panels_data)
    context = {
        **panels,
        "run": run,
        "project": run.project,
        "spec": spec,
        "keys": keys,
        "duration": format_duration(timedelta(seconds=duration_s) if duration_s is not None else None),
        "config_json": json.dumps(run.config, indent=2, sort_keys=True),
        "summary_json": json.dumps(run.summary, indent=2) if run.summary else "",
        "checkpoints": selectors.checkpoint_list(run),
        "page_data": page_data,
        "launch_check": launch_check_for(run),
        "mlflow_artifacts": run_artifacts(run.pk) if run.kind == run.EXTERNAL else [],  # webapp/mlflow_api
    }
    return render(request, "ui/run.html", context)


@require_POST
def run_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    run = selectors.run_get(user=request.user, pk=pk)
    try:
        run = services.run_request_cancel(run)
    except ServiceError as exc:
        messages.error(request, f"Could not cancel: {_error_text(exc)}")
    else:
        if run.status == Run.Status.CANCELLED:
            messages.success(request, "Run cancelled.")
        else:
            messages.info(request, "Cancellation requested; the trainer stops at its next step.")
    return redirect("run", pk=run.pk)


@require_POST
def run_resume(request: HttpRequest, pk: int) -> HttpResponse:
    run = selectors.run_get(user=request.user, pk=pk)
    try:
        run = services.run_resume(run)
    except ServiceError as exc:
        messages.error(request, f"Could not resume: {_error_text(exc)}")
    else:
        messages.success(request, f"Run queued again as attempt {run.attempt}.")
    return redirect("run", pk=run.pk)


@require_POST
def run_clone(request: HttpRequest, pk: int) -> HttpResponse:
    """Relaunch a copy as it is (the Clone link opens the launch form prefilled instead)."""
    run = selectors.run_get(user=request.user, pk=pk)
    try:
        clone = services.run_clone(run, user=request.user)
    except ServiceError as exc:
        messages.error(request, f"Could not clone: {_error_text(exc)}")
        return redirect("run", pk=run.pk)
    messages.success(request, f"Launched {clone.name}.")
    return redirect("run", pk=clone.pk)
