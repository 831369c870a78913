"""issue 15 eval policy per run (E1): a run's evaluation policy (webapp.runs.models_eval.EvalPolicy)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("datasets", "0008_pair_search_filled_by_import"),
        ("runs", "0013_sample_storage"),
    ]

    operations = [
        migrations.CreateModel(
            name="EvalPolicy",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("every", models.PositiveIntegerField(default=1)),
                ("n", models.PositiveIntegerField(blank=True, null=True)),
                ("ks", models.JSONField(blank=True, default=list)),
                ("temperature", models.FloatField(blank=True, null=True)),
                ("top_p", models.FloatField(blank=True, null=True)),
                ("max_new_tokens", models.PositiveIntegerField(blank=True, null=True)),
                ("enabled", models.BooleanField(default=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "benchmarks",
                    models.ManyToManyField(blank=True, related_name="eval_policies", to="datasets.dataset"),
                ),
                (
                    "run",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE, related_name="eval_policy", to="runs.run"
                    ),
                ),
            ],
        ),
    ]
