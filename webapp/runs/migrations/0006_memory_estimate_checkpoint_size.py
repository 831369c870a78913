from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0005_evaluation_benchmark_name"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="memory_estimate",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.AddField(
            model_name="checkpoint",
            name="size_bytes",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="checkpoint",
            name="deleted_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
