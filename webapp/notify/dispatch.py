"""Notifications (issue 15 point 3): the two entry points the rest of the app calls.

``event_fired(event)`` is called by webapp.alerts when a rule fires; ``runs_ended(run_ids)`` by
webapp.runs.services after a run finished, failed, was cancelled or lost (after commit)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def event_fired(event: Any) -> None:
    return None


def runs_ended(run_ids: Iterable[int]) -> None:
    return None
