"""Completions as zstd frames with a per-run dictionary (webapp.runs.sample_text; issue 14 storage).

New rows store ``completion_z`` (+ ``completion_dict``) and leave ``completion`` empty. Existing rows
are NOT converted here: they keep their text in ``completion`` (``completion_z`` NULL) and every reader
handles both; ``webapp.runs.sample_text.recompress_run`` converts a run's rows when wanted (a data
migration of a large table would hold the deploy for minutes).

``completion_z`` is stored EXTERNAL: PostgreSQL never tries pglz on zstd frames (a row past TOAST's
~2 KB threshold moves its frame out of line uncompressed). Adding the nullable column and the
defaulted integer rewrites nothing (PostgreSQL 11+)."""

import django.db.models.deletion
from django.db import migrations, models


def external_storage(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE runs_sample ALTER COLUMN completion_z SET STORAGE EXTERNAL")


class Migration(migrations.Migration):
    dependencies = [("runs", "0016_metric_summary_records")]

    operations = [
        migrations.AddField(
            model_name="sample",
            name="completion_dict",
            field=models.IntegerField(default=0),
        ),
        migrations.AddField(
            model_name="sample",
            name="completion_z",
            field=models.BinaryField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="sample",
            name="completion",
            field=models.TextField(blank=True),
        ),
        migrations.CreateModel(
            name="SampleTextDictionary",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("data", models.BinaryField()),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="runs.run"
                    ),
                ),
            ],
        ),
        migrations.RunPython(external_storage, migrations.RunPython.noop),
    ]
