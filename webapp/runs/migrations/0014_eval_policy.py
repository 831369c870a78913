"""issue 15 eval policy per run (E1): reserved in the chain so parallel work does not fork the migration graph; operations are
filled by that work (an empty migration is harmless)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("runs", "0013_sample_storage")]

    operations: list = []
