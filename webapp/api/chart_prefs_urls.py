"""API routes of the run page's charts (issue 16 points 2, 6, 7): chart preferences per project,
chart markers and the metrics CSV of a run (webapp.api.chart_prefs_views)."""

from django.urls import path

from webapp.api import chart_prefs_views as v

urlpatterns: list = [
    path("projects/<int:pk>/chart-prefs/", v.ChartPrefsApi.as_view(), name="api-chart-prefs"),
    path("runs/<int:pk>/chart-markers/", v.RunChartMarkersApi.as_view(), name="api-run-chart-markers"),
    path("runs/<int:pk>/metrics.csv", v.RunMetricsCsvApi.as_view(), name="api-run-metrics-csv"),
]
