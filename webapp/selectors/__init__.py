"""Queries that pages and the API share (issue 12): each is parsed once from the query string, the
same way for the HTML page and for its API endpoints, so the same parameters select the same rows in
the same order.

* ``runs.RunTableQuery``: the runs list (``/projects/<id>/``, ``GET /api/runs/``, ``GET /api/runs/table/``);
* ``pairs.PairQuery``: preference pairs (``/datasets/<id>/pairs/``, ``GET /api/datasets/<id>/pairs/``).

Framework-neutral (Django ORM only): ``webapp.ui`` and ``webapp.api`` both import from here, never from
each other.
"""
