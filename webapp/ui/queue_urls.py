"""Page routes: the queue view (issue 16 point 5)."""

from django.urls import path

from webapp.ui import queue_views

urlpatterns: list = [
    path("queues/", queue_views.queues, name="queues"),
    path("projects/<int:pk>/queues/", queue_views.project_queues, name="project-queues"),
]
