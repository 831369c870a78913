"""The dataset pages: a project's datasets (list and upload) and one dataset version (facts, import
progress, curation summary, problems). The pair browser and one pair: pair_views; the curation form:
curate_views; their text rendering: text_render.

Like the other pages: read through selectors scoped to the user's projects (anything else is a 404),
write through the services, and leave the live parts (import progress, charts) to the page's JS."""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path

from django import forms
from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count
from django.db.models.functions import Substr
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from webapp.datasets import services as dataset_services
from webapp.datasets.models import Dataset, PreferencePair, Problem
from webapp.ui.helpers import EXCERPT_CHARS, _dataset, _project

PROBLEM_PAGE_SIZE = 50


# --- datasets list and upload -------------------------------------------------------------------------


class DatasetUploadForm(forms.Form):
    file = forms.FileField(help_text="JSONL, JSON (one array), CSV or Parquet")
    name = forms.CharField(max_length=200, required=False, help_text="defaults to the file's name")
    kind = forms.ChoiceField(choices=Dataset.Kind.choices, initial=Dataset.Kind.PREFERENCE)

    def clean(self):
        data = super().clean()
        if not data.get("name") and data.get("file"):
            data["name"] = Path(data["file"].name).stem[:200] or "dataset"
        return data


def _import_error_lines(errors: dict[str, list[str]]) -> list[str]:
    return [f"{key}: {msg}" for key, msgs in errors.items() for msg in msgs]


@require_http_methods(["GET", "POST"])
def dataset_list(request: HttpRequest, pk: int) -> HttpResponse:
    project = _project(request, pk)
    import_detail, import_errors = "", []
    if request.method == "POST":
        form = DatasetUploadForm(request.POST, request.FILES)
        if form.is_valid():
            data = form.cleaned_data
            try:
                dataset, background = dataset_services.dataset_upload(
                    user=request.user,
                    project=project,
                    name=data["name"],
                    kind=data["kind"],
                    upload=data["file"],
                )
            except dataset_services.ImportRejected as exc:
                import_detail, import_errors = exc.detail, _import_error_lines(exc.errors)
            else:
                if background:
                    messages.info(request, f"Importing {dataset} in the background.")
                else:
                    messages.success(request, f"Imported {dataset}: {dataset.row_count} rows.")
                return redirect("dataset", pk=dataset.pk)
    else:
        form = DatasetUploadForm()

    datasets = list(
        Dataset.objects.filter(project=project)
        .select_related("parent", "created_by")
        .order_by("name", "-version")
    )
    groups = [
        {"name": name, "versions": list(versions)} for name, versions in groupby(datasets, lambda d: d.name)
    ]
    # newest activity first
    groups.sort(key=lambda g: max(d.created_at for d in g["versions"]), reverse=True)
    page_data = {
        "importing": [d.id for d in datasets if d.status == Dataset.Status.IMPORTING],
        "dataset_api": reverse("api-dataset", args=[0]),
    }
    context = {
        "project": project,
        "groups": groups,
        "count": len(datasets),
        "form": form,
        "names": sorted({d.name for d in datasets}),
        "import_detail": import_detail,
        "import_errors": import_errors,
        "page_data": page_data,
    }
    return render(request, "ui/datasets.html", context)


# --- one dataset ---------------------------------------------------------------------------------------


def curation_summary(meta: dict) -> tuple[list[dict], dict]:
    """(steps, totals) of meta.curation_stats: ``{"rows", "in", "kept", "dropped", "kept_by_source",
    "seconds", "steps": [{"step", "params", "in", "dropped", "by_source": {src: {"in", "dropped"}}}]}``
    (a bare list of steps is read too)."""
    raw = (meta or {}).get("curation_stats") or {}
    totals = raw if isinstance(raw, dict) else {}
    items = raw.get("steps", []) if isinstance(raw, dict) else raw
    steps = []
    for i, item in enumerate(items if isinstance(items, list) else []):
        if not isinstance(item, dict):
            continue
        by_source = item.get("by_source") if isinstance(item.get("by_source"), dict) else {}
        params = item.get("params") or {}
        n_in, dropped = _int(item.get("in")), _int(item.get("dropped"))
        steps.append(
            {
                "index": i + 1,
                "step": str(item.get("step", f"step {i + 1}")),
                "params_json": json.dumps(params, sort_keys=True) if params else "",
                "in": n_in,
                "dropped": dropped,
                "out": n_in - dropped,
                "pct": (100.0 * dropped / n_in) if n_in else 0.0,
                "seconds": item.get("seconds"),
                "by_source": {
                    str(src): {"in": _int(v.get("in")), "dropped": _int(v.get("dropped"))}
                    for src, v in by_source.items()
                    if isinstance(v, dict)
                },
            }
        )
    kept_by_source = totals.get("kept_by_source") if isinstance(totals.get("kept_by_source"), dict) else {}
    summary = {
        key: totals[key]
        for key in ("rows", "in", "kept", "dropped", "seconds")
        if totals.get(key) is not None
    }
    summary["kept_by_source"] = sorted(kept_by_source.items())
    return steps, summary


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _curation_chart(steps: list[dict]) -> dict:
    sources = sorted({src for s in steps for src in s["by_source"]})
    return {
        "steps": [f"{s['index']}. {s['step']}" for s in steps],
        "sources": [
            {
                "name": src or "(no source)",
                "dropped": [s["by_source"].get(src, {}).get("dropped", 0) for s in steps],
                "in": [s["by_source"].get(src, {}).get("in", 0) for s in steps],
            }
            for src in sources
        ],
        # steps without a per-source breakdown still show their total
        "totals": [s["dropped"] for s in steps],
    }


def _row_errors(meta: dict) -> list[dict]:
    out = []
    for item in (meta or {}).get("row_errors") or []:
        if not isinstance(item, dict):
            continue
        unit = "line" if "line" in item else "row"
        out.append({"unit": unit, "n": item.get(unit), "error": item.get("error", "")})
    return out


def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _dataset(request, pk)
    meta = dataset.meta or {}
    steps, curation_totals = curation_summary(meta)
    versions = list(
        Dataset.objects.filter(project=dataset.project, name=dataset.name)
        .order_by("-version")
        .only("id", "name", "version", "status", "row_count", "created_at")
    )
    children = list(dataset.children.order_by("-created_at").only("id", "name", "version", "status"))
    ready = dataset.status == Dataset.Status.READY
    context = {
        "dataset": dataset,
        "project": dataset.project,
        "meta": meta,
        "steps": steps,
        "curation_totals": curation_totals,
        "step_sources": sorted({src for s in steps for src in s["by_source"]}),
        "recipe_json": json.dumps(meta["recipe"], indent=2) if meta.get("recipe") else "",
        "row_errors": _row_errors(meta),
        "versions": versions,
        "children": children,
        "progress_pct": round(100 * (dataset.progress or 0.0), 1),
    }
    if ready and dataset.kind == Dataset.Kind.PREFERENCE:
        pairs = PreferencePair.objects.filter(dataset=dataset).order_by()
        outcomes = list(pairs.values("kept", "drop_reason").annotate(n=Count("id")).order_by("-kept", "-n"))
        context["kept_count"] = sum(o["n"] for o in outcomes if o["kept"])
        context["dropped"] = [o for o in outcomes if not o["kept"]]
        context["dropped_count"] = sum(o["n"] for o in context["dropped"])
        context["sources"] = list(
            pairs.values("source").annotate(n=Count("id")).order_by("-n", "source")[:50]
        )
    if ready and dataset.kind == Dataset.Kind.PROBLEMS:
        problems = (
            Problem.objects.filter(dataset=dataset)
            .order_by("row")
            .only("id", "row", "domain", "answer", "tests")
            .annotate(excerpt=Substr("prompt", 1, EXCERPT_CHARS))
        )
        context["problems"] = Paginator(problems, PROBLEM_PAGE_SIZE).get_page(request.GET.get("page"))
    context["page_data"] = {
        "id": dataset.id,
        "status": dataset.status,
        "dataset_api": reverse("api-dataset", args=[dataset.pk]),
        "chart": _curation_chart(steps) if steps else None,
    }
    return render(request, "ui/datasets_detail.html", context)
