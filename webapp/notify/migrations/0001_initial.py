"""Reserved: filled by issue 15's work."""

from django.db import migrations


class Migration(migrations.Migration):
    initial = True
    dependencies = [("runs", "0012_sample_group_status_sort_indexes"), ("projects", "0002_project_owner")]

    operations: list = []
