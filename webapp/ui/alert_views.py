"""The project alerts page (events, acknowledge, mute; rules with create / edit / delete; presets)
and the POST targets of the run page's events card. Plain forms with CSRF, written through
webapp.alerts.services like the API; anything outside the user's projects is a 404."""

from __future__ import annotations

import json
from datetime import timedelta

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from webapp.alerts import presets, services
from webapp.alerts.models import Event, Mute, Rule
from webapp.projects.selectors import project_list
from webapp.runs.models import Run
from webapp.ui.helpers import _project

EVENTS_PAGE = 50
PARAMS_HELP = {
    "threshold": '{"op": ">", "value": 1.0}  (op: > >= < <=)',
    "change": '{"window": 10, "amount": 0.5, "relative": false, "direction": "down"}',
    "zscore": '{"z": 4, "direction": "up", "min_points": 20}',
    "nan_inf": "{}",
    "stalled": '{"seconds": 600}',
    "collapse": '{"ratio": 0.1, "window": 0.2, "floor": 0.05, "smooth": 5, "min_points": 10}',
}


class RuleForm(forms.Form):
    name = forms.CharField(max_length=200)
    kind = forms.ChoiceField(choices=Rule.Kind.choices)
    key = forms.CharField(max_length=255, required=False, help_text="metric key or @alias; empty for stalled")
    params = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, initial="{}")
    severity = forms.ChoiceField(choices=Rule.Severity.choices, initial="warning")
    run_kind = forms.CharField(max_length=64, required=False)
    run_group = forms.CharField(max_length=200, required=False)
    run_tag = forms.CharField(max_length=200, required=False)
    run = forms.IntegerField(min_value=1, required=False, help_text="only this run (id)")
    enabled = forms.BooleanField(required=False, initial=True)

    def clean_params(self):
        raw = self.cleaned_data["params"].strip() or "{}"
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"not JSON: {exc.msg}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("a JSON object")
        return value


def _next(request: HttpRequest, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


def _rule(request: HttpRequest, pk: int) -> Rule:
    return get_object_or_404(
        Rule.objects.select_related("project"), pk=pk, project__in=project_list(user=request.user)
    )


def _save_from_form(request, project, form, rule=None):
    """The form's rule through the service; its errors land on the form's fields (400 page)."""
    data = dict(form.cleaned_data)
    run_id = data.pop("run")
    data["run"] = Run.objects.filter(pk=run_id, project=project).first() if run_id else None
    if run_id and data["run"] is None:
        form.add_error("run", "no such run in this project")
        return None
    try:
        return services.rule_save(project=project, user=request.user, data=data, rule=rule)
    except services.AlertError as exc:
        for field, errors in exc.field_errors.items():
            name = field.split(".")[0]
            form.add_error(name if name in form.fields else None, f"{field}: {', '.join(errors)}")
        return None


def _page(request, project, form=None, status=200, editing=None) -> HttpResponse:
    show = request.GET.get("show", "open")
    events = Event.objects.filter(project=project).select_related("run").order_by("-created_at", "-id")
    if show == "open":
        events = events.filter(acknowledged_at__isnull=True)
    page = Paginator(events, EVENTS_PAGE).get_page(request.GET.get("page"))
    rules = list(Rule.objects.filter(project=project).select_related("run").order_by("name", "id"))
    now = timezone.now()
    mutes = {}
    for mute in Mute.objects.filter(rule__project=project).select_related("run"):
        if mute.until is None or mute.until > now:
            mutes.setdefault(mute.rule_id, []).append(mute)
    for rule in rules:
        rule.active_mutes = mutes.get(rule.id, [])
        rule.params_text = json.dumps(rule.params)
    return render(
        request,
        "ui/alerts.html",
        {
            "project": project,
            "events": page,
            "show": show,
            "rules": rules,
            "form": form or RuleForm(),
            "editing": editing,
            "presets": [(name, title) for name, (title, _) in presets.presets().items()],
            "aliases": sorted(presets.ALIASES),
            "params_help": PARAMS_HELP,
        },
        status=status,
    )


@require_http_methods(["GET", "POST"])
def alerts_page(request: HttpRequest, pk: int) -> HttpResponse:
    """GET: the page; POST: create a rule from its form."""
    project = _project(request, pk)
    if request.method == "POST":
        form = RuleForm(request.POST)
        if form.is_valid() and _save_from_form(request, project, form) is not None:
            messages.success(request, f"Rule “{form.cleaned_data['name']}” created.")
            return redirect("alerts", pk=project.pk)
        return _page(request, project, form=form, status=400)
    return _page(request, project)


@require_http_methods(["GET", "POST"])
def rule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    rule = _rule(request, pk)
    project = rule.project
    if request.method == "POST":
        form = RuleForm(request.POST)
        if form.is_valid() and _save_from_form(request, project, form, rule=rule) is not None:
            messages.success(request, f"Rule “{rule.name}” saved.")
            return redirect("alerts", pk=project.pk)
        return _page(request, project, form=form, status=400, editing=rule)
    initial = {
        "name": rule.name, "kind": rule.kind, "key": rule.key, "params": json.dumps(rule.params),
        "severity": rule.severity, "run_kind": rule.run_kind, "run_group": rule.run_group,
        "run_tag": rule.run_tag, "run": rule.run_id, "enabled": rule.enabled,
    }  # fmt: skip
    return _page(request, project, form=RuleForm(initial=initial), editing=rule)


@require_POST
def rule_delete(request: HttpRequest, pk: int) -> HttpResponse:
    rule = _rule(request, pk)
    services.rule_delete(rule)
    messages.success(request, f"Rule “{rule.name}” deleted (its events stay).")
    return redirect("alerts", pk=rule.project_id)


@require_POST
def preset_apply(request: HttpRequest, pk: int) -> HttpResponse:
    project = _project(request, pk)
    try:
        created = services.preset_apply(
            project=project, user=request.user, name=request.POST.get("preset", "")
        )
    except services.AlertError as exc:
        messages.error(request, exc.text())
    else:
        messages.success(request, f"Preset applied: {', '.join(r.name for r in created)}.")
    return redirect("alerts", pk=project.pk)


@require_POST
def event_ack(request: HttpRequest, pk: int) -> HttpResponse:
    qs = Event.objects.filter(pk=pk, project__in=project_list(user=request.user))
    event = qs.first()
    if event is None:
        raise Http404("no such event")
    services.events_acknowledge(user=request.user, events=qs)
    return redirect(_next(request, reverse("alerts", args=[event.project_id])))


@require_POST
def rule_mute(request: HttpRequest, pk: int) -> HttpResponse:
    """Mute for one run (``run``) or all runs, for ``hours`` (empty: until unmuted)."""
    rule = _rule(request, pk)
    back = _next(request, reverse("alerts", args=[rule.project_id]))
    try:
        run_id = int(request.POST["run"]) if request.POST.get("run") else None
        hours = float(request.POST["hours"]) if request.POST.get("hours") else None
    except ValueError:
        messages.error(request, "mute: run must be an id and hours a number")
        return redirect(back)
    run = Run.objects.filter(pk=run_id, project_id=rule.project_id).first() if run_id else None
    if run_id and run is None:
        raise Http404("no such run")
    until = timezone.now() + timedelta(hours=hours) if hours else None
    try:
        services.mute_create(user=request.user, rule=rule, run=run, until=until)
    except services.AlertError as exc:
        messages.error(request, exc.text())
    else:
        messages.success(request, f"Rule “{rule.name}” muted" + (f" for run {run.pk}" if run else "") + ".")
    return redirect(back)


@require_POST
def rule_unmute(request: HttpRequest, pk: int) -> HttpResponse:
    rule = _rule(request, pk)
    run = None
    if request.POST.get("run"):
        run = Run.objects.filter(pk=request.POST["run"], project_id=rule.project_id).first()
        if run is None:
            raise Http404("no such run")
    services.mute_delete(rule=rule, run=run)
    messages.success(request, f"Rule “{rule.name}” unmuted.")
    return redirect(_next(request, reverse("alerts", args=[rule.project_id])))
