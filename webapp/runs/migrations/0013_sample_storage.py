"""Issue 14, ingest speed (P14): the completions' full-text index leaves the insert path.

- ``SampleSearch`` (sample id, run id and, on PostgreSQL, ``tsv`` = to_tsvector('simple', completion)
  with a GIN index): filled after commit by webapp.runs.sample_search from the queue
  ``SampleSearchPending`` (one row per ingest batch). Its rows go with their sample by the database's
  ON DELETE CASCADE (retention and a resume delete samples with raw SQL).
- ``sample_completion_fts`` (the expression GIN on runs_sample, ~25x the COPY's own cost) dropped;
  the existing rows' vectors are written here, so every stored sample is searchable at once.
"""

import django.db.models.deletion
from django.db import migrations, models

FORWARD_SQL = [
    "ALTER TABLE runs_samplesearch ADD COLUMN tsv tsvector NOT NULL DEFAULT ''::tsvector",
    "ALTER TABLE runs_samplesearch ALTER COLUMN tsv DROP DEFAULT",
    # the sample's row takes its vector with it (retention, a resume's redone steps, a run's deletion)
    "ALTER TABLE runs_samplesearch ADD CONSTRAINT runs_samplesearch_sample_cascade "
    "FOREIGN KEY (sample_id) REFERENCES runs_sample (id) ON DELETE CASCADE",
    "INSERT INTO runs_samplesearch (sample_id, run_id, tsv) "
    "SELECT id, run_id, to_tsvector('simple', completion) FROM runs_sample",
    "CREATE INDEX samplesearch_tsv ON runs_samplesearch USING gin (tsv) "
    "WITH (fastupdate = on, gin_pending_list_limit = 65536)",
    "DROP INDEX IF EXISTS sample_completion_fts",
]
REVERSE_SQL = [
    "CREATE INDEX IF NOT EXISTS sample_completion_fts ON runs_sample USING gin (to_tsvector('simple', completion))",
    "DROP INDEX IF EXISTS samplesearch_tsv",
    "ALTER TABLE runs_samplesearch DROP CONSTRAINT IF EXISTS runs_samplesearch_sample_cascade",
    "ALTER TABLE runs_samplesearch DROP COLUMN IF EXISTS tsv",
]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for sql in FORWARD_SQL:
        schema_editor.execute(sql)


def reverse(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for sql in REVERSE_SQL:
        schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("runs", "0012_sample_group_status_sort_indexes")]

    operations = [
        migrations.CreateModel(
            name="SampleSearch",
            fields=[
                (
                    "sample",
                    models.OneToOneField(
                        db_constraint=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to="runs.sample",
                    ),
                ),
                (
                    "run",
                    models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="+",
                        to="runs.run",
                    ),
                ),
            ],
        ),
        migrations.CreateModel(
            name="SampleSearchPending",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("first_id", models.BigIntegerField()),
                ("last_id", models.BigIntegerField()),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="runs.run"
                    ),
                ),
            ],
        ),
        migrations.RunPython(forward, reverse),
    ]
