"""Events as chart markers on the run page (issue 15 point 2; drawn by run.js, issue 16 point 6).

Contract: ``run_event_markers(run_id)`` -> list of
``{"kind": "event", "id": int, "step": int, "key": str | None, "label": str, "severity": str}``
(``key`` None: the marker belongs on every chart)."""

from __future__ import annotations


def run_event_markers(run_id: int) -> list[dict]:
    return []
