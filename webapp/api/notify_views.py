"""Notification channels of a project (owners manage them, members see them), a test send, and the
deliveries with their status, attempts and last error (webapp.notify)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.api import notify_serializers as ns
from webapp.api.common import _int_param
from webapp.notify import services
from webapp.notify.models import Channel, Delivery
from webapp.projects.models import Project
from webapp.projects.selectors import project_list
from webapp.runs.services import RunError

FORBIDDEN = OpenApiResponse(description="a member, not an owner, of the project")


def _project(request: Request, pk: int) -> Project:
    try:
        return project_list(user=request.user).get(pk=pk)
    except Project.DoesNotExist:
        raise Http404("no such project") from None  # the same answer for "not yours"


def _channel(request: Request, pk: int) -> Channel:
    try:
        return Channel.objects.select_related("project").get(
            pk=pk, project__in=project_list(user=request.user)
        )
    except Channel.DoesNotExist:
        raise Http404("no such channel") from None


def _written(request: Request, *, partial: bool) -> dict:
    ser = ns.ChannelWriteSerializer(data=request.data, partial=partial)
    ser.is_valid(raise_exception=True)
    return dict(ser.validated_data)


class ChannelListApi(APIView):
    @extend_schema(responses=ns.ChannelSerializer(many=True))
    def get(self, request: Request, project_id: int) -> Response:
        project = _project(request, project_id)
        channels = Channel.objects.filter(project=project).order_by("name", "id")
        return Response(ns.ChannelSerializer(channels, many=True).data)

    @extend_schema(request=ns.ChannelWriteSerializer, responses={201: ns.ChannelSerializer, 403: FORBIDDEN})
    def post(self, request: Request, project_id: int) -> Response:
        project = _project(request, project_id)
        channel, generated = services.channel_create(
            user=request.user, project=project, data=_written(request, partial=False)
        )
        data = ns.ChannelSerializer(channel, context={"generated_secret": generated}).data
        return Response(data, status=status.HTTP_201_CREATED)


class ChannelDetailApi(APIView):
    @extend_schema(responses=ns.ChannelSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(ns.ChannelSerializer(_channel(request, pk)).data)

    @extend_schema(request=ns.ChannelWriteSerializer, responses={200: ns.ChannelSerializer, 403: FORBIDDEN})
    def patch(self, request: Request, pk: int) -> Response:
        channel = services.channel_update(
            user=request.user, channel=_channel(request, pk), data=_written(request, partial=True)
        )
        return Response(ns.ChannelSerializer(channel).data)

    @extend_schema(request=None, responses={204: None, 403: FORBIDDEN})
    def delete(self, request: Request, pk: int) -> Response:
        services.channel_delete(user=request.user, channel=_channel(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class ChannelTestApi(APIView):
    @extend_schema(request=None, responses={202: ns.DeliverySerializer, 403: FORBIDDEN})
    def post(self, request: Request, pk: int) -> Response:
        delivery = services.send_test(user=request.user, channel=_channel(request, pk))
        delivery = Delivery.objects.select_related("channel").get(pk=delivery.pk)
        return Response(ns.DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)


class DeliveryListApi(generics.ListAPIView):
    """Newest first; ``?channel=`` and ``?status=`` narrow it."""

    serializer_class = ns.DeliverySerializer
    queryset = Delivery.objects.none()  # for the schema generator; requests use get_queryset()

    @extend_schema(
        parameters=[
            OpenApiParameter("channel", int, description="only this channel's deliveries"),
            OpenApiParameter("status", str, enum=list(Delivery.Status.values)),
        ]
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        request = self.request
        project = _project(request, self.kwargs["project_id"])
        rows = Delivery.objects.filter(channel__project=project).select_related("channel").order_by("-id")
        channel = _int_param(request, "channel", 1, 2**63 - 1)
        if channel is not None:
            rows = rows.filter(channel_id=channel)
        wanted = request.query_params.getlist("status")
        if wanted:
            if len(wanted) > 1 or wanted[0] not in Delivery.Status.values:
                raise RunError("invalid query", {"status": [f"one of {', '.join(Delivery.Status.values)}"]})
            rows = rows.filter(status=wanted[0])
        return rows
