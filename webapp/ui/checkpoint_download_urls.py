"""Page routes: checkpoint downloads (issue 16 point 8; the run page's checkpoints table links here)."""

from django.urls import path

from webapp.ui.checkpoint_download_views import checkpoint_download

urlpatterns: list = [
    path("checkpoints/<int:pk>/download/", checkpoint_download, name="checkpoint-download"),
]
