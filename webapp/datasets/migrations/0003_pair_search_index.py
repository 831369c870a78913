"""Full-text search over pairs (PostgreSQL only): a GIN index on the prompt and the chosen
response. The pair browser's ?search= uses the same expression, so the index serves it."""

from django.db import migrations

SEARCH_EXPRESSION = "to_tsvector('english', prompt || ' ' || chosen_text)"


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS pair_search_gin ON datasets_preferencepair USING gin ({SEARCH_EXPRESSION})"
        )


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS pair_search_gin")


class Migration(migrations.Migration):
    dependencies = [("datasets", "0002_pair_text_columns")]
    operations = [migrations.RunPython(create, drop)]
