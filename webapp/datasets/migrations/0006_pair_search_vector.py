"""A stored tsvector column for pair search (PostgreSQL only).

The expression index of 0003 made PostgreSQL recompute to_tsvector for every candidate row it
rechecks, so a search for a common word took seconds on 100k pairs. A stored generated column is
computed once, at insert, and the GIN index is built on it."""

from django.db import migrations

EXPRESSION = "to_tsvector('english', prompt || ' ' || chosen_text)"


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS pair_search_gin")
    schema_editor.execute(
        f"ALTER TABLE datasets_preferencepair ADD COLUMN search tsvector GENERATED ALWAYS AS ({EXPRESSION}) STORED"
    )
    schema_editor.execute("CREATE INDEX pair_search_gin ON datasets_preferencepair USING gin (search)")


def backward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS pair_search_gin")
    schema_editor.execute("ALTER TABLE datasets_preferencepair DROP COLUMN IF EXISTS search")
    schema_editor.execute(f"CREATE INDEX pair_search_gin ON datasets_preferencepair USING gin ({EXPRESSION})")


class Migration(migrations.Migration):
    dependencies = [("datasets", "0005_scoring_job")]
    operations = [migrations.RunPython(forward, backward)]
