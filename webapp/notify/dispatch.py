"""Notifications (issue 15 point 3): the two entry points the rest of the app calls.

``events_fired(events)`` is called by webapp.alerts with a batch's events (``event_fired(event)`` for
one); ``runs_ended(run_ids)`` by
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


def events_fired(events: Iterable[Any]) -> None:
    """The events one ingest batch fired: one query asks which of their projects have an enabled
    channel, and only those events go on to deliveries_for_event (its project, rule, run and
    channel reads: ~4 queries an event, the bulk of a firing batch's cost when nobody listens).
    Exact, not cached: a channel created a moment ago in another process is seen."""
    from webapp.notify.models import Channel

    events = list(events)
    if not events:
        return
    try:
        listening = set(
            Channel.objects.filter(project_id__in={e.project_id for e in events}, enabled=True)
            .values_list("project_id", flat=True)
            .distinct()
        )
    except Exception:
        log.exception("notify: could not read the channels of %d events", len(events))
        return
    for event in events:
        if event.project_id in listening:
            event_fired(event)


def runs_ended(run_ids: Iterable[int]) -> None:
    from webapp.notify import services

    ids = list(run_ids)
    try:
        services.deliveries_for_runs(ids)
    except Exception:
        log.exception("notify: could not write the deliveries of runs %s", ids)
