"""API routes: checkpoint downloads (issue 16 point 8)."""

from django.urls import path

from webapp.api.checkpoint_download_views import CheckpointDownloadApi, RunCheckpointDownloadsApi

urlpatterns: list = [
    path("checkpoints/<int:pk>/download/", CheckpointDownloadApi.as_view(), name="api-checkpoint-download"),
    path(
        "runs/<int:pk>/checkpoint-downloads/",
        RunCheckpointDownloadsApi.as_view(),
        name="api-run-checkpoint-downloads",
    ),
]
