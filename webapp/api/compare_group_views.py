"""GET /api/compare/groups/: the mean and band of groups of runs (webapp.runs.group_aggregate), what
the compare page fetches for a grouped chart: O(groups x points) whatever the number of runs.

The aggregates are sent with float32 precision (7 significant digits, about half the JSON of a
float64's 17): they are drawn, and a chart cannot show the difference."""

from __future__ import annotations

import numpy as np
from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from webapp.api.metrics_io import render_series
from webapp.runs import selectors
from webapp.runs.group_aggregate import group_aggregate
from webapp.runs.services import RunError

MAX_RUNS = 100


def _groups_param(raw: str) -> list[list[int]]:
    groups = []
    for part in raw.split(";"):
        try:
            ids = [int(x) for x in part.split(",") if x.strip()]
        except ValueError:
            raise RunError(
                "invalid query", {"groups": ["run ids: 1,2,3;4,5 (groups separated by ;)"]}
            ) from None
        if not ids or any(not 0 < i < 2**63 for i in ids):
            raise RunError("invalid query", {"groups": ["every group needs at least one valid run id"]})
        groups.append(list(dict.fromkeys(ids)))
    total = len({i for g in groups for i in g})
    if not groups or total > MAX_RUNS:
        raise RunError("invalid query", {"groups": [f"give 1 to {MAX_RUNS} runs"]})
    return groups


class CompareGroupsApi(APIView):
    """``{"groups": [{"runs": [ids], "series": {key: {steps, mean, std, min, max, count}}}]}``, one
    entry per group in the order given; non-finite values null."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "groups", str, required=True, description="run ids per group: 1,2,3;4,5 (at most 100 runs)"
            ),
            OpenApiParameter("keys", str, description="comma-separated keys (default: all)"),
            OpenApiParameter("max_points", int, description="thin each group's curve to at most N points"),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> HttpResponse:
        groups = _groups_param(request.query_params.get("groups", ""))
        ids = {i for g in groups for i in g}
        visible = set(selectors.run_list(user=request.user).filter(pk__in=ids).values_list("pk", flat=True))
        if missing := ids - visible:
            raise Http404(f"no such run: {sorted(missing)}")
        raw_keys = request.query_params.get("keys")
        keys = [k for k in raw_keys.split(",") if k] if raw_keys else None
        raw_max = request.query_params.get("max_points")
        max_points = None
        if raw_max not in (None, ""):
            try:
                max_points = int(raw_max)
            except ValueError:
                raise RunError("invalid query", {"max_points": ["must be an integer"]}) from None
            if not 4 <= max_points <= 1_000_000:
                raise RunError("invalid query", {"max_points": ["must be between 4 and 1000000"]})
        data = [
            {
                key: {
                    name: col.astype(np.float32) if col.dtype == np.float64 else col
                    for name, col in agg.items()
                }
                for key, agg in per_key.items()
            }
            for per_key in group_aggregate(groups, keys, max_points=max_points)
        ]
        body = {"groups": [{"runs": g, "series": s} for g, s in zip(groups, data, strict=True)]}
        return HttpResponse(render_series(body), content_type="application/json")
