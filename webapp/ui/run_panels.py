"""The run page's data panels beyond the metric charts: benchmark evaluations, the samples browser,
the memory estimate against the measured peak, and (for kinds whose checkpoints score, a trainer's
"scoring" panel) scoring a preference dataset with a checkpoint. Which panels a run shows besides
evaluations and samples is its trainer's choice (TrainerSpec.panels). The views here give
the page its first state; the page's scripts then read and poll the REST API:

  run-evaluations.js  GET /api/runs/{id}/evaluations/  accuracy against step, the evaluations table
  run-samples.js      GET /api/runs/{id}/samples/      filters kept in the page URL (shareable)
  run-scoring.js      GET /api/runs/{id}/scoring/      job status and progress, link to the pairs

Scoring is a plain POST form (CSRF token, no script needed) that redirects back with a message."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from webapp.datasets import services as dataset_services
from webapp.datasets.models import Dataset, ScoringJob
from webapp.projects.selectors import project_list
from webapp.runs import capabilities, selectors
from webapp.runs.models import SAMPLE_VERDICTS, Checkpoint, Evaluation, MetricSeries, Run, Sample

SAMPLE_PAGE_SIZE = 25
MAX_JOBS_SHOWN = 100
#: the per-step metric of torch.cuda.max_memory_allocated, in GiB (only logged on CUDA)
PEAK_METRIC = "memory/peak_gb"
GIB = 2**30


def pairs_url(job: ScoringJob) -> str:
    """The pair browser of the scored dataset, sorted by this checkpoint's margin (lowest first:
    the pairs the reward model disagrees with most)."""
    return reverse("dataset-pairs", args=[job.dataset_id]) + f"?rm={job.checkpoint_id}&ordering=margin"


def _digits(value: str) -> str:
    value = value.strip()
    return value if value.isdigit() and len(value) < 19 else ""


def sample_filters(params) -> dict:
    """The samples browser's state from the page URL; a value the API would refuse is dropped here
    (a hand-edited link still opens the page)."""
    verdict = params.get("verdict", "")
    truncated = params.get("truncated", "")
    page = _digits(params.get("sample_page", ""))
    return {
        "verdict": verdict if verdict in SAMPLE_VERDICTS else "",
        "truncated": truncated if truncated in ("true", "false") else "",
        "step_min": _digits(params.get("step_min", "")),
        "step_max": _digits(params.get("step_max", "")),
        "page": int(page) if page and int(page) > 0 else 1,
    }


def memory_panel(run: Run) -> dict | None:
    """The launch-time estimate (components and phases, GiB) next to the measured peak: the largest
    ``memory/peak_gb`` any step logged. None for runs whose trainer asks for no memory panel."""
    if "memory" not in capabilities.panels(run.kind):
        return None
    estimate = run.memory_estimate or {}
    components = estimate.get("components") or {}
    peak = MetricSeries.objects.filter(run=run, key=PEAK_METRIC).values_list("max_value", flat=True).first()
    total = estimate.get("total_bytes")
    return {
        "has_estimate": bool(components),
        "components": [(name.replace("_", " "), value / GIB) for name, value in components.items() if value],
        "phases": [(name, value / GIB) for name, value in (estimate.get("phases") or {}).items()],
        "peak_phase": estimate.get("peak_phase", ""),
        "total_gib": total / GIB if total else None,
        "assumptions": [
            (
                key.replace("_", " "),
                f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value,
            )
            for key, value in (estimate.get("assumptions") or {}).items()
        ],
        "notes": estimate.get("notes") or [],
        "measured_gib": peak,
        "percent_of_estimate": round(100 * peak * GIB / total) if peak is not None and total else None,
    }


def panels_context(request: HttpRequest, run: Run) -> tuple[dict, dict]:
    """(template context, page data for the scripts) of the three panels."""
    filters = sample_filters(request.GET)
    scoring = "scoring" in capabilities.panels(run.kind)
    jobs = (
        list(
            ScoringJob.objects.filter(checkpoint__run=run)
            .select_related("dataset", "checkpoint")
            .order_by("-id")[:MAX_JOBS_SHOWN]
        )
        if scoring
        else []
    )
    for job in jobs:
        job.pairs_url = pairs_url(job)
    context = {
        "has_evaluations": Evaluation.objects.filter(run=run).exists(),
        "has_samples": Sample.objects.filter(run=run).exists(),
        "verdicts": SAMPLE_VERDICTS,
        "sample_filters": filters,
        "scoring": scoring,
        "score_datasets": list(
            Dataset.objects.filter(
                project=run.project, kind=Dataset.Kind.PREFERENCE, status=Dataset.Status.READY
            ).order_by("name", "-version")
        )
        if scoring
        else [],
        "scoring_jobs": jobs,
        "memory": memory_panel(run),
    }
    page_data = {
        "evaluations_api": reverse("api-run-evaluations", args=[run.pk]),
        "samples_api": reverse("api-run-samples", args=[run.pk]),
        # issue 14's pages: the samples browser, and a group's / a sample's tokens (0s replaced by the script)
        "samples_page": reverse("run-samples", args=[run.pk]),
        "sample_group_url": reverse("run-sample-group", args=[run.pk, 0, 0]),
        "sample_tokens_url": reverse("run-sample-tokens", args=[run.pk, 0]),
        "sample_page_size": SAMPLE_PAGE_SIZE,
        "verdicts": list(SAMPLE_VERDICTS),
        "scoring_api": reverse("api-run-scoring", args=[run.pk]) if scoring else "",
        # "/datasets/0/pairs/": the script puts each job's dataset id in place of the 0
        "pairs_url": reverse("dataset-pairs", args=[0]),
        "score_url": reverse("run-score", args=[run.pk, 0]),
    }
    return context, page_data


def _field_errors(errors: dict[str, list[str]]) -> str:
    return "; ".join(f"{field}: {', '.join(msgs)}" for field, msgs in errors.items())


@require_POST
def run_score(request: HttpRequest, pk: int, checkpoint_pk: int) -> HttpResponse:
    """Score one of the project's preference datasets with a reward-model checkpoint of this run."""
    run = selectors.run_get(user=request.user, pk=pk)
    checkpoint = get_object_or_404(Checkpoint.objects.select_related("run"), pk=checkpoint_pk, run=run)
    back = redirect(reverse("run", args=[run.pk]) + "#scoring")
    raw = request.POST.get("dataset", "").strip()
    dataset = (
        Dataset.objects.filter(project__in=project_list(user=request.user), pk=int(raw)).first()
        if raw.isdigit() and len(raw) < 19
        else None
    )
    if dataset is None:
        messages.error(request, "Could not score: dataset: choose one of this project's preference datasets.")
        return back
    if dataset.project_id != run.project_id:
        messages.error(
            request,
            f"Could not score: dataset: {dataset} belongs to another project; "
            f"score a dataset of {run.project.name}.",
        )
        return back
    try:
        job = dataset_services.scoring_job_create(user=request.user, dataset=dataset, checkpoint=checkpoint)
    except dataset_services.ImportRejected as exc:
        messages.error(request, f"Could not score: {_field_errors(exc.errors) or exc.detail}")
        return back
    messages.success(
        request,
        f"Scoring {dataset} with the step-{checkpoint.step} checkpoint (job {job.id}): progress below.",
    )
    return back
