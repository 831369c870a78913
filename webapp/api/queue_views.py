"""The queue view's API (issue 16 point 5; webapp/runs/queue.py has the order and the rules):

- ``GET /api/queues/?project=<id>``: per queue its workers with their slots, the running and the
  waiting in the order the workers take them; the caller's projects' runs and jobs named (only
  project ``id``'s when given), the others counted;
- ``GET /api/runs/{id}/queue-position/``: a queued run's position on its queue ("3 of 5 on cpu", with
  how many of the runs ahead are of other projects), or the run it waits for."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.api.common import _int_param, _resolve_project
from webapp.runs import selectors
from webapp.runs.queue import queues_overview, run_queue_position


class QueueWorkerSerializer(serializers.Serializer):
    name = serializers.CharField()
    host = serializers.CharField()
    slots = serializers.IntegerField(help_text="tasks it runs at once")
    queues = serializers.ListField(child=serializers.CharField())
    gpus = serializers.IntegerField()


class QueueItemSerializer(serializers.Serializer):
    kind = serializers.CharField(help_text="run, evaluation, scoring or import")
    id = serializers.IntegerField()
    name = serializers.CharField()
    project = serializers.IntegerField()
    url = serializers.CharField(allow_null=True, help_text="its page (an evaluation's or scoring job's run)")
    position = serializers.IntegerField(required=False, help_text="1 = next to start")


class WaitingEntrySerializer(serializers.Serializer):
    named = serializers.BooleanField(help_text="false: consecutive items of projects not shown, counted")
    kind = serializers.CharField(required=False)
    id = serializers.IntegerField(required=False)
    name = serializers.CharField(required=False)
    project = serializers.IntegerField(required=False)
    url = serializers.CharField(required=False, allow_null=True)
    position = serializers.IntegerField(required=False)
    first = serializers.IntegerField(required=False, help_text="unnamed: first position of the stretch")
    last = serializers.IntegerField(required=False)
    count = serializers.IntegerField(required=False)
    text = serializers.CharField(required=False, help_text='e.g. "3 runs of other projects"')


class QueueSerializer(serializers.Serializer):
    queue = serializers.CharField()
    workers = QueueWorkerSerializer(many=True)
    slots = serializers.IntegerField(help_text="slots of the fresh workers consuming the queue")
    running = QueueItemSerializer(many=True)
    running_other = serializers.IntegerField(help_text="running items of projects not shown")
    waiting = WaitingEntrySerializer(many=True)
    waiting_count = serializers.IntegerField()
    waiting_named = serializers.IntegerField()


class QueuePositionSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    queue = serializers.CharField()
    position = serializers.IntegerField()
    total = serializers.IntegerField(help_text="items waiting on the queue, every project's")
    ahead_named = QueueItemSerializer(many=True)
    ahead_other_projects = serializers.IntegerField()
    running = serializers.IntegerField()
    slots = serializers.IntegerField()
    workers = serializers.IntegerField()


class RunQueueStateSerializer(serializers.Serializer):
    run = serializers.IntegerField()
    status = serializers.CharField()
    queued = QueuePositionSerializer(allow_null=True, help_text="null unless the run is queued")
    waiting_for = serializers.JSONField(
        allow_null=True, help_text="{id, name, status} of the run it waits for"
    )


class QueuesApi(APIView):
    @extend_schema(
        operation_id="queues_list",
        parameters=[
            OpenApiParameter(
                "project",
                {"type": "integer", "minimum": 1, "maximum": 2**53},
                description="name only this project's runs and jobs (one of yours: else a 400)",
            )
        ],
        responses={200: QueueSerializer(many=True)},
    )
    def get(self, request: Request):
        """Every queue: workers and slots, what runs, what waits in the order the workers take it."""
        project_id = _int_param(request, "project", 1, 2**53)
        if project_id is not None:
            project_id = _resolve_project(request.user, project_id).pk
        return Response(QueueSerializer(queues_overview(request.user, project_id), many=True).data)


class RunQueuePositionApi(APIView):
    @extend_schema(operation_id="run_queue_position", responses={200: RunQueueStateSerializer})
    def get(self, request: Request, pk: int):
        """Why a run waits: its position on its queue, or the run it waits for."""
        run = selectors.run_get(user=request.user, pk=pk)
        body = {
            "run": run.pk,
            "status": run.status,
            "queued": run_queue_position(run, request.user),
            "waiting_for": run.waiting_for if run.status == run.Status.WAITING else None,
        }
        return Response(RunQueueStateSerializer(body).data)
