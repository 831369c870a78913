"""The step-value browser: the solutions a DAPO run sampled, split into steps, with the Monte-Carlo
value of every prefix (the critic's training targets). A curve per solution, filters by outcome and
step count, and a chart of the mean value after step t for correct and wrong solutions."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.db.models.functions import Substr
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from webapp.datasets.models import Dataset, StepSolution
from webapp.datasets.step_values import SUMMARY_KEY, value_summary
from webapp.ui import dataset_views

PAGE_SIZE = 50
SPARK_W, SPARK_H = 120, 28


def _dataset(request: HttpRequest, pk: int) -> Dataset:
    return dataset_views._dataset(request, pk, kind=Dataset.Kind.STEP_VALUES)


def sparkline(values: list[float]) -> SafeString:
    """An inline SVG of V(s_0..s_T) on a fixed 0..1 axis, so curves can be compared down the page."""
    if not values:
        return SafeString("")
    dx = SPARK_W / max(len(values) - 1, 1)
    points = " ".join(f"{i * dx:.1f},{(1 - v) * (SPARK_H - 4) + 2:.1f}" for i, v in enumerate(values))
    colour = "var(--ok, #2a7)" if values[-1] >= 0.5 else "var(--bad, #c33)"
    return format_html(
        '<svg class="spark" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="values {}">'
        '<line x1="0" y1="{}" x2="{}" y2="{}" class="spark-mid"/>'
        '<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/></svg>',
        SPARK_W, SPARK_H, SPARK_W, SPARK_H, " ".join(f"{v:.2f}" for v in values),
        SPARK_H / 2, SPARK_W, SPARK_H / 2, colour, points,
    )  # fmt: skip


def _filters(request: HttpRequest) -> tuple[dict, dict]:
    """(queryset filters, the form state echoed back). Unknown values are ignored, not errors: these
    are links people share, and a stale one should still show the list."""
    outcome = request.GET.get("outcome", "")
    filters: dict = {}
    if outcome in ("correct", "wrong"):
        filters["correct"] = outcome == "correct"
    else:
        outcome = ""
    return filters, {"outcome": outcome}


def step_solutions(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _dataset(request, pk)
    filters, state = _filters(request)
    rows = (
        StepSolution.objects.filter(dataset=dataset, **filters)
        .order_by("row")
        .only("id", "row", "answer", "steps", "values", "correct", "verdict")
        .annotate(excerpt=Substr("prompt", 1, 160))
    )
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    for s in page:
        s.spark = sparkline(s.values)
        s.step_rows = [
            {"t": t + 1, "text": text, "before": s.values[t], "after": s.values[t + 1],
             "delta": s.values[t + 1] - s.values[t]}
            for t, text in enumerate(s.steps)
        ]  # fmt: skip
    query = "&".join(f"{k}={v}" for k, v in state.items() if v)
    return render(
        request,
        "ui/step_solutions.html",
        {
            "dataset": dataset,
            "project": dataset.project,
            "page": page,
            "state": state,
            "query": query,
            "summary": value_summary(dataset),
            "facts": {k: v for k, v in (dataset.meta or {}).items() if k not in ("source_run", SUMMARY_KEY)},
            "api_url": reverse("api-dataset", args=[dataset.pk]),
        },
    )
