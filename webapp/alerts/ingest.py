"""Health rules evaluated on ingest (issue 15 point 1). Called by metric_store.metrics_record after a
batch is stored; must stay cheap when a project has no rules (webapp.alerts.engine's cost model)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def points_written(run_id: int, batch: Mapping[str, Any]) -> None:
    """A batch (key -> metric_store.Columns) was committed for ``run_id``."""
    from webapp.alerts import engine

    try:
        engine.evaluate(run_id, batch)
    except Exception:
        # The points are stored already: a failing rule must not turn the write into an error
        # (the client would retry a batch that is in). Logged with its cause instead.
        log.exception("health rules on run %s failed", run_id)
