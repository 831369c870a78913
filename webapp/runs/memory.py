"""What a run stores as its launch-time memory estimate (Run.memory_estimate; the run page shows it
next to the measured peak).

The launch check (webapp.runs.launch_checks) estimates against the smallest GPU of the queue's
workers when they report one and the model's shape is in their catalogue; that estimate is stored.
Without it, a run on the tiny model is still estimated (its shape is known without any worker: the
CPU's float32 on the cpu queue, CUDA's bf16 elsewhere); otherwise nothing is stored and the page says
the shape was not known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainers.common.memory_estimate import KINDS, TINY_MODEL_INFO, estimate_for_config

TINY = "tiny"


def launch_estimate(kind: str, config: Mapping[str, Any], queue: str, verdict: Any = None) -> dict[str, Any]:
    """The JSON to store on a run created with the validated ``config``; {} when unknown."""
    computed = getattr(verdict, "estimate", None)
    if computed is not None:
        return computed.to_dict()
    if kind not in KINDS or config.get("model_path") != TINY or config.get("init_from_run") is not None:
        return {}
    estimate = estimate_for_config(kind, config, TINY_MODEL_INFO, device="cpu" if queue == "cpu" else "cuda")
    return estimate.to_dict() if estimate is not None else {}
