"""The run page's checkpoint x benchmark table (issue 15 points 4, 6): evaluate a checkpoint on a
benchmark, edit the run's eval policy, the table alone (the page's script refreshes it while an
evaluation is queued or running) and one evaluation's page (what a table cell links to). Members of the
run's project only (selectors.run_get: a 404 for anyone else); the forms carry Django's CSRF token."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.datasets.models import Dataset
from webapp.runs import eval_policy, selectors, services
from webapp.runs.checkpoint_evals import table_metrics
from webapp.runs.models import Checkpoint, Evaluation
from webapp.ui.templatetags.eval_tags import eval_policy_panel

SECTION = "#checkpoint-evals"


def _errors_text(errors: dict[str, list[str]]) -> str:
    return "; ".join(f"{field}: {', '.join(msgs)}" for field, msgs in errors.items())


@require_POST
def checkpoint_evaluate(request: HttpRequest, pk: int, checkpoint_pk: int) -> HttpResponse:
    """Queue an evaluation of one checkpoint of this run on a problems dataset of its project, with the
    run's eval policy's settings when it has one (else the run's own)."""
    run = selectors.run_get(user=request.user, pk=pk)
    checkpoint = get_object_or_404(Checkpoint.objects.select_related("run"), pk=checkpoint_pk, run=run)
    back = redirect(reverse("run", args=[run.pk]) + SECTION)
    raw = request.POST.get("benchmark", "").strip()
    benchmark = (
        Dataset.objects.filter(project_id=run.project_id, pk=int(raw)).first()
        if raw.isdigit() and len(raw) < 19
        else None
    )
    if benchmark is None:
        messages.error(
            request, "Could not evaluate: benchmark: choose one of this project's problems datasets."
        )
        return back
    policy = eval_policy.policy_of(run)
    given = eval_policy.policy_protocol(policy) if policy is not None else {}
    ks = list(policy.ks or []) if policy is not None else []
    try:
        ev = services.evaluation_request(checkpoint=checkpoint, benchmark=benchmark, ks=ks or None, **given)
    except services.RunError as exc:
        messages.error(request, f"Could not evaluate: {_errors_text(exc.field_errors) or exc.message}")
        return back
    messages.success(
        request,
        f"Evaluating the step-{checkpoint.step} checkpoint on {ev.benchmark_name} (evaluation {ev.id}).",
    )
    return back


def _policy_form(request: HttpRequest) -> tuple[dict, dict[str, list[str]]]:
    """The editor's fields as the API's object; text that is not a number is an error naming its field
    (empty fields: the run's own settings)."""
    post = request.POST
    data: dict = {"enabled": post.get("enabled") == "on", "benchmarks": []}
    errors: dict[str, list[str]] = {}
    for raw in post.getlist("benchmarks"):
        if raw.isdigit() and len(raw) < 19:
            data["benchmarks"].append(int(raw))
    for name, kind in (
        ("every", int),
        ("n", int),
        ("temperature", float),
        ("top_p", float),
        ("max_new_tokens", int),
    ):
        raw = post.get(name, "").strip()
        if not raw:
            continue
        try:
            data[name] = kind(raw)
        except ValueError:
            errors[name] = ["must be a number" if kind is float else "must be an integer"]
    raw_ks = post.get("ks", "").replace(" ", "")
    if raw_ks:
        try:
            data["ks"] = [int(k) for k in raw_ks.split(",") if k]
        except ValueError:
            errors["ks"] = ["comma-separated integers, e.g. 1,4,8"]
    return data, errors


@require_POST
def policy_edit(request: HttpRequest, pk: int) -> HttpResponse:
    run = selectors.run_get(user=request.user, pk=pk)
    back = redirect(reverse("run", args=[run.pk]) + SECTION)
    data, errors = _policy_form(request)
    if not errors:
        try:
            eval_policy.policy_set(run, data)
        except eval_policy.PolicyError as exc:
            errors = exc.field_errors
    if errors:
        messages.error(request, f"Eval policy not saved: {_errors_text(errors)}")
    else:
        messages.success(request, "Eval policy saved: it applies to the checkpoints saved from now on.")
    return back


@require_GET
def checkpoint_evals_table(request: HttpRequest, pk: int) -> HttpResponse:
    """The table alone (the section's script swaps it in while an evaluation is queued or running)."""
    run = selectors.run_get(user=request.user, pk=pk)
    checkpoints = list(Checkpoint.objects.filter(run=run).order_by("step"))
    evaluate = eval_policy_panel(run)["evaluate_choices"]
    context = {"run": run, "checkpoints": checkpoints, "evaluate": evaluate}
    return render(request, "ui/_checkpoint_eval_table.html", context)


@require_GET
def evaluation_detail(request: HttpRequest, pk: int, evaluation_pk: int) -> HttpResponse:
    """One evaluation: its checkpoint, benchmark, status, every metric with its interval, the protocol."""
    run = selectors.run_get(user=request.user, pk=pk)
    ev = get_object_or_404(
        Evaluation.objects.select_related("checkpoint", "benchmark"), pk=evaluation_pk, run=run
    )
    metrics = ev.metrics or {}
    shown = table_metrics(metrics)
    rows = [(name, metrics[name], metrics.get(f"{name}_ci")) for name in shown]
    others = [
        (name, value) for name, value in metrics.items() if name not in shown and not name.endswith("_ci")
    ]
    return render(
        request,
        "ui/evaluation.html",
        {"run": run, "project": run.project, "evaluation": ev, "rows": rows, "others": others,
         "protocol": sorted((ev.protocol or {}).items())},
    )  # fmt: skip
