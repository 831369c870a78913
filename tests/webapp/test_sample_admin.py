"""The Django admin shows a sample's completion decoded from its zstd frame and never writes it (the
legacy text column it would write is not what readers read: webapp.runs.sample_text)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from webapp.runs import services
from webapp.runs.models import Sample
from webapp.runs.samples import samples_record

pytestmark = pytest.mark.django_db


def test_admin_shows_the_decoded_completion_and_a_save_keeps_it(client, alice, project):
    run = services.run_create(user=alice, project=project, name="rl", kind="external", config={})
    samples_record(run.id, [{"step": 1, "prompt": "2+2?", "completion": "so the answer is \\boxed{4}"}])
    sample = Sample.objects.get(run=run)
    assert sample.completion_z is not None  # stored as a frame, the text column left empty
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)
    url = f"/admin/runs/sample/{sample.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    assert "so the answer is \\boxed{4}" in page.content.decode()
    assert 'name="completion"' not in page.content.decode()  # read-only: no input to edit it
    client.post(url, {"run": run.pk, "step": 1, "completion": "edited", "verdict": "", "length": 0})
    assert Sample.objects.get(pk=sample.pk).completion == "so the answer is \\boxed{4}"
