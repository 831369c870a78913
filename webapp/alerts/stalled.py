"""The `stalled` rule kind, checked by the housekeeping task on the control queue (issue 15)."""

from __future__ import annotations


def check_stalled() -> int:
    """Fire stalled rules whose runs logged no new point for their window. Returns events fired."""
    return 0
