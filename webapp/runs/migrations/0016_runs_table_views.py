"""issue 16 runs table views (U2): reserved in the chain so parallel work does not fork the migration graph; operations are
filled by that work (an empty migration is harmless)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("runs", "0015_chart_pins")]

    operations: list = []
