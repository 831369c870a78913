"""Issue 16 point 8: a checkpoint downloads as a streamed tar (tar.gz on request), model files only by
default, the optimizer state on request, for members of the run's project only, from the page (session)
and the API (token); deleted checkpoints, directories outside the store and symlinks out are refused."""

from __future__ import annotations

import io
import os
import tarfile

import pytest
from django.utils import timezone

from tests.webapp.test_checkpoint_trust import fresh, worker_checkpoint
from webapp.runs import services
from webapp.runs.checkpoint_download import is_model_file
from webapp.runs.models import Checkpoint, Run
from webapp.runs.retention import run_artifact_dir

pytestmark = pytest.mark.django_db

# A DAPO-like checkpoint: a model with its tokenizer, a critic model beside it, trainer bookkeeping,
# optimizer state and a DeepSpeed folder (which holds optimizer partitions even with a .safetensors name).
MODEL = {
    "config.json": b'{"model_type": "tiny"}',
    "generation_config.json": b"{}",
    "model.safetensors": os.urandom(300_000),  # many tar blocks, not a multiple of 512
    "tokenizer.json": b'{"version": "1.0"}',
    "tokenizer_config.json": b"{}",
    "special_tokens_map.json": b"{}",
    "critic/config.json": b"{}",
    "critic/model.safetensors": os.urandom(5_000),
}
STATE = {
    "optimizer.pt": os.urandom(2_100_000),  # over two 1 MiB reads
    "trainer_state.json": b'{"step": 7}',
    "orlab.json": b"{}",
    "deepspeed/global_step7/zero_pp_rank_0_mp_rank_00_optim_states.pt": os.urandom(1_000),
    "deepspeed/extra.safetensors": b"not the model",
}


def make_checkpoint(run: Run, step: int = 7, files: dict[str, bytes] | None = None) -> Checkpoint:
    files = {**MODEL, **STATE} if files is None else files
    directory = worker_checkpoint(run, step, {})
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return Checkpoint.objects.create(run=run, step=step, path=str(directory), size_bytes=None)


@pytest.fixture
def run(alice, project):
    return fresh(
        services.run_create(
            user=alice,
            project=project,
            name="r",
            kind="tabular",
            config={
                "method": "soft_pi",
                "tau": 0.1,
                "iterations": 3,
                "mdp": {"kind": "named", "name": "chain"},
            },
        )
    )


@pytest.fixture
def client_alice(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def client_bob(bob):
    from django.test import Client

    c = Client()
    c.force_login(bob)
    return c


def untar(body: bytes, gz: bool = False) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz" if gz else "r:") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def body_of(response) -> bytes:
    assert response.streaming, "the archive must be streamed, not built"
    return b"".join(response.streaming_content)


def test_the_file_rule():
    assert all(is_model_file(name) for name in MODEL)
    assert not any(is_model_file(name) for name in STATE)
    for name in ("model-00001-of-00002.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "vocab.json", "merges.txt", "chat_template.jinja", "tokenizer.model", "params.safetensors"):  # fmt: skip
        assert is_model_file(name), name
    for name in ("scheduler.pt", "rng_state.pth", "state.json", "training_args.bin", "notes.txt"):
        assert not is_model_file(name), name


def test_model_files_only_by_default_and_content_equal_to_the_files(client_alice, run):
    checkpoint = make_checkpoint(run)
    response = client_alice.get(f"/checkpoints/{checkpoint.pk}/download/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-tar"
    assert response["Content-Disposition"] == f'attachment; filename="run-{run.pk}-checkpoint-7.tar"'
    got = untar(body_of(response))
    root = f"run-{run.pk}-checkpoint-7"
    assert got == {f"{root}/{name}": data for name, data in MODEL.items()}


def test_optimizer_state_on_request_and_gzip(client_alice, run):
    checkpoint = make_checkpoint(run)
    response = client_alice.get(f"/checkpoints/{checkpoint.pk}/download/?include=optimizer&archive=tar.gz")
    assert response.status_code == 200 and response["Content-Type"] == "application/gzip"
    got = untar(body_of(response), gz=True)
    root = f"run-{run.pk}-checkpoint-7"
    assert got == {f"{root}/{name}": data for name, data in {**MODEL, **STATE}.items()}


def test_the_api_with_a_token_and_bad_options(api, run):
    checkpoint = make_checkpoint(run)
    response = api.get(f"/api/checkpoints/{checkpoint.pk}/download/", HTTP_ACCEPT="application/x-tar")
    assert response.status_code == 200
    assert set(untar(body_of(response))) == {f"run-{run.pk}-checkpoint-7/{n}" for n in MODEL}
    bad = api.get(f"/api/checkpoints/{checkpoint.pk}/download/?include=everything")
    assert bad.status_code == 400 and "include" in bad.json()["errors"]
    bad = api.get(f"/api/checkpoints/{checkpoint.pk}/download/?archive=zip")
    assert bad.status_code == 400 and "archive" in bad.json()["errors"]


def test_choices_with_sizes(api, run):
    checkpoint = make_checkpoint(run)
    rows = api.get(f"/api/runs/{run.pk}/checkpoint-downloads/").json()
    assert [r["id"] for r in rows] == [checkpoint.pk]
    choices = {c["include"]: c for c in rows[0]["choices"]}
    assert choices["model"]["bytes"] == sum(len(v) for v in MODEL.values())
    assert choices["model"]["files"] == len(MODEL)
    assert choices["optimizer"]["bytes"] == sum(len(v) for v in {**MODEL, **STATE}.values())
    assert choices["optimizer"]["api_url"] == f"/api/checkpoints/{checkpoint.pk}/download/?include=optimizer"


def test_non_members_get_404(client_bob, bob_api, run):
    checkpoint = make_checkpoint(run)
    assert client_bob.get(f"/checkpoints/{checkpoint.pk}/download/").status_code == 404
    assert bob_api.get(f"/api/checkpoints/{checkpoint.pk}/download/").status_code == 404
    assert bob_api.get(f"/api/runs/{run.pk}/checkpoint-downloads/").status_code == 404
    assert client_bob.get(f"/checkpoints/{checkpoint.pk + 1000}/download/").status_code == 404


def test_a_deleted_checkpoint_is_refused_with_its_reason(api, client_alice, run):
    checkpoint = make_checkpoint(run)
    Checkpoint.objects.filter(pk=checkpoint.pk).update(deleted_at=timezone.now())
    response = api.get(f"/api/checkpoints/{checkpoint.pk}/download/")
    assert (
        response.status_code == 410 and "deleted by the run's retention policy" in response.json()["detail"]
    )
    assert client_alice.get(f"/checkpoints/{checkpoint.pk}/download/").status_code == 410
    assert api.get(f"/api/runs/{run.pk}/checkpoint-downloads/").json()[0]["choices"] == []


def test_a_path_outside_the_store_is_refused(api, run, tmp_path):
    outside = tmp_path / "attempt-1" / "checkpoint-00000007"
    outside.mkdir(parents=True)
    (outside / "model.safetensors").write_bytes(b"secret")
    checkpoint = Checkpoint.objects.create(run=run, step=7, path=str(outside))
    response = api.get(f"/api/checkpoints/{checkpoint.pk}/download/")
    assert response.status_code == 404 and "artifact store" in response.json()["detail"]
    # another run's checkpoint folder in the store is not this run's either
    other = fresh(Run.objects.create(project=run.project, name="o", kind="tabular", status="succeeded"))
    theirs = make_checkpoint(other, 3, {"model.safetensors": b"theirs"})
    Checkpoint.objects.filter(pk=checkpoint.pk).update(path=theirs.path)
    assert api.get(f"/api/checkpoints/{checkpoint.pk}/download/").status_code == 404


def test_symlinks_out_of_the_store_are_not_followed(api, run, tmp_path):
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "model.safetensors").write_bytes(b"outside the store")
    # a symlinked file (and folder) inside a real checkpoint: left out, not followed
    checkpoint = make_checkpoint(run, 7, {"config.json": b"{}"})
    directory = run_artifact_dir(run.pk) / "attempt-1" / "checkpoint-00000007"
    (directory / "model.safetensors").symlink_to(secret / "model.safetensors")
    (directory / "critic").symlink_to(secret, target_is_directory=True)
    body = body_of(api.get(f"/api/checkpoints/{checkpoint.pk}/download/?include=optimizer"))
    assert untar(body) == {f"run-{run.pk}-checkpoint-7/config.json": b"{}"}
    assert b"outside the store" not in body
    # the checkpoint directory itself a symlink out of the store
    link_dir = run_artifact_dir(run.pk) / "attempt-1" / "checkpoint-00000009"
    link_dir.symlink_to(secret, target_is_directory=True)
    linked = Checkpoint.objects.create(run=run, step=9, path=str(link_dir))
    assert api.get(f"/api/checkpoints/{linked.pk}/download/").status_code == 404
