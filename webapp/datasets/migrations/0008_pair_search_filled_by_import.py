"""The pair search vector becomes a plain column that the import fills (PostgreSQL only).

As a generated column (0006) it was computed by the one backend that inserts the rows: to_tsvector
was half of PostgreSQL's work during an import and capped it near 20,000 pairs/s. The import now
has a second connection compute the vectors of the next rows while the first inserts (see
services._SearchVectors); a trigger computes it for every other writer (curation's INSERT ...
SELECT, the ORM) and keeps it right when the prompt or the chosen text changes."""

from django.db import migrations

EXPRESSION = "to_tsvector('english', prompt || ' ' || chosen_text)"

FORWARD = f"""
ALTER TABLE datasets_preferencepair ALTER COLUMN search DROP EXPRESSION;
CREATE FUNCTION datasets_pair_search() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search := to_tsvector('english', NEW.prompt || ' ' || NEW.chosen_text);
    RETURN NEW;
END $$;
CREATE TRIGGER pair_search_insert BEFORE INSERT ON datasets_preferencepair
    FOR EACH ROW WHEN (NEW.search IS NULL) EXECUTE FUNCTION datasets_pair_search();
CREATE TRIGGER pair_search_update BEFORE UPDATE OF prompt, chosen_text ON datasets_preferencepair
    FOR EACH ROW EXECUTE FUNCTION datasets_pair_search();
"""

BACKWARD = f"""
DROP TRIGGER IF EXISTS pair_search_insert ON datasets_preferencepair;
DROP TRIGGER IF EXISTS pair_search_update ON datasets_preferencepair;
DROP FUNCTION IF EXISTS datasets_pair_search();
DROP INDEX IF EXISTS pair_search_gin;
ALTER TABLE datasets_preferencepair DROP COLUMN search;
ALTER TABLE datasets_preferencepair ADD COLUMN search tsvector GENERATED ALWAYS AS ({EXPRESSION}) STORED;
CREATE INDEX pair_search_gin ON datasets_preferencepair USING gin (search);
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("datasets", "0007_step_values")]
    operations = [migrations.RunPython(forward, backward)]
