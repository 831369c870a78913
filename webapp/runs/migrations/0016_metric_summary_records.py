"""Summary records in their compact layout (webapp.runs.summaries: step offsets, values, then walls;
80 bytes a record instead of 96): every chunk's summaries are recomputed from its points.

The backfill of 0010 does the work (it summarizes with the current code, in batches); the summaries
are cleared first so it visits every chunk. Both directions recompute, so the records always match
the code that reads them."""

import importlib

from django.db import migrations

LEVEL_COLUMNS = ("summary_64", "summary_256", "summary_1024", "summary_4096")


def resummarize(apps, schema_editor):
    MetricChunk = apps.get_model("runs", "MetricChunk")
    MetricChunk.objects.update(**dict.fromkeys(LEVEL_COLUMNS))
    importlib.import_module("webapp.runs.migrations.0010_metric_chunk_summaries").backfill(
        apps, schema_editor
    )


class Migration(migrations.Migration):
    dependencies = [("runs", "0015_chart_pins")]

    operations = [migrations.RunPython(resummarize, resummarize)]
