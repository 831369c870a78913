"""Planner settings for one query on PostgreSQL (no-op elsewhere): the pair search and the sample
search choose between a GIN bitmap and an index walk from their own count, because the planner's
estimate of a search's matches can miss by 100x (webapp.datasets.selectors, webapp.selectors.samples)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection, transaction


@contextlib.contextmanager
def planner_settings(settings: dict[str, str] | None) -> Iterator[None]:
    """Apply ``settings`` (name -> value, transaction-local) for the queries run inside."""
    if not settings or connection.vendor != "postgresql":
        yield
        return
    names = list(settings)
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            "SELECT " + ", ".join(["set_config(%s, %s, true)"] * len(names)),
            [x for name in names for x in (name, settings[name])],
        )
        yield
        # back to the session's values (an outer transaction goes on)
        cur.execute("SELECT set_config(name, reset_val, true) FROM pg_settings WHERE name = ANY(%s)", [names])
