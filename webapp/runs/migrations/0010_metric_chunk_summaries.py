"""Summary columns on MetricChunk (webapp.runs.summaries), filled in for the chunks already stored.

The backfill reads each chunk once, in batches; readers also fall back to the points for any chunk
whose summaries are still null, so a partly migrated database reads correctly."""

import numpy as np
from django.db import migrations, models

BATCH = 500


def backfill(apps, schema_editor):
    from webapp.runs.summaries import summarize

    MetricChunk = apps.get_model("runs", "MetricChunk")
    todo = MetricChunk.objects.filter(summary_4096__isnull=True).order_by("id")
    last = 0
    while True:
        batch = list(todo.filter(id__gt=last)[:BATCH].only("id", "steps", "values", "walls"))
        if not batch:
            return
        for chunk in batch:
            fields = summarize(
                np.frombuffer(bytes(chunk.steps), dtype="<i8"),
                np.frombuffer(bytes(chunk.values), dtype="<f8"),
                np.frombuffer(bytes(chunk.walls), dtype="<f8"),
            )
            for name, value in fields.items():
                setattr(chunk, name, value)
        MetricChunk.objects.bulk_update(batch, ["summary_64", "summary_256", "summary_1024", "summary_4096"])
        last = batch[-1].id


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0009_run_attempts_interrupt"),
    ]

    operations = [
        migrations.AddField(model_name="metricchunk", name="summary_64", field=models.BinaryField(null=True)),
        migrations.AddField(
            model_name="metricchunk", name="summary_256", field=models.BinaryField(null=True)
        ),
        migrations.AddField(
            model_name="metricchunk", name="summary_1024", field=models.BinaryField(null=True)
        ),
        migrations.AddField(
            model_name="metricchunk", name="summary_4096", field=models.BinaryField(null=True)
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
