"""GET/PUT /api/runs/{id}/eval-policy/: a run's evaluation policy (issue 15 point 4,
webapp.runs.eval_policy). Any member of the run's project reads and edits it; other users get 404, as
for the run itself."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.api import serializers as s
from webapp.runs import eval_policy, selectors


class RunEvalPolicyApi(APIView):
    """A run's evaluation policy: which benchmarks its every N-th checkpoint is evaluated on (a job on
    the `eval` queue when the checkpoint is saved), with n samples per problem, the k values of
    pass@k / pass^k / maj@k and the sampling settings (null: the run's own, shown in ``defaults``).
    A run without one reads as ``enabled: false``. PUT replaces it (fields left out take their
    defaults); a dataset of another project, k > n or a run kind without policy checkpoints is a 400."""

    @extend_schema(responses={200: s.EvalPolicyOutSerializer})
    def get(self, request: Request, pk: int) -> Response:
        run = selectors.run_get(user=request.user, pk=pk)
        return Response(eval_policy.policy_to_dict(run, eval_policy.policy_of(run)))

    @extend_schema(request=s.EvalPolicySerializer, responses={200: s.EvalPolicyOutSerializer})
    def put(self, request: Request, pk: int) -> Response:
        run = selectors.run_get(user=request.user, pk=pk)
        ser = s.EvalPolicySerializer(data=request.data)
        ser.is_valid(raise_exception=True)
        policy = eval_policy.policy_set(run, ser.validated_data)  # a PolicyError is a 400
        return Response(eval_policy.policy_to_dict(run, eval_policy.policy_of(run) or policy))
