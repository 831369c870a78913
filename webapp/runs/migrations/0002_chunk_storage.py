"""Chunk payloads are float/int arrays that pglz cannot shrink: store them uncompressed (EXTERNAL)
so PostgreSQL does not spend CPU trying on every write and read."""

from django.db import migrations


def set_storage(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for column in ("steps", "values", "walls"):
        schema_editor.execute(f'ALTER TABLE runs_metricchunk ALTER COLUMN "{column}" SET STORAGE EXTERNAL')


class Migration(migrations.Migration):
    dependencies = [("runs", "0001_initial")]
    operations = [migrations.RunPython(set_storage, migrations.RunPython.noop)]
