"""Run-page chart preferences: pins per user per project (issue 16 point 2)."""

from django.conf import settings
from django.db import models

from webapp.projects.models import Project

__all__ = ["ChartPrefs"]


class ChartPrefs(models.Model):
    """One user's run-page chart layout in one project: the metric keys pinned on top and the
    metric-prefix sections collapsed. Per project, not per run: the runs of a project log the same
    keys, so a chart pinned on one run's page is pinned on its siblings' too."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="chart_prefs")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chart_prefs")
    pinned = models.JSONField(
        default=list, blank=True, help_text="metric keys, in the order they were pinned"
    )
    collapsed = models.JSONField(default=list, blank=True, help_text="section names (metric key prefixes)")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="chartprefs_project_user")]
