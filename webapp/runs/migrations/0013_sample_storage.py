"""issue 14 sample storage and search (P14): reserved in the chain so parallel work does not fork the migration graph; operations are
filled by that work (an empty migration is harmless)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("runs", "0012_sample_group_status_sort_indexes")]

    operations: list = []
