"""Launch-time checks of a run's config against the workers that will run it (issue 10, "Bad input").

The web host never sees the model files: it checks a validated config against the fresh reports of
the workers consuming the run's queue (webapp/fleet, written by workers/registry.py). Each refusal
names the config field, as pydantic's errors do (``config.model_path``, ``config.chat_template``,
``config.nproc_per_node``, ``config.nodes``, ``config.rollout.engine``, ``config`` for the memory
estimate), and run_create turns them into a 400 before anything is written or queued.

When no worker of the queue has reported, the run is accepted unchecked (it waits in the queue for a
worker) except for what needs no worker: a model named by a path is always refused. The verdict's
empty ``workers`` list is recorded on the run (webapp.fleet LaunchCheck) and its page says so.
"""

from __future__ import annotations

import logging
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from trainers.base import get_spec
from trainers.common.model_roots import model_name_problem
from webapp.fleet.models import WorkerReport
from webapp.fleet.selectors import fresh_reports, queue_models
from webapp.runs.model_refs import checkpoint_ref_id, is_checkpoint_ref
from webapp.runs.models import Checkpoint, Run

log = logging.getLogger(__name__)

TINY = "tiny"
#: Config fields that only mean something to vLLM, whatever section they sit in. A config field can
#: also declare itself with ``json_schema_extra={"x-orlab-vllm-only": True}``.
VLLM_ONLY_NAMES = ("gpu_memory_utilization", "max_model_len")
VLLM_MARKER = "x-orlab-vllm-only"
#: How far init_from_run chains are followed to find the base model (its tokenizer and shape).
MAX_PARENT_HOPS = 16


@dataclass
class LaunchVerdict:
    """What check_launch found. ``workers``: names of the fresh workers of ``queue`` the config was
    checked against (empty: nothing had reported, the run goes unchecked). ``estimate``: the memory
    estimate against the smallest GPU, when one was computed (trainers.common.memory_estimate)."""

    queue: str
    workers: list[str] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)
    estimate: Any = None

    def refuse(self, path: str, message: str) -> None:
        self.errors.setdefault(path, []).append(message)


def check_launch(kind: str, config: Mapping[str, Any], queue: str) -> dict[str, list[str]]:
    """Field path -> messages for a validated config of ``kind`` launched on ``queue``; {} when fine."""
    return evaluate_launch(kind, config, queue).errors


def evaluate_launch(kind: str, config: Mapping[str, Any], queue: str) -> LaunchVerdict:
    verdict = LaunchVerdict(queue=queue)
    name = config.get("model_path")
    if isinstance(name, str) and name != TINY and (problem := model_name_problem(name)):
        verdict.refuse("config.model_path", f"choose a model from the workers' catalogue: {problem}")
    reports = fresh_reports(queue)
    verdict.workers = [r.name for r in reports]
    if not reports:
        return verdict
    hosts = _check_processes(verdict, config, reports)
    _check_packages(verdict, kind, config, reports)
    if "config.model_path" in verdict.errors:
        return verdict
    model = _check_model(verdict, config, reports)
    if model is not None:
        _check_chat_template(verdict, config, model)
        _check_memory(verdict, kind, config, model, hosts)
    return verdict


# --- the model -----------------------------------------------------------------------------------


def _check_model(verdict: LaunchVerdict, config: Mapping[str, Any], reports) -> dict[str, Any] | None:
    """The catalogue entry of the run's base model ({} for tiny; None when it cannot be known). A run
    started from another run's checkpoint (init_from_run) has that run's base model."""
    name = config.get("model_path")
    if config.get("init_from_run") is not None or is_checkpoint_ref(name):
        name = _base_model_name(config)
    elif isinstance(name, str) and name != TINY:
        entry = _catalogue_entry(reports, name)
        if entry is None:
            known = [m["name"] for m in queue_models(reports)]
            choices = ", ".join(["tiny", *known[:20]]) + (" ..." if len(known) > 20 else "")
            verdict.refuse(
                "config.model_path",
                f"choose a model from the workers' catalogue: {name!r} is not under the model roots of "
                f"any worker of queue {verdict.queue!r} (known: {choices})",
            )
        return entry
    if name == TINY:
        return {"name": TINY, "chat_template": True}
    return _catalogue_entry(reports, name) if isinstance(name, str) else None


def _catalogue_entry(reports, name: str) -> dict[str, Any] | None:
    return next((m for m in queue_models(reports) if m["name"] == name), None)


def _base_model_name(config: Mapping[str, Any]) -> str | None:
    """The model_path at the root of a chain of init_from_run and ``checkpoint:<id>`` references
    (checked at that run's launch)."""
    current = config
    for _ in range(MAX_PARENT_HOPS):
        parent = current.get("init_from_run")
        if parent is None:
            name = current.get("model_path")
            if not is_checkpoint_ref(name):
                return name if isinstance(name, str) else None
            ref = checkpoint_ref_id(name)
            parent = (
                Checkpoint.objects.filter(pk=ref).values_list("run_id", flat=True).first() if ref else None
            )
        parent_config = Run.objects.filter(pk=parent).values_list("config", flat=True).first()
        if not isinstance(parent_config, dict):
            return None
        current = parent_config
    return None


def _check_chat_template(verdict: LaunchVerdict, config: Mapping[str, Any], model: dict[str, Any]) -> None:
    if config.get("chat_template") == "auto" and model.get("chat_template") is False:
        verdict.refuse(
            "config.chat_template",
            f"auto renders prompts with the tokenizer's chat template, and {model['name']} has none: "
            "set chat_template to none (raw text) or give a Jinja template",
        )


# --- processes and packages ------------------------------------------------------------------------


def _setting(config: Mapping[str, Any], key: str) -> tuple[str, Any]:
    """(field path, value) of ``key`` at the top level of the config or in one of its sections."""
    if key in config:
        return f"config.{key}", config[key]
    for section, value in config.items():
        if isinstance(value, Mapping) and key in value:
            return f"config.{section}.{key}", value[key]
    return f"config.{key}", None


def _can_host(report: WorkerReport, nproc: Any) -> bool:
    """A worker without GPUs runs ranks on the CPU (gloo); one with GPUs needs one per rank."""
    return not isinstance(nproc, int) or report.visible_gpus == 0 or report.visible_gpus >= nproc


def _check_processes(verdict: LaunchVerdict, config: Mapping[str, Any], reports) -> list[WorkerReport]:
    """Refuse nproc_per_node / nodes beyond what the workers report; returns the workers that can
    host one node of the run."""
    nproc_path, nproc = _setting(config, "nproc_per_node")
    hosts = [r for r in reports if _can_host(r, nproc)]
    if not hosts:
        most = max(r.visible_gpus for r in reports)
        verdict.refuse(
            nproc_path,
            f"{nproc} processes per node need {nproc} GPUs on one worker, and the workers of queue "
            f"{verdict.queue!r} see at most {most}",
        )
        return []
    nodes_path, nodes = _setting(config, "nodes")
    if isinstance(nodes, int) and nodes > 1:
        # a GPU worker is one node (its GPUs are the node's); a CPU worker can host one per slot
        capacity = sum(r.slots if r.visible_gpus == 0 else 1 for r in hosts)
        if nodes > capacity:
            verdict.refuse(
                nodes_path,
                f"{nodes} nodes, and queue {verdict.queue!r} has room for {capacity} "
                f"({len(hosts)} worker{'s' if len(hosts) != 1 else ''} reporting: {', '.join(r.name for r in hosts)})",
            )
    return hosts


def _check_packages(verdict: LaunchVerdict, kind: str, config: Mapping[str, Any], reports) -> None:
    where = f"no worker of queue {verdict.queue!r} has"
    if not any(r.has_vllm for r in reports):
        for path, value in _walk(config, "config"):
            if path.rsplit(".", 1)[-1] == "engine" and value == "vllm":
                verdict.refuse(path, f"vllm: {where} vLLM installed; use auto or torch")
        for path, value, default in vllm_only_settings(get_spec(kind).config_model(), config):
            verdict.refuse(
                path, f"{value!r} is a vLLM setting and {where} vLLM installed: leave it at {default!r}"
            )
    if config.get("engine") == "deepspeed" and not any(r.has_deepspeed for r in reports):
        verdict.refuse("config.engine", f"deepspeed: {where} DeepSpeed installed; use torch")


def vllm_only_settings(model: type[BaseModel], config: Mapping[str, Any], prefix: str = "config"):
    """(path, value, default) of the vLLM-only fields of ``config`` set away from their defaults,
    following the config model's nested sections."""
    for name, info in model.model_fields.items():
        if name not in config:
            continue
        value, path = config[name], f"{prefix}.{name}"
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if name in VLLM_ONLY_NAMES or extra.get(VLLM_MARKER):
            default = info.get_default(call_default_factory=True)
            if value != default:
                yield path, value, default
            continue
        section = _model_class(info.annotation)
        if section is not None and isinstance(value, Mapping):
            yield from vllm_only_settings(section, value, path)


def _model_class(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model of a section field (``Section`` or ``Section | None``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return found[0] if len(found) == 1 else None
    return None


def _walk(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for key, sub in value.items():
            yield from _walk(sub, f"{path}.{key}")
    else:
        yield path, value


# --- memory --------------------------------------------------------------------------------------


def _check_memory(verdict, kind: str, config: Mapping[str, Any], model: dict[str, Any], hosts) -> None:
    """Refuse a config whose per-GPU estimate exceeds the smallest GPU among the workers that can host
    it. Skipped when the estimator is absent, the model's shape is unknown, or no host has a GPU."""
    try:
        import trainers.common.memory_estimate as memory_estimate
    except ImportError:
        return
    gpu_hosts = [r for r in hosts if r.gpu_memory_bytes]
    if not gpu_hosts:
        return
    smallest = min(gpu_hosts, key=lambda r: r.gpu_memory_bytes)
    info = memory_estimate.TINY_MODEL_INFO if model.get("name") == TINY else model
    try:
        estimate = memory_estimate.estimate_for_config(
            kind,
            config,
            info,
            smallest.gpu_memory_bytes,
            gpus_per_node=smallest.visible_gpus,
            vllm_available=smallest.has_vllm,
        )
    except (ValueError, TypeError, KeyError):
        # an estimator bug or a model shape it does not know must not block launches; log it
        log.exception("memory estimate failed for a %s run on queue %s", kind, verdict.queue)
        return
    verdict.estimate = estimate
    if estimate is not None and not estimate.fits(smallest.gpu_memory_bytes):
        gib = memory_estimate.gib
        verdict.refuse(
            "config",
            f"the memory estimate, {estimate.describe()}, does not fit the smallest GPU of queue {verdict.queue!r}: "
            f"{gib(smallest.gpu_memory_bytes)} on {smallest.name} (less a {gib(memory_estimate.RESERVE_BYTES)} "
            "reserve for the CUDA context); use gradient checkpointing, a smaller micro_batch_tokens, "
            "DeepSpeed ZeRO or more processes",
        )
