"""The launch page's view of the worker fleet: a panel listing the fresh workers of each queue (or
saying that none has reported, so the run will wait in the queue), and the model picker's choices
for ``config.model_path``: "tiny" plus the catalogue of the target queue's workers.

launch-models.js switches both when the queue select changes, from the JSON this module builds."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from webapp.fleet.selectors import fleet_by_queue
from webapp.ui.forms import LaunchForm, iter_leaves

MODEL_FIELD = "model_path"
TINY = "tiny"
QUEUES = settings.ORLAB_RUN_QUEUES  # the launch form's queue choices; shown even when nothing consumes them
GiB = 2**30


def _count(n: int | None) -> str:
    if not n:
        return "size unknown"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit} parameters"
    return f"{n} parameters"


def model_label(entry: dict[str, Any]) -> str:
    """What the picker shows for a catalogue entry: name, architecture, size, chat template."""
    template = "chat template" if entry.get("chat_template") else "no chat template"
    arch = entry.get("architecture") or "unknown architecture"
    return f"{entry['name']} — {arch}, {_count(entry.get('parameters'))}, {template}"


def _worker_row(report) -> dict[str, Any]:
    gpus = [
        f"{g.get('name') or 'GPU'} {g.get('free_bytes', 0) / GiB:.0f}/{g.get('total_bytes', 0) / GiB:.0f} GiB free"
        for g in report.gpus
    ]
    return {
        "name": report.name,
        "slots": report.slots,
        "gpus": gpus,
        "vllm": (report.vllm_version or "yes") if report.has_vllm else "no",
        "deepspeed": (report.deepspeed_version or "yes") if report.has_deepspeed else "no",
        "models": len(report.catalogue),
        "reported_at": report.reported_at,
        "notes": report.notes,
    }


def fleet_context(form: LaunchForm, *, default_queue: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(the panel's queues, the page data of launch-models.js). Turns the form's ``model_path`` field
    into a picker when the trainer has one."""
    # housekeeping's and the evaluations' queues take no runs: not offered, not listed
    not_for_runs = set(settings.ORLAB_QUEUES) - set(QUEUES)
    fleet = [q for q in fleet_by_queue(QUEUES) if q["queue"] not in not_for_runs]
    target = form.meta.get("queue") or default_queue
    panel = [
        {
            "queue": q["queue"],
            "target": q["queue"] == target,
            "workers": [_worker_row(r) for r in q["workers"]],
        }
        for q in fleet
    ]
    options = {
        q["queue"]: [[TINY, f"{TINY} — the built-in tiny model, built by the trainer"]]
        + [[m["name"], model_label(m)] for m in q["models"]]
        for q in fleet
        if q["workers"]
    }
    leaf = next((x for x in iter_leaves(form.nodes) if x.path == MODEL_FIELD and x.widget == "text"), None)
    data: dict[str, Any] = {"default_queue": default_queue, "field": None, "options": options}
    if leaf is not None:
        leaf.widget = "model"
        leaf.options = [list(o) for o in options.get(target, [])]
        if leaf.options and leaf.value and leaf.value not in {v for v, _ in leaf.options}:
            leaf.options.append([leaf.value, f"{leaf.value} (not reported by the workers of queue {target})"])
        data["field"] = leaf.input_name
    return panel, data
