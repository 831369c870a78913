"""The one seam between trainers and the platform.

A trainer is ``train(config, sink) -> summary``, registered under a kind name. It never imports
Django, DRF, Celery, ``webapp`` or ``workers``: the worker hands it a database-backed sink, the CLI
a JSONL one, the tests an in-memory one.

This module imports neither torch nor numpy, so the web app can read the registry (config schemas,
presets) without paying for them.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError

#: A dataset a trainer reads: an orlab dataset id (the worker exports that version to a JSONL file
#: and hands the trainer its path) or, when a trainer runs standalone, the path of a JSONL file. The
#: platform takes ids only: a string is refused at launch (webapp.runs.services._check_dataset_refs).
DatasetRef = int | str


def dataset_field(kind: str, description: str, **kwargs: Any) -> Any:
    """A config field holding a DatasetRef of ``kind`` ("preference" or "problems"); the launch form
    shows a picker of the project's datasets of that kind."""
    from pydantic import Field

    return Field(description=description, json_schema_extra={"x-orlab-dataset": kind}, **kwargs)


class TrainerConfig(BaseModel):
    """Base of every trainer config: strict (unknown keys are errors) and JSON round-trippable."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


def format_errors(exc: ValidationError) -> list[str]:
    """One ``field.path: message`` line per error (the CLI's bad-config output)."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in err["loc"]) or "config"
        lines.append(f"{loc}: {err['msg']}")
    return lines


@runtime_checkable
class Sink(Protocol):
    """Everything a trainer may say to the outside world."""

    #: Directory of the checkpoint to continue from, or None for a fresh start.
    resume_from: Path | None
    #: Scratch directory of this run (e.g. where a generated model is built); checkpoints go
    #: through checkpoint_dir() instead.
    workdir: Path

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Scalar metrics, many keys per step. Non-finite values are kept as NaN (shown as gaps)."""

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        """Rollouts: prompt, completion, reward, advantage, verdict, length, truncated."""

    def log_evaluation(
        self, step: int, benchmark: str, metrics: Mapping[str, float], protocol: Mapping[str, Any]
    ) -> None:
        """A benchmark result (avg@k, pass@k, ...) with the protocol that produced it (k, temperature,
        top_p, max length, verifier version), stored together so a number is never read without it."""

    def checkpoint_dir(self, step: int) -> Path:
        """A fresh, empty directory in which the trainer writes checkpoint ``step``."""

    def save_checkpoint(self, step: int, directory: Path, metrics: Mapping[str, float] | None = None) -> None:
        """Record a checkpoint the trainer has finished writing. Metrics logged so far are flushed first,
        so a resume from this checkpoint never leaves a hole in the curves."""

    def should_stop(self) -> bool:
        """Cooperative cancellation, polled between steps (cheap: implementations rate-limit)."""

    def publish_dataset(
        self, kind: str, name: str, path: Path, meta: Mapping[str, Any] | None = None
    ) -> None:
        """A dataset the run produced (a JSONL file of ``kind`` rows, e.g. DAPO's "step_values"); the
        platform stores it as a new dataset version linked to the run, browsable like imported ones."""


class MemorySink:
    """Keeps everything in memory; for tests and notebooks."""

    def __init__(self, workdir: Path | None = None, resume_from: Path | None = None):
        self.workdir = Path(workdir) if workdir else None
        self.resume_from = resume_from
        self.metrics: dict[str, dict[int, float]] = {}
        self.samples: list[tuple[int, dict[str, Any]]] = []
        self.evaluations: list[tuple[int, str, dict[str, float], dict[str, Any]]] = []
        self.checkpoints: list[tuple[int, Path, dict[str, float]]] = []
        self.datasets: list[tuple[str, str, Path, dict[str, Any]]] = []
        self.stop_after_step: int | None = None
        self._last_step = -1

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self._last_step = max(self._last_step, step)
        for key, value in metrics.items():
            self.metrics.setdefault(key, {})[step] = float(value)

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        self.samples.extend((step, dict(s)) for s in samples)

    def log_evaluation(self, step, benchmark, metrics, protocol) -> None:
        self.evaluations.append((step, benchmark, dict(metrics), dict(protocol)))

    def checkpoint_dir(self, step: int) -> Path:
        if self.workdir is None:
            raise RuntimeError("MemorySink needs a workdir to store checkpoints")
        path = self.workdir / f"checkpoint-{step:08d}"
        path.mkdir(parents=True, exist_ok=False)
        return path

    def save_checkpoint(self, step: int, directory: Path, metrics: Mapping[str, float] | None = None) -> None:
        self.checkpoints.append((step, Path(directory), dict(metrics or {})))

    def should_stop(self) -> bool:
        return self.stop_after_step is not None and self._last_step >= self.stop_after_step

    def publish_dataset(
        self, kind: str, name: str, path: Path, meta: Mapping[str, Any] | None = None
    ) -> None:
        self.datasets.append((kind, name, Path(path), dict(meta or {})))

    def series(self, key: str) -> list[float]:
        """Values of ``key`` ordered by step."""
        return [v for _, v in sorted(self.metrics.get(key, {}).items())]


class JsonlSink:
    """Writes one JSON object per step, ``{"step": k, key: value, ...}``, to a stream (stdout by default).

    This is the stable interface of ``python -m trainers.<kind> --config cfg.json``. NaN and infinities
    are written as null, so every line is strict JSON."""

    def __init__(
        self, stream: IO[str] | None = None, workdir: Path | None = None, resume_from: Path | None = None
    ):
        self.stream = stream or sys.stdout
        self.workdir = Path(workdir) if workdir else Path("runs") / "standalone"
        self.resume_from = resume_from

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        row: dict[str, Any] = {"step": step}
        for key, value in metrics.items():
            value = float(value)
            row[key] = value if math.isfinite(value) else None
        self.stream.write(json.dumps(row) + "\n")
        self.stream.flush()

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        for sample in samples:
            self.stream.write(json.dumps({"step": step, "sample": dict(sample)}, default=str) + "\n")

    def log_evaluation(self, step, benchmark, metrics, protocol) -> None:
        row = {"step": step, "evaluation": benchmark, "metrics": dict(metrics), "protocol": dict(protocol)}
        self.stream.write(json.dumps(row, default=str) + "\n")

    def checkpoint_dir(self, step: int) -> Path:
        path = self.workdir / f"checkpoint-{step:08d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save_checkpoint(self, step: int, directory: Path, metrics: Mapping[str, float] | None = None) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def publish_dataset(
        self, kind: str, name: str, path: Path, meta: Mapping[str, Any] | None = None
    ) -> None:
        row = {"dataset": {"kind": kind, "name": name, "path": str(path), "meta": dict(meta or {})}}
        self.stream.write(json.dumps(row, default=str) + "\n")


#: The run-page panels a trainer may ask for (TrainerSpec.panels).
RUN_PANELS = {
    "memory": "the per-GPU memory estimate made at launch next to the measured peak",
    "scoring": "score a preference dataset with a checkpoint (needs TrainerSpec.scorer)",
    "rates": "the convergence-rate checks (linear rate, log-log slope, order) fitted on a logged `gap`",
}


def _load(dotted: str) -> Any:
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class TrainerSpec:
    """How the platform finds a trainer. ``config`` and ``entry`` are "module:attr" strings, imported
    lazily: the config module must not import torch (the web app reads it), the entry module may."""

    kind: str
    title: str
    description: str
    config: str
    entry: str
    queue: str = "cpu"  # the Celery queue a run of this kind goes to unless the launch says otherwise
    primary_metrics: tuple[str, ...] = ()  # shown as columns on the runs list
    dataset_fields: tuple[str, ...] = ()  # config fields that are DatasetRefs (top level)
    log_scale_metrics: tuple[str, ...] = ()  # charted on a log axis by default
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: What each preset needs to run, shown at launch and in GET /api/trainers/: {"preset": {"summary":
    #: text, "gpu_memory_gb": per-GPU memory it was checked against (None: a CPU preset), "gpus_per_node",
    #: "nodes", "ready"}} (see :func:`hardware`). tests/trainers/test_memory_estimate_presets.py checks
    #: each against the memory estimate.
    preset_hardware: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Named sweeps offered at launch: {"name": {"preset": <a key of presets>, "grid": {dotted.path: [values]}}}.
    sweep_presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    # --- Capabilities: what the platform offers for this kind's runs besides training. The web app and
    # the workers read them here and keep no list of kinds (tests/webapp/test_trainer_capabilities.py).
    #: The run's checkpoints are policies another run may start from (``model_path: "checkpoint:<id>"``,
    #: ``init_from_run``).
    policy_checkpoints: bool = False
    #: "module:attr" of ``evaluate(checkpoint_dir, benchmark_jsonl, *, k, temperature, top_p,
    #: max_new_tokens, chat_template) -> (metrics, protocol)``: a checkpoint is evaluated on demand on a
    #: problems dataset (POST /api/checkpoints/{id}/evaluate/; workers.tasks.evaluate_checkpoint). An
    #: evaluator that also takes ``on_samples`` (a callable given the rollouts as sample dicts) and
    #: ``checkpoint_step`` gets them, and the worker stores those rollouts as phase "eval" samples of the
    #: run at the checkpoint's step (issue 14).
    evaluator: str | None = None
    #: "module:attr" of ``settings(config, step) -> dict``, light (the web app calls it): the generation
    #: settings (k, temperature, top_p, max_new_tokens) the kind's raw config gives an on-demand
    #: evaluation of its step-``step`` checkpoint beyond the config's ``eval`` section
    #: (webapp.runs.services.evaluation_settings).
    evaluation_settings: str | None = None
    #: "module:attr" of ``score(checkpoint_dir, rows, batch_size) -> iterator of (row id, chosen score,
    #: rejected score)``: a checkpoint scores preference datasets (workers.tasks.score_dataset).
    scorer: str | None = None
    #: Dataset kinds its runs publish through ``Sink.publish_dataset`` (e.g. DAPO's "step_values").
    publishes_datasets: tuple[str, ...] = ()
    #: Run-page panels besides the charts, evaluations and samples (every run has those): keys of
    #: RUN_PANELS.
    panels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.panels) - set(RUN_PANELS))
        if unknown:
            raise ValueError(
                f"trainer {self.kind!r}: unknown run-page panels {unknown}; known: {sorted(RUN_PANELS)}"
            )
        if "scoring" in self.panels and self.scorer is None:
            raise ValueError(f"trainer {self.kind!r}: the scoring panel needs a scorer")

    def config_model(self) -> type[TrainerConfig]:
        return _load(self.config)

    def train_fn(self) -> Callable[[TrainerConfig, Sink], Mapping[str, Any]]:
        return _load(self.entry)

    def evaluate_fn(self) -> Callable[..., tuple[dict[str, float], dict[str, Any]]]:
        """The evaluator (raises when this kind declares none)."""
        if self.evaluator is None:
            raise ValueError(f"trainer {self.kind!r} does not evaluate checkpoints")
        return _load(self.evaluator)

    def score_fn(self) -> Callable[..., Any]:
        """The scorer (raises when this kind declares none)."""
        if self.scorer is None:
            raise ValueError(f"trainer {self.kind!r} does not score datasets")
        return _load(self.scorer)

    def evaluation_defaults(self, config: Mapping[str, Any], step: int) -> dict[str, Any]:
        """What :attr:`evaluation_settings` says for ``config`` at ``step`` ({} when it is not set)."""
        return dict(_load(self.evaluation_settings)(config, step)) if self.evaluation_settings else {}

    def json_schema(self) -> dict[str, Any]:
        return self.config_model().model_json_schema()

    def validate(self, raw: Mapping[str, Any]) -> TrainerConfig:
        """Raises pydantic.ValidationError with per-field messages."""
        return self.config_model().model_validate(dict(raw))


def hardware(
    summary: str,
    *,
    gpu_memory_gb: int | None = None,
    gpus_per_node: int = 0,
    nodes: int = 1,
    ready: bool = True,
) -> dict:
    """One ``TrainerSpec.preset_hardware`` entry: the text people read and the numbers the estimate
    test checks the preset against (``gpu_memory_gb`` None: a CPU preset). ``ready`` False: the preset
    needs a process layout its trainer cannot run yet (the summary says so plainly)."""
    return {
        "summary": summary,
        "gpu_memory_gb": gpu_memory_gb,
        "gpus_per_node": gpus_per_node,
        "nodes": nodes,
        "ready": ready,
    }


#: the hardware of the tiny-model demo presets
CPU_ONLY = hardware("CPU only (1-2 cores, a few GB of memory); no GPU needed")


REGISTRY: dict[str, TrainerSpec] = {}


def register(spec: TrainerSpec) -> TrainerSpec:
    if spec.kind in REGISTRY:
        raise ValueError(f"trainer kind {spec.kind!r} is registered twice")
    REGISTRY[spec.kind] = spec
    return spec


def get_spec(kind: str) -> TrainerSpec:
    _discover()
    try:
        return REGISTRY[kind]
    except KeyError:
        raise KeyError(f"unknown trainer kind {kind!r}; known: {sorted(REGISTRY)}") from None


def all_specs() -> list[TrainerSpec]:
    _discover()
    return [REGISTRY[k] for k in sorted(REGISTRY)]


_DISCOVERED = False


def _discover() -> None:
    """Import each trainer package's light ``spec`` module, which registers itself."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for name in ("tabular", "synthetic", "regression", "sft", "reward", "rl", "dapo"):
        importlib.import_module(f"trainers.{name}.spec")


def run(kind: str, config: Mapping[str, Any], sink: Sink) -> Mapping[str, Any]:
    """Validate ``config`` for ``kind`` and train. Returns the trainer's summary."""
    spec = get_spec(kind)
    return spec.train_fn()(spec.validate(config), sink) or {}
