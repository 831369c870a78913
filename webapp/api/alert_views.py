"""Health rules and events over REST (issue 15 points 1-2): rules per project (create, read, update,
delete, presets), mutes, events per run / per project / of compared runs, acknowledge.

Access follows the rest of the API: a project's members (owners included) read and write its rules
and events; anything outside the user's projects is a 404, bad input a 400 naming the field."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.alerts import presets, services
from webapp.alerts.models import Event, Mute, Rule
from webapp.api.common import _bool_param, _int_param
from webapp.api.pagination import PageNumberPagination
from webapp.api.table_views import _ids
from webapp.projects.selectors import project_list
from webapp.runs import selectors
from webapp.runs.models import Run

MAX_ID = 2**63 - 1
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}


class RuleSerializer(serializers.ModelSerializer):
    kind = serializers.ChoiceField(choices=Rule.Kind.choices)
    key = serializers.CharField(
        max_length=255, allow_blank=True, required=False, default="",
        help_text="a metric key, or @alias (GET /api/alert-presets/ lists them); empty for stalled",
    )  # fmt: skip
    params = serializers.DictField(
        required=False, default=dict,
        help_text="threshold: op (> >= < <=), value; change: window, amount, relative, direction; zscore: z, "
        "direction (up/down/both), min_points; stalled: seconds; collapse: ratio, window, floor, smooth, "
        "min_points; nan_inf: none",
    )  # fmt: skip
    severity = serializers.ChoiceField(choices=Rule.Severity.choices, required=False, default="warning")
    run_kind = serializers.CharField(max_length=64, allow_blank=True, required=False, default="")
    run_group = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")
    run_tag = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")
    run = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, allow_null=True, required=False, default=None,
        source="run_id", help_text="only this run (of the rule's project)",
    )  # fmt: skip
    enabled = serializers.BooleanField(required=False, default=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Rule
        fields = [
            "id", "project", "name", "kind", "key", "params", "severity", "run_kind", "run_group", "run_tag",
            "run", "enabled", "preset", "created_by", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = ["id", "project", "preset", "created_by", "created_at", "updated_at"]


class EventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    run_id = serializers.IntegerField()
    step = serializers.IntegerField(allow_null=True)
    key = serializers.CharField(allow_blank=True, help_text="empty for stalled events (no key)")
    rule_id = serializers.IntegerField(allow_null=True)
    rule_name = serializers.CharField()
    severity = serializers.CharField()
    message = serializers.CharField(allow_blank=True)
    value = serializers.FloatField(allow_null=True)
    created_at = serializers.DateTimeField()
    acknowledged = serializers.BooleanField()


class EventPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = EventSerializer(many=True)


class MuteSerializer(serializers.ModelSerializer):
    run = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, allow_null=True, required=False, default=None, source="run_id",
        help_text="mute for this run only; null: for every run",
    )  # fmt: skip
    until = serializers.DateTimeField(
        allow_null=True, required=False, default=None, help_text="null: until unmuted"
    )

    class Meta:
        model = Mute
        fields = ["id", "rule", "run", "until", "created_at"]
        read_only_fields = ["id", "rule", "created_at"]


class UnmuteSerializer(serializers.Serializer):
    run = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, allow_null=True, required=False, default=None
    )


class PresetApplySerializer(serializers.Serializer):
    preset = serializers.ChoiceField(choices=presets.preset_names())
    run_kind = serializers.CharField(max_length=64, allow_blank=True, required=False, default="")
    run_group = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")
    run_tag = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")
    run = serializers.IntegerField(
        min_value=1, max_value=MAX_ID, allow_null=True, required=False, default=None
    )


def _project(request, pk):
    try:
        return project_list(user=request.user).get(pk=pk)
    except Exception:
        raise Http404("no such project") from None


def _rule(request, pk) -> Rule:
    try:
        return Rule.objects.select_related("project").get(pk=pk, project__in=project_list(user=request.user))
    except Rule.DoesNotExist:
        raise Http404("no such rule") from None


def _run_in(project_id: int, run_id: int | None, field: str = "run") -> Run | None:
    if run_id is None:
        return None
    run = Run.objects.filter(pk=run_id, project_id=project_id).first()
    if run is None:
        raise services.AlertError("invalid input", {field: ["no such run in this project"]})
    return run


def _rule_data(serializer) -> dict:
    data = dict(serializer.validated_data)
    if "run_id" in data:
        data["run"] = _run_in(serializer.context["project"].id, data.pop("run_id"))
    return data


def _events_page(request, view, qs) -> Response:
    acknowledged = request.query_params.get("acknowledged")
    if acknowledged is not None:
        qs = qs.filter(acknowledged_at__isnull=not _bool_param(request, "acknowledged"))
    if (rule := _int_param(request, "rule", 1, MAX_ID)) is not None:
        qs = qs.filter(rule_id=rule)
    paginator = PageNumberPagination()
    page = paginator.paginate_queryset(qs.order_by("-created_at", "-id"), request, view=view)
    return paginator.get_paginated_response([services.event_dict(e) for e in page])


EVENT_FILTERS = [
    OpenApiParameter("acknowledged", bool, description="true: only acknowledged; false: only open"),
    OpenApiParameter("rule", ID_SCHEMA, description="only this rule's events"),
    OpenApiParameter("page", {"type": "integer", "minimum": 1}),
    OpenApiParameter("page_size", {"type": "integer", "minimum": 1}),
]


class RuleListApi(APIView):
    """A project's health rules; POST creates one (201)."""

    @extend_schema(responses=RuleSerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        project = _project(request, pk)
        rules = Rule.objects.filter(project=project).select_related("created_by").order_by("name", "id")
        return Response(RuleSerializer(rules, many=True).data)

    @extend_schema(request=RuleSerializer, responses={201: RuleSerializer})
    def post(self, request: Request, pk: int) -> Response:
        project = _project(request, pk)
        serializer = RuleSerializer(data=request.data, context={"project": project})
        serializer.is_valid(raise_exception=True)
        rule = services.rule_save(project=project, user=request.user, data=_rule_data(serializer))
        return Response(RuleSerializer(rule).data, status=status.HTTP_201_CREATED)


class RuleDetailApi(APIView):
    """One rule: read, change (PATCH: the fields given), delete (its events stay, without it)."""

    @extend_schema(responses=RuleSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(RuleSerializer(_rule(request, pk)).data)

    @extend_schema(request=RuleSerializer, responses=RuleSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        rule = _rule(request, pk)
        serializer = RuleSerializer(rule, data=request.data, partial=True, context={"project": rule.project})
        serializer.is_valid(raise_exception=True)
        data = _rule_data(serializer)
        if "kind" in data and "params" not in data and data["kind"] != rule.kind:
            data["params"] = {}  # another kind's params would be refused as unknown: its defaults
        rule = services.rule_save(project=rule.project, user=request.user, data=data, rule=rule)
        return Response(RuleSerializer(rule).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.rule_delete(_rule(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class PresetListApi(APIView):
    """The RL presets (the rules each creates) and the alias table they match metric names through."""

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def get(self, request: Request) -> Response:
        return Response(
            {
                "presets": [
                    {"name": name, "title": title, "rules": rules}
                    for name, (title, rules) in presets.presets().items()
                ],
                "aliases": {
                    f"@{alias}": [s if isinstance(s, str) else list(s) for s in sources]
                    for alias, sources in presets.ALIASES.items()
                },
            }
        )


class PresetApplyApi(APIView):
    """Apply a preset to a project: creates its rules as ordinary rules (201), with an optional run
    filter."""

    @extend_schema(request=PresetApplySerializer, responses={201: RuleSerializer(many=True)})
    def post(self, request: Request, pk: int) -> Response:
        project = _project(request, pk)
        serializer = PresetApplySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        name = data.pop("preset")
        data["run"] = _run_in(project.id, data.pop("run"))
        rules = services.preset_apply(project=project, user=request.user, name=name, run_filter=data)
        return Response(RuleSerializer(rules, many=True).data, status=status.HTTP_201_CREATED)


class RuleMuteApi(APIView):
    """Mute a rule for one run or every run, until a time or until unmuted (201)."""

    @extend_schema(request=MuteSerializer, responses={201: MuteSerializer})
    def post(self, request: Request, pk: int) -> Response:
        rule = _rule(request, pk)
        serializer = MuteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        mute = services.mute_create(
            user=request.user,
            rule=rule,
            run=_run_in(rule.project_id, data.get("run_id")),
            until=data.get("until"),
        )
        return Response(MuteSerializer(mute).data, status=status.HTTP_201_CREATED)


class RuleUnmuteApi(APIView):
    """Remove the rule's mutes for one run (or, run null, its mutes for every run)."""

    @extend_schema(
        request=UnmuteSerializer,
        responses=inline_serializer("Unmuted", {"removed": serializers.IntegerField()}),
    )
    def post(self, request: Request, pk: int) -> Response:
        rule = _rule(request, pk)
        serializer = UnmuteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = _run_in(rule.project_id, serializer.validated_data.get("run"))
        return Response({"removed": services.mute_delete(rule=rule, run=run)})


class ProjectEventsApi(APIView):
    """A project's events, newest first."""

    @extend_schema(
        parameters=[*EVENT_FILTERS, OpenApiParameter("run", ID_SCHEMA, description="only this run's events")],
        responses=EventPageSerializer,
    )
    def get(self, request: Request, pk: int) -> Response:
        project = _project(request, pk)
        qs = Event.objects.filter(project=project)
        if (run := _int_param(request, "run", 1, MAX_ID)) is not None:
            qs = qs.filter(run_id=run)
        return _events_page(request, self, qs)


class RunEventsApi(APIView):
    """A run's events, newest first."""

    @extend_schema(parameters=EVENT_FILTERS, responses=EventPageSerializer)
    def get(self, request: Request, pk: int) -> Response:
        run = selectors.run_get(user=request.user, pk=pk)
        return _events_page(request, self, Event.objects.filter(run=run))


class EventAcknowledgeApi(APIView):
    """Acknowledge an event (acknowledging it again changes nothing)."""

    @extend_schema(request=None, responses=EventSerializer)
    def post(self, request: Request, pk: int) -> Response:
        qs = Event.objects.filter(pk=pk, project__in=project_list(user=request.user))
        if not qs.exists():
            raise Http404("no such event")
        services.events_acknowledge(user=request.user, events=qs)
        return Response(services.event_dict(qs.get()))


class CompareEventsApi(APIView):
    """The events of the compared runs (the compare page draws them as markers), oldest first."""

    @extend_schema(
        parameters=[
            OpenApiParameter("runs", str, required=True, description="comma-separated run ids (at most 100)")
        ],
        responses=inline_serializer("CompareEvents", {"events": EventSerializer(many=True)}),
    )
    def get(self, request: Request) -> Response:
        ids = _ids(request.query_params.get("runs", ""), "runs", 100)
        visible = set(selectors.run_list(user=request.user).filter(pk__in=ids).values_list("pk", flat=True))
        if missing := set(ids) - visible:
            raise Http404(f"no such run: {sorted(missing)}")
        rows = Event.objects.filter(run_id__in=ids).order_by("created_at", "id")[:5000]
        return Response({"events": [services.event_dict(e) for e in rows]})
