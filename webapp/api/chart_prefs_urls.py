"""API routes: chart_prefs (issue 15/16 work; owned by one helper)."""

urlpatterns: list = []
