"""Issue 11: no user-supplied path reaches a worker. Checkpoints are written by workers or uploaded
(a streamed tar into the artifact store), a run resumes and starts from its own project's
worker-written checkpoints only, and dataset fields are ids. Alice and bob are two teams; bob tries
to reach alice's files."""

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from webapp.runs import services
from webapp.runs.metric_store import series_read
from webapp.runs.models import Checkpoint, Evaluation, Run
from webapp.runs.retention import run_artifact_dir
from workers.tasks import evaluate_checkpoint, execute_run


@pytest.fixture
def bob_project(bob):
    from webapp.projects.services import project_create

    return project_create(user=bob, name="bob-lab")


def fresh(run: Run) -> Run:
    """The run with no folder in the artifact store yet (a new test database reuses run ids)."""
    shutil.rmtree(run_artifact_dir(run.id), ignore_errors=True)
    return run


def worker_checkpoint(run: Run, step: int, files: dict[str, bytes]) -> Path:
    """A checkpoint folder where a worker's sink writes one (attempt-<n>/checkpoint-<step>)."""
    fresh(run)
    directory = run_artifact_dir(run.id) / f"attempt-{run.attempt}" / f"checkpoint-{step:08d}"
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return directory


def external_run(project, user) -> Run:
    return fresh(services.run_create(user=user, project=project, name="ext", kind="external", config={}))


def tar_of(members: dict[str, bytes], *, gz: bool = False) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def upload(api, run_id: int, body: bytes, step: int = 5, metrics: str | None = None):
    url = f"/api/runs/{run_id}/checkpoints/?step={step}" + (f"&metrics={metrics}" if metrics else "")
    return api.generic("POST", url, body, content_type="application/x-tar")


def uploads_left(run_id: int) -> list[str]:
    base = run_artifact_dir(run_id) / "uploads"
    return sorted(p.name for p in base.iterdir()) if base.exists() else []


# --- the checkpoint POST -------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_checkpoint_post_with_a_path_is_refused_naming_path(api, alice, project):
    run = external_run(project, alice)
    resp = api.post(f"/api/runs/{run.id}/checkpoints/", {"step": 1, "path": "/etc"}, format="json")
    assert resp.status_code == 400, resp.content
    assert "path" in resp.json()["errors"]
    assert not Checkpoint.objects.filter(run=run).exists()


@pytest.mark.django_db
def test_upload_round_trip_and_replacing_a_step(api, alice, project):
    run = external_run(project, alice)
    files = {"model.safetensors": b"\x01" * 3000, "tok/tokenizer.json": b'{"a": 1}'}
    resp = upload(api, run.id, tar_of(files), step=7, metrics='{"val/loss":0.25}')
    assert resp.status_code == 201, resp.content
    body = resp.json()
    ckpt = Checkpoint.objects.get(pk=body["id"])
    directory = Path(ckpt.path)
    assert directory == run_artifact_dir(run.id).resolve() / "uploads" / "checkpoint-00000007" or (
        directory == run_artifact_dir(run.id) / "uploads" / "checkpoint-00000007"
    )
    assert {
        str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()
    } == files
    assert body["step"] == 7 and body["metrics"] == {"val/loss": 0.25} and body["size_bytes"] == 3008
    # gzip works too; a re-upload of the step replaces the folder (no stale file survives)
    again = upload(api, run.id, tar_of({"only.bin": b"x"}, gz=True), step=7)
    assert again.status_code == 201, again.content
    assert sorted(p.name for p in directory.iterdir()) == ["only.bin"]
    assert uploads_left(run.id) == ["checkpoint-00000007"]  # no staging or replaced folder left
    assert Checkpoint.objects.filter(run=run).count() == 1


@pytest.mark.django_db
def test_upload_size_limit_is_413_and_leaves_nothing(api, alice, project, settings):
    settings.ORLAB_CHECKPOINT_UPLOAD_MAX_BYTES = 20_000
    run = external_run(project, alice)
    big = upload(api, run.id, tar_of({"w.bin": b"\x00" * 50_000}))
    assert big.status_code == 413 and "body" in big.json()["errors"]
    # a small gzip body that unpacks beyond the limit is refused while unpacking
    bomb = tar_of({"w.bin": b"\x00" * 200_000}, gz=True)
    assert len(bomb) < 20_000
    resp = upload(api, run.id, bomb)
    assert resp.status_code == 413, resp.content
    assert uploads_left(run.id) == [] and not Checkpoint.objects.filter(run=run).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["../../escaped.bin", "/tmp/orlab-abs-escape.bin", "a/../../escaped.bin"])
def test_upload_member_names_cannot_leave_the_checkpoint_folder(api, alice, project, name):
    run = external_run(project, alice)
    resp = upload(api, run.id, tar_of({"ok.bin": b"1", name: b"evil"}))
    assert resp.status_code == 400 and "body" in resp.json()["errors"], resp.content
    assert uploads_left(run.id) == [] and not Checkpoint.objects.filter(run=run).exists()
    assert not (run_artifact_dir(run.id) / "escaped.bin").exists()
    assert not Path("/tmp/orlab-abs-escape.bin").exists()


@pytest.mark.django_db
def test_upload_refuses_links(api, alice, project):
    run = external_run(project, alice)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("weights")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    resp = upload(api, run.id, buf.getvalue())
    assert resp.status_code == 400 and "body" in resp.json()["errors"]
    assert uploads_left(run.id) == []


# --- resume, init_from_run, evaluation: only the run's own project's worker-written folders ------


@pytest.mark.django_db(transaction=True)
def test_bob_cannot_resume_from_alices_checkpoint(api, bob_api, alice, bob, project, bob_project):
    alice_run = Run.objects.create(project=project, name="a", kind="synthetic", status="succeeded")
    alices = worker_checkpoint(alice_run, 2, {"state.json": json.dumps({"step": 2}).encode()})
    bobs = Run.objects.create(
        project=bob_project, name="b", kind="synthetic", status="failed", queue="cpu",
        config=services.config_validate("synthetic", {"steps": 5, "keys": 1}),
    )  # fmt: skip
    fresh(bobs)
    # the attack: record alice's folder as a checkpoint of bob's run, then resume
    recorded = bob_api.post(
        f"/api/runs/{bobs.id}/checkpoints/", {"step": 1000, "path": str(alices)}, format="json"
    )
    assert recorded.status_code in (400, 409), recorded.content
    assert bob_api.post(f"/api/runs/{bobs.id}/resume/").status_code == 200
    execute_run(bobs.id, 2)
    bobs.refresh_from_db()
    assert bobs.status == "succeeded", bobs.error
    steps = series_read([bobs.id], ["train/loss"])[bobs.id]["train/loss"]["steps"]
    assert list(steps) == [0, 1, 2, 3, 4]  # started from scratch, not after alice's step 2

    # a stored row naming alice's folder (an old record) fails the resume instead of being read
    Checkpoint.objects.create(run=bobs, step=10**6, path=str(alices))
    Run.objects.filter(pk=bobs.pk).update(status="failed")
    assert bob_api.post(f"/api/runs/{bobs.id}/resume/").status_code == 200
    execute_run(bobs.id, 3)
    bobs.refresh_from_db()
    assert bobs.status == "failed" and "refusing to load it" in bobs.error
    assert str(alices) not in bobs.error


@pytest.mark.django_db
def test_load_time_refusal_says_the_same_for_missing_and_foreign_folders(alice, project, bob_project):
    alice_run = Run.objects.create(project=project, name="a", kind="sft", status="succeeded")
    bobs = Run.objects.create(project=bob_project, name="b", kind="sft", status="failed")
    foreign = Checkpoint(run=bobs, step=1, path=str(worker_checkpoint(alice_run, 1, {"x": b"1"})))
    missing = Checkpoint(run=bobs, step=1, path="/no/such/folder")
    from webapp.runs.checkpoint_paths import UntrustedCheckpoint, worker_checkpoint_dir

    messages = []
    for checkpoint in (foreign, missing):
        with pytest.raises(UntrustedCheckpoint) as exc:
            worker_checkpoint_dir(checkpoint, project_id=bob_project.id)
        messages.append(str(exc.value))
    assert messages[0] == messages[1]


@pytest.mark.django_db
def test_init_from_run_of_another_project_is_refused_at_start(alice, bob, project, bob_project):
    alice_sft = Run.objects.create(project=project, name="sft", kind="sft", status="succeeded")
    Checkpoint.objects.create(
        run=alice_sft, step=3, path=str(worker_checkpoint(alice_sft, 3, {"config.json": b"{}"}))
    )
    # a run row whose init_from_run names alice's run (launch refuses it; this is the worker's check)
    bobs = Run.objects.create(
        project=bob_project, name="rl", kind="rl", status="running", config={"init_from_run": alice_sft.id}
    )
    with pytest.raises(RuntimeError, match="no run"):
        services.run_materialize_datasets(bobs)
    # within a project, a parent checkpoint that a worker did not write is refused too
    own = Run.objects.create(project=bob_project, name="sft", kind="sft", status="succeeded")
    Checkpoint.objects.create(run=own, step=3, path="/etc")
    Run.objects.filter(pk=bobs.pk).update(config={"init_from_run": own.id})
    bobs.refresh_from_db()
    with pytest.raises(RuntimeError, match="refusing to load it"):
        services.run_materialize_datasets(bobs)


@pytest.mark.django_db(transaction=True)
def test_bob_cannot_evaluate_alices_checkpoint(bob_api, alice, bob, project, bob_project):
    from webapp.datasets.models import Dataset

    alice_sft = Run.objects.create(project=project, name="sft", kind="sft", status="succeeded")
    # (no model files needed: the evaluation must fail before reading any)
    alices = worker_checkpoint(alice_sft, 3, {"config.json": b"{}"})
    alice_ckpt = Checkpoint.objects.create(run=alice_sft, step=3, path=str(alices))
    bench = Dataset.objects.create(project=bob_project, name="bench", kind="problems", status="ready")
    assert (
        bob_api.post(f"/api/checkpoints/{alice_ckpt.id}/evaluate/", {"benchmark": bench.id}).status_code
        == 404
    )
    bobs = Run.objects.create(project=bob_project, name="sft", kind="sft", status="succeeded")
    recorded = bob_api.post(
        f"/api/runs/{bobs.id}/checkpoints/", {"step": 3, "path": str(alices)}, format="json"
    )
    assert recorded.status_code in (400, 409)
    # a row naming alice's folder (an old record): the evaluation fails without reading it
    row = Checkpoint.objects.create(run=bobs, step=3, path=str(alices))
    resp = bob_api.post(f"/api/checkpoints/{row.id}/evaluate/", {"benchmark": bench.id, "k": 1})
    assert resp.status_code == 202, resp.content
    evaluate_checkpoint(resp.json()["id"])
    ev = Evaluation.objects.get(pk=resp.json()["id"])
    assert ev.status == "failed" and "refusing to load it" in ev.error


# --- launch: dataset fields are ids, models are never paths --------------------------------------


@pytest.mark.django_db
def test_a_string_dataset_ref_is_refused_at_launch(api, project):
    resp = api.post(
        "/api/runs/",
        {
            "project": project.id,
            "kind": "sft",
            "config": {"model_path": "tiny", "train_dataset": "/etc/passwd"},
        },
        format="json",
    )
    assert resp.status_code == 400, resp.content
    assert "config.train_dataset" in resp.json()["errors"]
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_a_model_path_on_disk_is_refused_at_launch(api, project):
    resp = api.post(
        "/api/runs/", {"project": project.id, "kind": "sft", "config": {"model_path": "/etc"}}, format="json"
    )
    assert resp.status_code == 400, resp.content
    assert "config.model_path" in resp.json()["errors"]
    assert not Run.objects.exists()


def test_a_crafted_pickle_in_a_checkpoint_is_not_executed(tmp_path):
    import pickle

    from trainers.common.checkpoints import OPTIMIZER_FILE, load_optimizer_state

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (tmp_path / OPTIMIZER_FILE).write_bytes(pickle.dumps({"optimizer": Payload()}))
    with pytest.raises(pickle.UnpicklingError):
        load_optimizer_state(tmp_path)
    assert not marker.exists()


@pytest.mark.django_db
def test_model_path_checkpoint_refs_stay_within_the_project(api, bob_api, alice, bob, project, bob_project):
    alice_sft = Run.objects.create(project=project, name="sft", kind="sft", status="succeeded")
    alices = worker_checkpoint(alice_sft, 3, {"config.json": b"{}"})
    ckpt = Checkpoint.objects.create(run=alice_sft, step=3, path=str(alices))
    # another team's checkpoint and one that does not exist get the same answer
    for ident in (ckpt.id, ckpt.id + 1000):
        config = {"model_path": f"checkpoint:{ident}"}
        resp = bob_api.post(
            "/api/runs/", {"project": bob_project.id, "kind": "sft", "config": config}, format="json"
        )
        assert resp.status_code == 400, resp.content
        assert resp.json()["errors"]["config.model_path"] == [f"no checkpoint {ident} in project bob-lab"]
    assert not Run.objects.filter(project=bob_project).exists()
    # in alice's project it starts from the folder her worker wrote
    config = {"model_path": f"checkpoint:{ckpt.id}"}
    resp = api.post("/api/runs/", {"project": project.id, "kind": "sft", "config": config}, format="json")
    assert resp.status_code == 201, resp.content
    run = Run.objects.get(pk=resp.json()["id"])
    assert services.run_materialize_datasets(run)["model_path"] == str(alices.resolve())


@pytest.mark.django_db
def test_malformed_uploads_are_400s_naming_the_part(api, alice, project):
    import gzip

    run = external_run(project, alice)
    good = tar_of({"w.bin": b"1"})
    url = f"/api/runs/{run.id}/checkpoints/"
    cases = [
        (url, good, "step"),  # no step
        (url + "?step=-1", good, "step"),
        (url + "?step=abc", good, "step"),
        (url + "?step=1&metrics=not-json", good, "metrics"),
        (url + '?step=1&metrics={"a":"x"}', good, "metrics.a"),
        (url + "?step=1&metrics=" + "[" * 10_000 + "]" * 10_000, good, "metrics"),  # was a RecursionError
        (url + '?step=1&metrics={"a":' + str(2**70) + "}", good, "metrics"),
        (url + "?step=1", b"", "body"),
        (url + "?step=1", b"\x00garbage" * 100, "body"),
        (url + "?step=1", gzip.compress(b"not a tar" * 100), "body"),
        (url + "?step=1", tar_of({}), "body"),  # no files
    ]
    for target, body, field in cases:
        resp = api.generic("POST", target, body, content_type="application/x-tar")
        assert resp.status_code == 400, (target, resp.content)
        assert field in resp.json()["errors"], (target, resp.json())
    octet = api.generic("POST", url + "?step=1", good, content_type="application/octet-stream")
    assert octet.status_code == 400 and "Content-Type" in octet.json()["errors"]
    assert uploads_left(run.id) == [] and not Checkpoint.objects.filter(run=run).exists()


def test_concurrent_uploads_of_one_step_leave_one_whole_folder(settings):
    from concurrent.futures import ThreadPoolExecutor

    from webapp.runs.checkpoint_upload import store_checkpoint_upload

    run_id = 10**9  # no database row needed: the store only writes the folder
    shutil.rmtree(run_artifact_dir(run_id), ignore_errors=True)
    bodies = [tar_of({f"part-{i}-{j}.bin": bytes([i]) * 1000 for j in range(20)}) for i in range(8)]
    for _ in range(5):  # a race: several rounds make a lost one likely to show
        with ThreadPoolExecutor(8) as pool:
            stored = list(
                pool.map(lambda b: store_checkpoint_upload(run_id, 3, io.BytesIO(b), len(b)), bodies)
            )
        names = {p.name for p in stored[0].directory.iterdir()}
        assert len(names) == 20 and len({name.split("-")[1] for name in names}) == 1  # one upload, whole
        assert uploads_left(run_id) == ["checkpoint-00000003"]
    shutil.rmtree(run_artifact_dir(run_id))
