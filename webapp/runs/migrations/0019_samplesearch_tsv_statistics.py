"""The completions' vectors keep word statistics for 10x as many words (issue 14 at 1M samples).

At the default statistics target (100), ANALYZE keeps ~1,000 lexemes of ``runs_samplesearch.tsv``; a
word outside them (at 1M samples: any word in under ~3 % of the rows) is estimated at a fixed 0.5 %,
so the planner misjudged the common words of a large run. At 1000 the estimate of a word in 2 % of a
1M run was 19,283 rows (real 19,990). ANALYZE of the table costs ~12 s at 1M (once here; autovacuum's
later ones the same). The selector no longer relies on this estimate to choose walk vs bitmap
(webapp.selectors.samples counts), but the planner's plans for word searches do."""

from django.db import migrations

FORWARD_SQL = [
    "ALTER TABLE runs_samplesearch ALTER COLUMN tsv SET STATISTICS 1000",
    "ANALYZE runs_samplesearch",
]
REVERSE_SQL = ["ALTER TABLE runs_samplesearch ALTER COLUMN tsv SET STATISTICS -1"]


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":  # SQLite (embedded mode): no statistics targets
        return
    for sql in FORWARD_SQL:
        schema_editor.execute(sql)


def reverse(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for sql in REVERSE_SQL:
        schema_editor.execute(sql)


class Migration(migrations.Migration):
    dependencies = [("runs", "0018_sample_drop_redundant_indexes")]

    operations = [migrations.RunPython(forward, reverse)]
