"""API routes: checkpoint_download (issue 15/16 work; owned by one helper)."""

urlpatterns: list = []
