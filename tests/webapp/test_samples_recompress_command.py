"""``manage.py samples_recompress``: a run whose completions all predate migration 0017 (text in the
column) gets a dictionary trained from them and every row rewritten as a frame that decodes to the same
text; a run with too few completions is left as it is; an unknown run is an error, not a silent no-op."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from webapp.runs import sample_text, services
from webapp.runs.models import Sample, SampleTextDictionary

pytestmark = pytest.mark.django_db


def legacy_rows(run, texts: list[str]) -> None:
    """Rows as stored before migration 0017: text in ``completion``, no frame."""
    with connection.cursor() as cur:
        for i, text in enumerate(texts):
            cur.execute(
                "INSERT INTO runs_sample (run_id, step, prompt, completion, verdict, length, truncated, "
                "finish_reason, rewards, extracted_answer, phase, data_source, group_status, extra, completion_dict) "
                "VALUES (%s, %s, '', %s, '', 0, false, '', '{}', '', 'train', '', '', '{}', 0)",
                [run.id, i, text],
            )


def test_legacy_text_rows_are_compressed_with_a_trained_dictionary(alice, project, monkeypatch):
    monkeypatch.setattr(sample_text, "TRAIN_AFTER", 200)
    big = services.run_create(user=alice, project=project, name="old", kind="external", config={})
    small = services.run_create(user=alice, project=project, name="tiny", kind="external", config={})
    texts = [f"step {i}: we telescope the sum and get \\boxed{{{i % 13}}} " * 8 for i in range(300)]
    legacy_rows(big, texts)
    legacy_rows(small, texts[:20])
    assert not SampleTextDictionary.objects.exists()

    out = io.StringIO()
    call_command("samples_recompress", stdout=out)
    report = out.getvalue()
    assert f"run {big.id}: 300 rows rewritten" in report
    assert f"run {small.id}: too few completions" in report
    assert "20 rows still stored as text" in report

    dictionary = SampleTextDictionary.objects.get(run=big)
    rows = list(Sample.objects.filter(run=big).order_by("step"))
    assert [s.completion for s in rows] == texts  # decoded from the frames
    raw = Sample.objects.filter(run=big).values_list("completion", "completion_dict", "completion_z")
    assert all(c == "" and d == dictionary.pk and z is not None for c, d, z in raw)
    assert Sample.objects.filter(run=small, completion_z__isnull=True).count() == 20

    again = io.StringIO()
    call_command("samples_recompress", "--run", str(big.id), stdout=again)
    assert f"run {big.id}: 0 rows rewritten" in again.getvalue()


def test_an_unknown_run_is_an_error():
    with pytest.raises(CommandError, match="no run with id 987654"):
        call_command("samples_recompress", "--run", "987654")


def test_a_run_id_past_bigint_is_an_error_too():
    with pytest.raises(CommandError, match="no run with id 99999999999999999999"):
        call_command("samples_recompress", "--run", "99999999999999999999")
