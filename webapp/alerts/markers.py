"""Events as chart markers on the run page (issue 15 point 2; drawn by run.js, issue 16 point 6).

Contract: ``run_event_markers(run_id)`` -> list of
``{"kind": "event", "id": int, "step": int, "key": str | None, "label": str, "severity": str}``
(``key`` None: the marker belongs on every chart)."""

from __future__ import annotations

from webapp.alerts.models import Event

MAX_MARKERS = 500  # the newest; a chart with more markers than that is unreadable anyway


def run_event_markers(run_id: int) -> list[dict]:
    rows = (
        Event.objects.filter(run_id=run_id, step__isnull=False)
        .order_by("-created_at", "-id")
        .values_list("id", "step", "key", "message", "severity")[:MAX_MARKERS]
    )
    out = []
    for pk, step, key, message, severity in rows:
        # a sum alias' event ("a+b") is drawn on each part's chart by the caller's key match: give
        # it on every chart instead, since no chart is called "a+b"
        marker_key = key if key and "+" not in key else None
        out.append(
            {
                "kind": "event",
                "id": pk,
                "step": step,
                "key": marker_key,
                "label": message,
                "severity": severity,
            }
        )
    out.reverse()
    return out
