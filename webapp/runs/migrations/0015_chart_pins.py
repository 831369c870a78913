"""issue 16 chart pins (U1): reserved in the chain so parallel work does not fork the migration graph; operations are
filled by that work (an empty migration is harmless)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("runs", "0014_eval_policy")]

    operations: list = []
