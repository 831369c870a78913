"""Three of runs_sample's b-tree indexes that other indexes already cover, dropped to make ingest's
COPY cheaper (each index is one more insertion per row): (run_id) and (prompt_ref_id), Django's own
indexes of the two foreign keys, lead (run, step, group_index, member_index) and (prompt_ref, step);
(run, step) is a prefix of (run, step, group_index, member_index). Checked with EXPLAIN ANALYZE on a
50k-sample run for the sample queries (first page both ways, one step, step ranges, verdict, retention's
newest and old steps, group view and neighbours, group statuses, prompt steps, prompt and run cascades,
the dictionary training count): each found the covering index, same plan shape, within noise
(helper S, bench/RESULTS.md issue 14 storage)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0017_sample_text_zstd"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="sample",
            name="sample_run_step",
        ),
        migrations.AlterField(
            model_name="sample",
            name="prompt_ref",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="samples",
                to="runs.rolloutprompt",
            ),
        ),
        migrations.AlterField(
            model_name="sample",
            name="run",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="samples",
                to="runs.run",
            ),
        ),
    ]
