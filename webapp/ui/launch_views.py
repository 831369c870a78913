"""The launch form: a trainer kind's config (presets, JSON, the fleet panel), launched through the services."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.db.models import Exists, Max, OuterRef, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from pydantic import ValidationError

from trainers.base import all_specs
from webapp.errors import ServiceError
from webapp.runs import capabilities, selectors, services
from webapp.runs.models import Checkpoint, Run
from webapp.ui.fleet_panel import fleet_context
from webapp.ui.forms import CONFIG, LaunchForm, preset_fill
from webapp.ui.helpers import _project, _query, _spec

# --- launch ---------------------------------------------------------------------------------------


def _initial_config(spec, preset: str | None) -> dict:
    """A preset, validated so every default shows; or the trainer's defaults."""
    raw = spec.presets.get(preset) if preset else None
    try:
        return spec.validate(raw or {}).model_dump(mode="json")
    except ValidationError:  # a config with required fields has no complete default
        return dict(raw or {})


@require_http_methods(["GET", "POST"])
def launch(request: HttpRequest, pk: int) -> HttpResponse:
    project = _project(request, pk)
    specs = all_specs()
    if not specs:
        raise Http404("no trainer is registered")
    source = request.POST if request.method == "POST" else request.GET
    clone_of = selectors.run_get(user=request.user, pk=source["clone"]) if source.get("clone") else None
    kind = source.get("kind") or (clone_of.kind if clone_of else specs[0].kind)
    spec = _spec(kind)
    if spec is None:
        raise Http404(f"unknown trainer kind {kind!r}")
    schema = spec.json_schema()
    preset = ""

    pickers = launch_pickers(spec, schema, project)
    if request.method == "POST":
        form = LaunchForm(schema, data=request.POST, pickers=pickers)
        preset = request.POST.get("preset", "")
        if form.is_valid():
            try:
                return _launch(request, project, spec, form, clone_of)
            except ServiceError as exc:
                form.add_errors(exc.field_errors, exc.message)
        else:  # also show what the trainer thinks of the rest
            try:
                services.config_validate(spec.kind, form.config)
            except ServiceError as exc:
                form.add_errors(exc.field_errors)
    elif clone_of is not None:
        form = LaunchForm(
            schema,
            initial=clone_of.config,
            pickers=pickers,
            meta={
                "name": f"{clone_of.name} (clone)",
                "group": clone_of.group,
                "tags": ", ".join(clone_of.tags),
                "queue": clone_of.queue,
                **_json_box(clone_of.config),
            },
        )
    else:
        # No ?preset: start from the trainer's first preset; ?preset= (empty) gives the bare defaults.
        preset = request.GET.get("preset", next(iter(spec.presets), ""))
        named_sweep = spec.sweep_presets.get(request.GET.get("sweep", ""))
        if named_sweep is not None:  # ?sweep=<name>: its base preset, and its grid in the sweep rows
            preset = named_sweep.get("preset", "")
        if preset and preset not in spec.presets:
            messages.warning(request, f"Unknown preset {preset!r}; showing the defaults.")
            preset = ""
        initial = _initial_config(spec, preset)
        form = LaunchForm(schema, initial=initial, pickers=pickers, meta=_json_box(initial))
        if named_sweep is not None:
            for row, (path, values) in zip(form.sweep, named_sweep["grid"].items(), strict=False):
                row.path, row.values = path, ", ".join(str(v) for v in values)

    presets = {
        name: {**preset_fill(form.nodes, _initial_config(spec, name)), "hardware": _hardware(spec, name)}
        for name in spec.presets
    }
    fleet, fleet_data = fleet_context(form, default_queue=spec.queue)
    context = {
        "fleet": fleet,
        "fleet_data": fleet_data,
        "run_queues": settings.ORLAB_RUN_QUEUES,
        "project": project,
        "spec": spec,
        "specs": specs,
        "form": form,
        "preset": preset,
        "presets": presets,
        "preset_hardware": _hardware(spec, preset),
        "clone_of": clone_of,
        "sweep_choices": form.sweep_choices(),
        "sweep_presets": list(spec.sweep_presets),
        "schema_description": schema.get("description", ""),
        "launch_configs": {
            # the "changed from the preset" view compares the edited config with one of these
            "base": "clone" if clone_of is not None else preset,
            "configs": {
                **{name: _initial_config(spec, name) for name in spec.presets},
                "": _initial_config(spec, None),
                **({"clone": clone_of.config} if clone_of is not None else {}),
            },
            "pickers": {
                CONFIG + path: [[label, value] for label, value in choices]
                for path, choices in pickers.items()
            },
        },
    }
    return render(request, "ui/launch.html", context)


def _json_box(config: dict) -> dict:
    """The JSON box pre-filled with ``config`` (what would run), and the same text as its base: the
    box counts as edited only when it differs from that (webapp.ui.forms.LaunchForm)."""
    text = json.dumps(config, indent=2)
    return {"config_json": text, "config_json_base": text}


def launch_pickers(spec, schema: dict, project) -> dict[str, list[tuple[str, Any]]]:
    """The choices of the launch form's pickers: each dataset field (TrainerSpec.dataset_fields) lists
    the project's ready datasets of the field's kind (its schema's ``x-orlab-dataset``), newest
    version first, and ``init_from_run`` the project's policy runs that have a checkpoint, newest
    first: what services._check_dataset_refs accepts. Labels are unique (they carry the id)."""
    from webapp.datasets.models import Dataset

    props = schema.get("properties", {})
    pickers: dict[str, list[tuple[str, Any]]] = {}
    for name in spec.dataset_fields:
        if name not in props:
            continue
        datasets = Dataset.objects.filter(project=project, status=Dataset.Status.READY)
        if wanted := props[name].get("x-orlab-dataset"):
            datasets = datasets.filter(kind=wanted)
        none = [("(none)", None)] if _nullable(props[name]) else []  # a required field has no "none"
        pickers[name] = none + [
            (f"{d.name} v{d.version} · {d.kind} · {d.row_count:,} rows · #{d.id}", d.id)
            for d in datasets.order_by("name", "-version", "-id")[:500]
        ]
    if "init_from_run" in props:
        kinds = capabilities.kinds_that(capabilities.policy_checkpoints)
        live = Checkpoint.objects.filter(run=OuterRef("pk"), deleted_at__isnull=True)
        runs = (
            Run.objects.filter(project=project, kind__in=kinds)
            .annotate(
                has_ckpt=Exists(live),
                last_ckpt=Max("checkpoints__step", filter=Q(checkpoints__deleted_at__isnull=True)),
            )
            .filter(has_ckpt=True)
            .order_by("-created_at", "-id")[:500]
        )
        pickers["init_from_run"] = [("(none: the model above)", None)] + [
            (f"{r.name} · {r.kind} · {r.status} · checkpoint at step {r.last_ckpt} · #{r.id}", r.id)
            for r in runs
        ]
    return pickers


def _nullable(prop: dict) -> bool:
    return any(a.get("type") == "null" for a in prop.get("anyOf", ())) or prop.get("type") == "null"


def _hardware(spec, preset: str) -> str:
    """What a preset says it needs (TrainerSpec.preset_hardware), shown under the preset picker."""
    return (spec.preset_hardware.get(preset) or {}).get("summary", "") if preset else ""


def _launch(request: HttpRequest, project, spec, form: LaunchForm, clone_of: Run | None) -> HttpResponse:
    common = {
        "user": request.user,
        "project": project,
        "name": form.meta["name"],
        "kind": spec.kind,
        "config": form.config,
        "group": form.meta["group"],
        "tags": form.tags,
    }
    if form.grid:
        runs = services.sweep_create(grid=form.grid, queue=form.meta["queue"] or None, **common)
        messages.success(request, f"Launched a sweep of {len(runs)} runs in group {runs[0].group}.")
        return redirect(reverse("project", args=[project.pk]) + _query({"group": runs[0].group}))
    run = services.run_create(queue=form.meta["queue"] or None, parent=clone_of, **common)
    messages.success(request, f"Launched run {run.name}.")
    return redirect("run", pk=run.pk)
