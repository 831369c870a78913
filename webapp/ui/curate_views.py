"""The curation form of a preference dataset: the steps' documentation, a recipe, the run."""

from __future__ import annotations

import json
import re

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_http_methods

from webapp.datasets.curation.example_ids import example_ids
from webapp.datasets.models import Dataset
from webapp.selectors.pairs import reward_models
from webapp.ui.helpers import _dataset, _datasets

# --- curation ----------------------------------------------------------------------------------------


def _recipes_module():
    try:
        from webapp.datasets.curation import recipes
    except ImportError:  # pragma: no cover (the curation package arrives separately)
        return None
    return recipes


def _curation_service():
    try:
        from webapp.datasets.curation import service
    except ImportError:  # pragma: no cover
        return None
    return service


_RST_CODE = re.compile(r"``(.+?)``")


def _doc_html(text: str) -> SafeString:
    return mark_safe(_RST_CODE.sub(r"<code>\1</code>", escape(text)))  # noqa: S308 (escaped first)


def _step_docs(catalogue: list[dict]) -> list[dict]:
    """The step catalogue for the page: descriptions with their ``code`` and each param's default."""
    out = []
    for item in catalogue:
        schema = item.get("schema") or {}
        required = set(schema.get("required") or [])
        params = [
            {
                "name": name,
                "default": json.dumps(prop["default"]) if "default" in prop else "",
                "required": name in required,
                "description": prop.get("description", ""),
            }
            for name, prop in (schema.get("properties") or {}).items()
            if name != "step"
        ]
        out.append(
            {
                "step": item.get("step", ""),
                "title": _doc_html(item.get("title", "")),
                "description": _doc_html(item.get("description", "")),
                "params": params,
                # what "Add to recipe" appends: the defaults, and null for what must be given
                "template": {
                    "step": item.get("step", ""),
                    **{
                        p["name"]: json.loads(p["default"]) if p["default"] else None
                        for p in params
                        if p["required"] or p["default"] not in ("", "null")
                    },
                },
            }
        )
    return out


@require_http_methods(["GET", "POST"])
def curate(request: HttpRequest, pk: int) -> HttpResponse:
    dataset = _dataset(request, pk, kind=Dataset.Kind.PREFERENCE)
    recipes = _recipes_module()
    # the project's own benchmark and reward checkpoint, or the step left out (never placeholders here)
    examples = recipes.example_recipes(**example_ids(request.user, dataset)) if recipes else []
    catalogue = _step_docs(recipes.step_catalogue()) if recipes else []
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        text = request.POST.get("recipe", "")
        try:
            data = json.loads(text)
        except ValueError as exc:
            errors = {"recipe": [f"not valid JSON: {exc}"]}
        else:
            new, errors = _run_curation(request, dataset, data)
            if new is not None:
                messages.success(request, f"Curating {dataset} into {new}.")
                return redirect("dataset", pk=new.pk)
    else:
        chosen = request.GET.get("example") or (examples[0]["name"] if examples else "")
        example = next((e for e in examples if e["name"] == chosen), None)
        text = json.dumps(example["recipe"], indent=2) if example else ""
    context = {
        "dataset": dataset,
        "project": dataset.project,
        "examples": examples,
        "catalogue": catalogue,
        "recipe_text": text,
        "errors": [
            f"{k}: {m}" if k not in ("recipe", "__all__") else m for k, msgs in errors.items() for m in msgs
        ],
        "reward_models": reward_models(request.user, dataset),
        "benchmarks": list(
            _datasets(request.user)
            .filter(status=Dataset.Status.READY)
            .exclude(pk=dataset.pk)
            .select_related("project")
            .order_by("project__name", "name", "-version")[:200]
        ),
        "page_data": {
            "examples": examples,
            "templates": {s["step"]: s["template"] for s in catalogue},
            "steps_api": _reverse_or("api-curation-steps", "/api/curation/steps/") + f"?dataset={dataset.pk}",
        },
    }
    return render(request, "ui/curation.html", context, status=400 if errors else 200)


def _reverse_or(name: str, default: str) -> str:
    try:
        return reverse(name)
    except NoReverseMatch:
        return default


def _run_curation(request: HttpRequest, dataset: Dataset, data) -> tuple[Dataset | None, dict]:
    service = _curation_service()
    if service is None:
        return None, {"recipe": ["curation is not available on this server"]}
    if not isinstance(data, dict):
        return None, {"recipe": ["must be a JSON object"]}
    try:
        new = service.dataset_curate(user=request.user, dataset=dataset, recipe=data)
    except service.CurationError as exc:
        return None, dict(exc.field_errors) or {"recipe": [exc.message]}
    return new, {}
