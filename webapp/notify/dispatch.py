"""Notifications (issue 15 point 3): the two entry points the rest of the app calls.

``event_fired(event)`` is called by webapp.alerts when a rule fires; ``runs_ended(run_ids)`` by
webapp.runs.services after a run finished, failed, was cancelled or lost (after commit). Both write
the deliveries and queue their sending; neither raises: they run after the caller's commit, and a
notification problem must not fail a run's end or an ingest request (it is logged)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


def event_fired(event: Any) -> None:
    from webapp.notify import services

    try:
        services.deliveries_for_event(event)
    except Exception:
        log.exception("notify: could not write the deliveries of event %s", getattr(event, "pk", event))


def runs_ended(run_ids: Iterable[int]) -> None:
    from webapp.notify import services

    ids = list(run_ids)
    try:
        services.deliveries_for_runs(ids)
    except Exception:
        log.exception("notify: could not write the deliveries of runs %s", ids)
