"""``python manage.py samples_recompress [--run ID ...]``: rewrite rollout completions that do not use
their run's zstd dictionary: rows stored as text before migration 0017, and the plain frames a run
stored before its dictionary was trained (webapp.runs.sample_text). A run with enough completions but
no dictionary (one whose samples all predate 0017) gets one trained first. Safe beside ingest: each
batch of rows is its own transaction and is rewritten with the same text."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Exists, OuterRef

from webapp.runs import sample_text
from webapp.runs.models import Run, Sample


class Command(BaseCommand):
    help = "Compress rollout completions that do not use their run's dictionary (legacy text, plain frames)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--run", type=int, action="append", dest="runs", help="only this run (repeatable)"
        )

    def handle(self, *args, runs=None, **options):
        if not sample_text.enabled():
            raise CommandError("sample text is compressed on PostgreSQL only (this database keeps text)")
        if runs:
            missing = sorted(set(runs) - set(Run.objects.filter(pk__in=runs).values_list("pk", flat=True)))
            if missing:
                raise CommandError(f"no run with id {', '.join(map(str, missing))}")
        # the runs that have samples (one index probe a run, not a DISTINCT over every sample)
        with_samples = Run.objects.filter(Exists(Sample.objects.filter(run=OuterRef("pk"))))
        if runs:
            with_samples = with_samples.filter(pk__in=runs)
        run_ids = list(with_samples.order_by("pk").values_list("pk", flat=True))
        total = 0
        for i, run_id in enumerate(run_ids, 1):
            dict_id = sample_text.train_from_stored(run_id)
            if not dict_id:
                self.stdout.write(
                    f"[{i}/{len(run_ids)}] run {run_id}: too few completions for a dictionary, kept"
                )
                continue
            done = sample_text.recompress_run(run_id)
            total += done
            self.stdout.write(
                f"[{i}/{len(run_ids)}] run {run_id}: {done:,} rows rewritten with dictionary {dict_id}"
            )
        left = Sample.objects.filter(completion_z__isnull=True).exclude(completion="").count()
        self.stdout.write(f"done: {total:,} rows rewritten; {left:,} rows still stored as text")
