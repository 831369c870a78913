"""Issue 14's rollout samples in the API, read through the shared selector (webapp.selectors.samples):

  GET /api/runs/{id}/samples/                         the samples list (RunSamplesApi in run_views takes
                                                      its GET from SampleListMixin; its POST is ingest)
  GET /api/runs/{id}/samples/groups/{step}/{group}/   the n completions of one prompt at one step, the
                                                      group's status and why it was kept or filtered
  GET /api/runs/{id}/samples/{sample_id}/tokens/      one sample's per-token log-probs and entropies

Only runs of the user's projects; any other run or sample is a 404."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.api import serializers as s
from webapp.api.pagination import CappedCountPagination
from webapp.errors import ServiceError
from webapp.runs import selectors as run_selectors
from webapp.runs.models import SAMPLE_VERDICTS, Sample, SampleTokens
from webapp.selectors import samples as sq

# --- the list ---------------------------------------------------------------------------------------


class SampleRowSerializer(s.SampleSerializer):
    """One sample as the list returns it: the stored sample, its prompt's expected answer, and whether
    per-token arrays are stored (the tokens endpoint)."""

    expected_answer = serializers.SerializerMethodField()
    has_tokens = serializers.BooleanField(read_only=True, help_text="per-token arrays are stored")

    class Meta(s.SampleSerializer.Meta):
        fields = [*s.SampleSerializer.Meta.fields, "expected_answer", "has_tokens"]

    def get_expected_answer(self, obj) -> str:
        return sq.expected_answer(obj)


class SamplePagination(CappedCountPagination):
    """Counts stop a little past the requested page (at least selectors.samples.COUNT_CAP):
    ``count_capped`` then says ``count`` is a lower bound."""

    query_attr = "sample_query"


def _int_schema(hi: int) -> dict:
    return {"type": "integer", "minimum": 0, "maximum": hi}


SAMPLE_QUERY_PARAMETERS = [
    OpenApiParameter("step", _int_schema(sq.MAX_STEP), description="one step"),
    OpenApiParameter("step_min", _int_schema(sq.MAX_STEP), description="steps >= step_min"),
    OpenApiParameter("step_max", _int_schema(sq.MAX_STEP), description="steps <= step_max"),
    OpenApiParameter("phase", str, enum=list(sq.PHASES), description="training or evaluation rollouts"),
    OpenApiParameter("verdict", str, description=f"comma-separated, of {', '.join(SAMPLE_VERDICTS)}"),
    OpenApiParameter("truncated", str, enum=["true", "false"]),
    OpenApiParameter("finish_reason", str, enum=list(sq.FINISH_REASONS)),
    OpenApiParameter(
        "group_status",
        str,
        enum=list(sq.GROUP_STATUSES),
        description="zero_variance: every group whose rewards are all equal (solved_all and unsolved_all "
        "included); kept: the groups whose rewards differ",
    ),
    OpenApiParameter(
        "high_reward_wrong", float, description="reward >= this and a verdict other than correct"
    ),
    OpenApiParameter("data_source", {"type": "string", "maxLength": sq.MAX_QUERY_CHARS}),
    OpenApiParameter("min_len", _int_schema(sq.MAX_LEN), description="length in tokens >= min_len"),
    OpenApiParameter("max_len", _int_schema(sq.MAX_LEN), description="length in tokens <= max_len"),
    OpenApiParameter(
        "q",
        {"type": "string", "maxLength": sq.MAX_QUERY_CHARS},
        description="words of the prompt or completion (PostgreSQL full text, 'simple' configuration, "
        'web-search syntax: "a phrase", or, -word; SQLite: a substring)',
    ),
    OpenApiParameter(
        "contains",
        {"type": "string", "minLength": sq.MIN_CONTAINS_CHARS, "maxLength": sq.MAX_QUERY_CHARS},
        description="a literal substring of the prompt or completion, case-insensitive (e.g. \\boxed{42})",
    ),
    OpenApiParameter(
        "ordering",
        str,
        enum=[f"{d}{k}" for k in sq.SAMPLE_SORT_KEYS for d in ("", "-")],
        description="ties by id; no reward or advantage: listed last",
    ),  # fmt: skip
]


class SampleListMixin:
    """GET of /api/runs/{id}/samples/: the samples selected as the samples page selects them."""

    filter_backends: list = []
    pagination_class = SamplePagination
    sample_query: sq.SampleQuery | None = None

    @extend_schema(
        parameters=SAMPLE_QUERY_PARAMETERS,
        responses=SampleRowSerializer,
        description="Samples, filtered, searched and sorted as the samples page does "
        "(webapp.selectors.samples). A bad parameter is a 400 naming it. Counts stop at "
        f"{sq.COUNT_CAP:,} or a little past the requested page (count_capped).",
    )
    def get(self, request, *args, **kwargs):
        run = run_selectors.run_get(user=request.user, pk=self.kwargs["pk"])
        self.sample_query = sq.SampleQuery(request.query_params, run, strict=True)
        # the page's ids first (a sort carries no texts), then those rows whole
        page = self.paginate_queryset(self.sample_query.queryset().only("id"))
        rows = sq.full_rows([sample.pk for sample in page])
        return self.get_paginated_response(SampleRowSerializer(rows, many=True).data)

    def get_queryset(self):  # for the schema generator (the GET builds its own)
        return Sample.objects.none()


# --- one group ----------------------------------------------------------------------------------------


class GroupMemberSerializer(SampleRowSerializer):
    pass


class GroupSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    step = serializers.IntegerField()
    group_index = serializers.IntegerField()
    phase = serializers.CharField()
    phases = serializers.ListField(child=serializers.CharField(), help_text="phases with this step and group")
    n = serializers.IntegerField()
    solved = serializers.IntegerField(help_text="members whose verdict is correct")
    status = serializers.CharField(help_text=f"one of {', '.join(sq.GROUP_STATUSES)}")
    status_from_trainer = serializers.BooleanField(help_text="the trainer sent the status (else derived)")
    reason = serializers.CharField()
    reward_mean = serializers.FloatField(allow_null=True)
    reward_std = serializers.FloatField(allow_null=True)
    prompt_id = serializers.IntegerField(allow_null=True)
    prompt = serializers.CharField()
    expected_answer = serializers.CharField()
    reward_components = serializers.ListField(child=serializers.CharField())
    prev_group = serializers.IntegerField(allow_null=True)
    next_group = serializers.IntegerField(allow_null=True)
    members = GroupMemberSerializer(many=True)


def group_payload(group: sq.Group) -> dict:
    stats = group.reward_stats
    around = sq.neighbour_groups(group.run, group.step, group.group_index, group.phase)
    prompt = group.prompt
    return {
        "run": group.run.id,
        "step": group.step,
        "group_index": group.group_index,
        "phase": group.phase,
        "phases": group.phases,
        "n": group.n,
        "solved": group.solved,
        "status": group.status,
        "status_from_trainer": group.sent_status,
        "reason": group.reason,
        "reward_mean": stats["mean"],
        "reward_std": stats["std"],
        "prompt_id": prompt.id if prompt else None,
        "prompt": group.prompt_text,
        "expected_answer": group.expected_answer,
        "reward_components": group.components,
        "prev_group": around["prev"],
        "next_group": around["next"],
        "members": GroupMemberSerializer(group.members, many=True).data,
    }


class SampleGroupApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "phase", str, enum=list(sq.PHASES), description="default: training, else evaluation"
            )
        ],
        responses=GroupSerializer,
        description="The n completions of one prompt at one step (ordered by member index), the group's "
        "status (kept, zero_variance, solved_all, unsolved_all) and why it was kept or filtered.",
    )
    def get(self, request: Request, pk: int, step: int, group: int) -> Response:
        run = run_selectors.run_get(user=request.user, pk=pk)
        values = request.query_params.getlist("phase")
        phase = values[0] if values else ""
        if values and (len(values) > 1 or phase not in sq.PHASES):
            raise ServiceError("invalid query", {"phase": [f"one of {', '.join(sq.PHASES)}, given once"]})
        found = sq.group_get(run, step, group, phase)
        if found is None:
            raise Http404("no such group")
        return Response(group_payload(found))


# --- one sample's tokens ------------------------------------------------------------------------------


class TokenSerializer(serializers.Serializer):
    i = serializers.IntegerField(help_text="token index (-1: text before the first token)")
    offset = serializers.IntegerField(help_text="character offset in the completion")
    text = serializers.CharField()
    logprob = serializers.FloatField(allow_null=True)
    entropy = serializers.FloatField(allow_null=True)
    engine_logprob = serializers.FloatField(allow_null=True)
    gap = serializers.FloatField(allow_null=True, help_text="engine - trainer log-prob")


class GapSerializer(serializers.Serializer):
    tokens = serializers.IntegerField()
    mean = serializers.FloatField()
    mean_abs = serializers.FloatField()
    max_abs = serializers.FloatField()


class SampleTokensSerializer(serializers.Serializer):
    sample = serializers.IntegerField()
    step = serializers.IntegerField()
    has_logprobs = serializers.BooleanField()
    has_entropies = serializers.BooleanField()
    has_engine_logprobs = serializers.BooleanField()
    tokens = TokenSerializer(many=True)
    top_entropy = TokenSerializer(many=True, help_text="the highest-entropy tokens")
    gap = GapSerializer(allow_null=True, help_text="engine vs trainer log-prob, where both are logged")
    top_gap = TokenSerializer(many=True)


def sample_for(request, pk: int, sample_id: int) -> Sample:
    run = run_selectors.run_get(user=request.user, pk=pk)
    sample = Sample.objects.filter(run=run, pk=sample_id).first()
    if sample is None:
        raise Http404("no such sample")
    return sample


def tokens_payload(sample: Sample, view: sq.TokenView) -> dict:
    return {
        "sample": sample.id,
        "step": sample.step,
        "has_logprobs": view.has_logprobs,
        "has_entropies": view.has_entropies,
        "has_engine_logprobs": view.has_engine,
        "tokens": view.tokens,
        "top_entropy": view.top_entropy(),
        "gap": view.gap_summary(),
        "top_gap": view.top_gap(),
    }


class SampleTokensApi(APIView):
    @extend_schema(
        responses=SampleTokensSerializer,
        description="One sample's completion cut into tokens with their log-prob, entropy and (where "
        "the rollout engine's log-probs were logged) the engine - trainer gap. 404: no such sample "
        "among yours, or no per-token arrays stored for it.",
    )
    def get(self, request: Request, pk: int, sample_id: int) -> Response:
        sample = sample_for(request, pk, sample_id)
        tokens = SampleTokens.objects.filter(sample=sample).first()
        if tokens is None:
            raise Http404("no per-token arrays for this sample")
        return Response(tokens_payload(sample, sq.token_view(sample, tokens)))
