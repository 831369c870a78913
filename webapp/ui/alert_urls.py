"""Page routes: alert (issue 15/16 work; owned by one helper)."""

urlpatterns: list = []
