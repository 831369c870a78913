"""Large files: streamed (memory stays bounded) and imported in the background by a real worker."""

import json
import tracemalloc
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import wait_for
from webapp.datasets import services
from webapp.datasets.models import Dataset, PreferencePair


def write_pairs(path: Path, n: int, bad_at: int | None = None) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            if i == bad_at:
                f.write(json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}) + "\n")
                continue
            row = {
                "prompt": f"Question {i}: what is {i} times 7? Explain the multiplication step by step.",
                "chosen": f"{i} times 7 is {7 * i} because seven groups of {i} make {7 * i}.",
                "rejected": f"I think it is {7 * i + 3}, roughly.",
                "source": ["helpsteer2", "magpie_ultra", "offsetbias"][i % 3],
            }
            f.write(json.dumps(row) + "\n")
    return path


@pytest.mark.django_db
def test_import_streams_with_bounded_memory(project, alice, tmp_path):
    path = write_pairs(tmp_path / "big.jsonl", 120_000)
    size = path.stat().st_size
    ds = services.dataset_create_for_import(
        user=alice, project=project, name="big", kind="preference", path=path, filename="big.jsonl"
    )
    tracemalloc.start()
    services.dataset_import(ds, path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert ds.status == "ready" and ds.row_count == 120_000
    assert PreferencePair.objects.filter(dataset=ds).count() == 120_000
    assert size > 20e6
    assert peak < size / 4, f"peak Python memory {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB file"


@pytest.mark.django_db
def test_a_bad_row_near_the_end_of_a_large_file_leaves_nothing(project, alice, tmp_path):
    path = write_pairs(tmp_path / "bad.jsonl", 60_000, bad_at=59_000)
    ds = services.dataset_create_for_import(
        user=alice, project=project, name="bad", kind="preference", path=path, filename="bad.jsonl"
    )
    with pytest.raises(services.ImportRejected) as err:
        services.dataset_import(ds, path)
    assert "line 59001" in err.value.errors
    ds.refresh_from_db()
    assert ds.status == "failed" and ds.meta["row_errors"][0] == {
        "line": 59001,
        "error": "chosen identical to rejected",
    }
    assert not PreferencePair.objects.filter(dataset=ds).exists()


@pytest.mark.slow
def test_large_upload_is_imported_by_a_worker_with_progress(worker, api, project, tmp_path):
    path = write_pairs(tmp_path / "bg.jsonl", 80_000)
    assert path.stat().st_size > services.SYNC_IMPORT_BYTES
    f = SimpleUploadedFile("bg.jsonl", path.read_bytes())
    resp = api.post("/api/datasets/", {"file": f, "name": "bg", "kind": "preference", "project": project.id})
    assert resp.status_code == 202, resp.content
    ds_id = resp.json()["id"]
    assert resp.json()["status"] == "importing"
    seen = []

    def ready():
        data = api.get(f"/api/datasets/{ds_id}/").json()
        seen.append(data["progress"])
        return data["status"] == "ready"

    wait_for(ready, 120, interval=0.1, message=f"import\n{worker.log()[-2000:]}")
    assert Dataset.objects.get(pk=ds_id).row_count == 80_000
    assert any(0 < p < 1 for p in seen), seen  # progress was visible while importing


@pytest.mark.django_db
def test_an_import_the_housekeeping_failed_meanwhile_stays_failed_and_keeps_no_rows(project, alice, tmp_path):
    """The housekeeping fails an import whose claim looked dead (webapp.outbox); if that import was in
    fact still storing rows, its end must not turn the dataset `ready` over `failed`."""
    path = write_pairs(tmp_path / "late.jsonl", 2_000)
    ds = services.dataset_create_for_import(
        user=alice, project=project, name="late", kind="preference", path=path, filename="late.jsonl"
    )
    reason = "the worker importing it stopped (no heartbeat)"
    Dataset.objects.filter(pk=ds.pk).update(status="failed", error=reason)  # as the housekeeping does
    with pytest.raises(services.ImportRejected, match="ended meanwhile"):
        services.dataset_import(ds, path)
    ds.refresh_from_db()
    assert (ds.status, ds.error, ds.row_count) == ("failed", reason, 0)
    assert not PreferencePair.objects.filter(dataset=ds).exists()
