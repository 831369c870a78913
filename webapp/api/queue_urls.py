"""API routes: the queue view (issue 16 point 5)."""

from django.urls import path

from webapp.api.queue_views import QueuesApi, RunQueuePositionApi

urlpatterns: list = [
    path("queues/", QueuesApi.as_view(), name="api-queues"),
    path("runs/<int:pk>/queue-position/", RunQueuePositionApi.as_view(), name="api-run-queue-position"),
]
