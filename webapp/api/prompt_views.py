"""Issue 14's analytics over training, through the same selectors as the pages (webapp.selectors.prompts,
whose docstring defines every number): the prompt x step solve matrix with the counts over time and the
zero-variance share, its CSV, one prompt's history, and the per-step distributions. Read-only; a run
or prompt outside the user's projects is a 404, a bad parameter a 400 naming it."""

from __future__ import annotations

import orjson
from django.http import HttpResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.views import APIView

from webapp.runs import selectors as run_selectors
from webapp.selectors import prompts as sel

PHASE_PARAMETER = OpenApiParameter(
    "phase",
    str,
    enum=list(sel.PHASES),
    description="train: training rollouts (default); eval: evaluation rollouts",
)


def _int_schema(lo: int, hi: int) -> dict:
    return {"type": "integer", "minimum": lo, "maximum": hi}


def _json(data) -> HttpResponse:
    return HttpResponse(orjson.dumps(data), content_type="application/json")


class RunPromptMatrixApi(APIView):
    @extend_schema(
        operation_id="runs_prompt_matrix",
        parameters=[
            PHASE_PARAMETER,
            OpenApiParameter(
                "offset", _int_schema(0, sel.MAX_OFFSET), description="first prompt (rank in matrix order)"
            ),
            OpenApiParameter(
                "limit", _int_schema(1, sel.MAX_LIMIT), description="prompts from offset (default: all)"
            ),
            OpenApiParameter(
                "rows",
                _int_schema(1, 2000),
                description=f"most rows sent (default {sel.MAX_ROWS}); "
                "consecutive prompts are summed into buckets beyond that",
            ),
            OpenApiParameter(
                "cols",
                _int_schema(1, 2000),
                description=f"most columns sent (default {sel.MAX_COLS}); "
                "consecutive steps are summed into buckets beyond that",
            ),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT)},
        description=(
            "The prompt x step solve-rate matrix of one phase: prompts ordered by first-solved step (never "
            "solved last), `z[row][col]` = correct / rollouts of the row's prompts at the column's steps "
            "(null: not sampled), `n` the rollouts; `counts` (unsolved / learning / saturated / seen "
            "prompts at each of `steps`), `zero_variance_share` and `rollouts` per step. From the "
            "per-(prompt, step) aggregates, which retention keeps."
        ),
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        query = sel.MatrixQuery.parse(request.query_params, strict=True)
        run = run_selectors.run_get(user=request.user, pk=pk)
        return _json(sel.matrix_view(run, query))


class RunPromptMatrixCsvApi(APIView):
    @extend_schema(
        operation_id="runs_prompt_matrix_csv",
        parameters=[PHASE_PARAMETER],
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR)},
        description=(
            "Every prompt x every step of the phase as CSV, prompts in matrix order: "
            "`prompt_id,first_solved_step,<step>...`, solve rate in each cell, empty where not sampled."
        ),
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        query = sel.MatrixQuery.parse(request.query_params, strict=True)
        run = run_selectors.run_get(user=request.user, pk=pk)
        response = HttpResponse(sel.matrix_csv(run, query.phase), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = (
            f'attachment; filename="run-{run.pk}-{query.phase}-solve-matrix.csv"'
        )
        return response


class RunPromptHistoryApi(APIView):
    @extend_schema(
        operation_id="runs_prompt_history",
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT)},
        description=(
            "One prompt over training: its text, expected answer and, for training and evaluation "
            "rollouts apart, the steps it was sampled at with rollouts `n`, `correct`, `truncated` and "
            "solve `rate`."
        ),
    )
    def get(self, request: Request, pk: int, prompt_id: int) -> HttpResponse:
        run = run_selectors.run_get(user=request.user, pk=pk)
        prompt = sel.prompt_get(run, prompt_id)
        return _json(sel.prompt_history(run, prompt))


class RunDistributionsApi(APIView):
    @extend_schema(
        operation_id="runs_distributions",
        parameters=[
            PHASE_PARAMETER,
            OpenApiParameter(
                "bins",
                _int_schema(1, sel.MAX_BINS),
                description=f"histogram bins (default {sel.DEFAULT_BINS})",
            ),
        ],
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT)},
        description=(
            "Per step: response-length and reward histograms of the stored samples (`edges`: bin i holds "
            "edges[i] <= x < edges[i+1], the last bin closed; `counts[step][bin]`; lengths in whole "
            "tokens; `reward.missing`: samples without a reward) and the truncation rate (truncated / "
            "rollouts, from the aggregates retention keeps)."
        ),
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        query = sel.DistributionQuery.parse(request.query_params, strict=True)
        run = run_selectors.run_get(user=request.user, pk=pk)
        return _json(sel.distributions(run, query))


urlpatterns = [
    path("runs/<int:pk>/prompts/", RunPromptMatrixApi.as_view(), name="api-run-prompts"),
    path("runs/<int:pk>/prompts/matrix.csv", RunPromptMatrixCsvApi.as_view(), name="api-run-prompts-csv"),
    path("runs/<int:pk>/prompts/<int:prompt_id>/", RunPromptHistoryApi.as_view(), name="api-run-prompt"),
    path("runs/<int:pk>/distributions/", RunDistributionsApi.as_view(), name="api-run-distributions"),
]
