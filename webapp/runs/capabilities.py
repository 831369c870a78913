"""What the platform offers a run of a kind, read from its trainer's spec (trainers.base.TrainerSpec's
capabilities): the web app keeps no list of trainer kinds. ``external`` is the web app's own kind (a run
reported by a client, no trainer behind it): it has no capabilities, as has a kind no longer registered.

tests/webapp/test_trainer_capabilities.py registers a new kind and checks it gets each feature, and that
no webapp module compares a kind with a literal other than ``external``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainers.base import TrainerSpec, all_specs, get_spec

EXTERNAL = "external"  # webapp.runs.models.Run.EXTERNAL (not imported: this module loads no model)


def spec_of(kind: str) -> TrainerSpec | None:
    """The trainer of ``kind``; None for external runs and kinds no longer registered."""
    if kind == EXTERNAL:
        return None
    try:
        return get_spec(kind)
    except KeyError:
        return None


def policy_checkpoints(kind: str) -> bool:
    """Its checkpoints are policies another run may start from."""
    spec = spec_of(kind)
    return spec is not None and spec.policy_checkpoints


def evaluates_checkpoints(kind: str) -> bool:
    """Its checkpoints can be evaluated on demand on a problems dataset."""
    spec = spec_of(kind)
    return spec is not None and spec.evaluator is not None


def scores_datasets(kind: str) -> bool:
    """Its checkpoints can score preference datasets."""
    spec = spec_of(kind)
    return spec is not None and spec.scorer is not None


def publishes(kind: str) -> tuple[str, ...]:
    """The dataset kinds its runs may publish."""
    spec = spec_of(kind)
    return tuple(spec.publishes_datasets) if spec is not None else ()


def panels(kind: str) -> tuple[str, ...]:
    """The run-page panels it asks for (trainers.base.RUN_PANELS)."""
    spec = spec_of(kind)
    return tuple(spec.panels) if spec is not None else ()


def evaluation_defaults(kind: str, config: Mapping[str, Any], step: int) -> dict[str, Any]:
    """The evaluation settings its config gives a step-``step`` checkpoint (TrainerSpec.evaluation_settings)."""
    spec = spec_of(kind)
    return spec.evaluation_defaults(config, step) if spec is not None else {}


def kinds_that(capability) -> list[str]:
    """The registered kinds for which ``capability(kind)`` holds, sorted (for messages)."""
    return [spec.kind for spec in all_specs() if capability(spec.kind)]
