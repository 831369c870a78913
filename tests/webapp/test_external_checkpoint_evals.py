"""External runs' uploaded checkpoints and evaluations (issue 15 point 4, webapp.runs.upload_eval): an
upload is loadable only as the server's own unpacking with safetensors weights and no pickles; with the
worker loading uploads (upload_eval.EXTERNAL_EVALUATION), an upload triggers the run's eval policy and
the evaluation runs on it; without, an external checkpoint is refused at once (a 400, no policy), so
nothing is queued that a worker would fail."""

import io
import json
import tarfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from trainers.common.tiny import build_tiny_model
from webapp.runs import upload_eval
from webapp.runs.checkpoint_paths import UntrustedCheckpoint
from webapp.runs.models import Checkpoint, Evaluation

pytestmark = pytest.mark.django_db(transaction=True)


def tar_of_directory(directory: Path | None, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(directory.rglob("*")) if directory else []:
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(directory)))
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def upload(api, run_id, body, step):
    url = f"/api/runs/{run_id}/checkpoints/?step={step}"
    resp = api.generic("POST", url, body, content_type="application/x-tar")
    assert resp.status_code == 201, resp.content
    return Checkpoint.objects.get(pk=resp.json()["id"])


def external_run(api, project) -> int:
    resp = api.post("/api/runs/", {"project": project.id, "kind": "external", "name": "ext"}, format="json")
    assert resp.status_code == 201, resp.content
    return resp.json()["id"]


def benchmark(api, project) -> int:
    rows = "".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(2))
    body = {"file": SimpleUploadedFile("b.jsonl", rows.encode()), "name": "b", "kind": "problems"}
    resp = api.post("/api/datasets/", {**body, "project": project.id})
    assert resp.status_code == 201, resp.content
    return resp.json()["id"]


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("policy") / "tiny")


def test_only_safetensors_uploads_without_pickles_are_loadable(api, project, tiny_policy):
    run = external_run(api, project)
    good = upload(api, run, tar_of_directory(tiny_policy), 1)
    assert upload_eval.uploaded_checkpoint_dir(good) == Path(good.path).resolve()
    pickled = upload(api, run, tar_of_directory(tiny_policy, {"pytorch_model.bin": b"\x80\x04pickle"}), 2)
    no_weights = upload(api, run, tar_of_directory(None, {"config.json": b"{}"}), 3)
    for refused in (pickled, no_weights):
        with pytest.raises(UntrustedCheckpoint):
            upload_eval.uploaded_checkpoint_dir(refused)
    # a row pointing anywhere else (a folder outside the run's uploads) is refused too
    Checkpoint.objects.filter(pk=good.pk).update(path=str(tiny_policy))
    good.refresh_from_db()
    with pytest.raises(UntrustedCheckpoint):
        upload_eval.uploaded_checkpoint_dir(good)


def test_an_upload_triggers_the_policy_and_is_evaluated(api, project, tiny_policy):
    run = external_run(api, project)
    bench = benchmark(api, project)
    policy = {"benchmarks": [bench], "n": 3, "ks": [1, 3], "temperature": 1.0, "max_new_tokens": 4}
    resp = api.put(f"/api/runs/{run}/eval-policy/", policy, format="json")
    if not upload_eval.EXTERNAL_EVALUATION:
        # workers do not load uploads yet: no policy, and the browser's evaluate is refused at once
        assert resp.status_code == 400 and "run" in resp.json()["errors"], resp.content
        checkpoint = upload(api, run, tar_of_directory(tiny_policy), 5)
        refused = api.post(f"/api/checkpoints/{checkpoint.id}/evaluate/", {"benchmark": bench}, format="json")
        assert refused.status_code == 400 and "checkpoint" in refused.json()["errors"]
        assert not Evaluation.objects.filter(run_id=run).exists()
        return
    from workers.tasks import evaluate_checkpoint

    assert resp.status_code == 200, resp.content
    checkpoint = upload(api, run, tar_of_directory(tiny_policy), 5)
    ev = Evaluation.objects.get(run_id=run, checkpoint=checkpoint)
    assert ev.status == "queued" and ev.k == 3 and ev.protocol["ks"] == [1, 3]
    evaluate_checkpoint(ev.id)  # the task body, in-process (its Celery plumbing: the worker tests)
    ev.refresh_from_db()
    assert ev.status == "succeeded", ev.error
    assert ev.step == 5 and {"pass@1", "pass@3", "pass@3_ci"} <= set(ev.metrics)
    assert "pass@2" not in ev.metrics  # the policy's k values, not the default 1, 2, ... n
    # a pickled upload is refused before anything is queued (the policy logs why)
    pickled = upload(api, run, tar_of_directory(tiny_policy, {"optimizer.pt": b"\x80\x04pickle"}), 6)
    assert not Evaluation.objects.filter(checkpoint=pickled).exists()
    refused = api.post(f"/api/checkpoints/{pickled.id}/evaluate/", {"benchmark": bench}, format="json")
    assert refused.status_code == 400 and "checkpoint" in refused.json()["errors"]
