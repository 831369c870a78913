"""Health rules evaluated on ingest (issue 15 point 1). Called by metric_store.metrics_record after a
batch is stored; must stay cheap when a project has no rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def points_written(run_id: int, batch: Mapping[str, Any]) -> None:
    """A batch (key -> metric_store.Columns) was committed for ``run_id``."""
    return None
