"""issue 16 chart pins (U1): one row per user and project holding the run page's pinned charts and
collapsed sections (webapp.runs.models_charts.ChartPrefs)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0014_eval_policy"),
        ("projects", "0002_project_owner"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ChartPrefs",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "pinned",
                    models.JSONField(
                        blank=True, default=list, help_text="metric keys, in the order they were pinned"
                    ),
                ),
                (
                    "collapsed",
                    models.JSONField(
                        blank=True, default=list, help_text="section names (metric key prefixes)"
                    ),
                ),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "project",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="chart_prefs",
                        to="projects.project",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="chart_prefs",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("project", "user"), name="chartprefs_project_user")
                ],
            },
        ),
    ]
