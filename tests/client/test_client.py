"""The Python client against the real server (gunicorn on the test database), including an outage
in the middle of a run: no point lost, none stored twice."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from orlab_client import Client, OrlabError
from orlab_client.cli import main as cli_main
from tests.client.conftest import free_port
from tests.conftest import ARTIFACTS, wait_for
from webapp.runs.metric_store import series_read
from webapp.runs.models import Checkpoint, MetricSeries, Run, Sample

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server(gunicorn_server):
    """The session's gunicorn (tests/client/conftest.py), up at the start of the test."""
    if not gunicorn_server.running():
        gunicorn_server.stop()
        gunicorn_server.start()
    return gunicorn_server


@pytest.fixture
def token(alice):
    from rest_framework.authtoken.models import Token

    return Token.objects.create(user=alice).key


def make_client(server, token, tmp_path):
    return Client(
        f"http://127.0.0.1:{server.port}", token, spool_dir=tmp_path / "spool", retries=1, backoff=0.05
    )


def test_a_run_logged_through_the_client(server, token, project, tmp_path):
    client = make_client(server, token, tmp_path)
    with client.create_run(
        project=project.id, name="verl-job", config={"lr": 1e-6}, flush_interval=0.1
    ) as run:
        for step in range(500):
            run.log(step, {"train/loss": 1.0 / (step + 1), "train/reward": step / 500})
        run.log(500, {"train/loss": float("nan")})
        run.log_samples(10, [{"prompt": "1+1=", "completion": "2", "reward": 1.0, "verdict": "correct"}])
        folder = tmp_path / "ckpt-499"
        (folder / "tokenizer").mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"\x07" * 5000)
        (folder / "tokenizer" / "vocab.json").write_text('{"a": 0}')
        run.log_checkpoint(499, folder, {"train/loss": 0.002})
    row = Run.objects.get(pk=run.id)
    assert row.kind == "external" and row.status == "succeeded" and row.config == {"lr": 1e-6}
    loss = series_read([run.id], ["train/loss"])[run.id]["train/loss"]
    assert loss["steps"].tolist() == list(range(501)) and np.isnan(loss["values"][-1])
    assert Sample.objects.get(run_id=run.id).verdict == "correct"
    # the folder was uploaded into the artifact store (never recorded by path) and its archive removed
    ckpt = Checkpoint.objects.get(run_id=run.id)
    stored = Path(ckpt.path)
    assert stored.is_relative_to(ARTIFACTS / "runs" / str(run.id) / "uploads") and ckpt.step == 499
    assert (stored / "model.safetensors").read_bytes() == b"\x07" * 5000
    assert (stored / "tokenizer" / "vocab.json").read_text() == '{"a": 0}'
    assert ckpt.metrics == {"train/loss": 0.002} and ckpt.size_bytes == 5008
    assert not run.offline and client.spooled_files() == []
    assert not any((tmp_path / "spool").rglob("*.tar*"))


def test_an_exception_in_the_script_fails_the_run(server, token, project, tmp_path):
    client = make_client(server, token, tmp_path)
    with pytest.raises(ZeroDivisionError), client.create_run(project=project.id, name="crash") as run:
        run.log(0, {"x": 1})
        1 / 0  # noqa: B018
    row = Run.objects.get(pk=run.id)
    assert row.status == "failed" and "ZeroDivisionError" in row.error


def test_bad_requests_raise_with_field_errors(server, token, project, tmp_path):
    client = make_client(server, token, tmp_path)
    with pytest.raises(OrlabError) as err:
        client.create_run(project=999_999, name="nope")
    assert err.value.status == 400 and "project" in err.value.errors


def test_outage_mid_run_loses_and_doubles_nothing(server, token, project, tmp_path):
    client = make_client(server, token, tmp_path)
    run = client.create_run(project=project.id, name="outage", flush_interval=0.1)
    for step in range(0, 300):
        run.log(step, {"loss": step * 0.1, "acc": step * 0.01})
    wait_for(
        lambda: MetricSeries.objects.filter(run_id=run.id, key="loss", count=300).exists(), 10, message="sent"
    )

    server.stop()
    for step in range(300, 700):
        run.log(step, {"loss": step * 0.1, "acc": step * 0.01})
    run.log_samples(650, [{"prompt": "p", "completion": "c", "verdict": "wrong", "reward": 0.0}])
    wait_for(lambda: run.offline, 10, message="client notices the outage")
    wait_for(lambda: client.spool_path(run.id).exists(), 10, message="spool file")
    # the flush thread keeps spooling while the server is down
    time.sleep(0.5)

    server.start()  # back: the client's background thread sends the spool by itself
    wait_for(lambda: not run.offline, 30, message="client recovers")
    for step in range(700, 800):
        run.log(step, {"loss": step * 0.1, "acc": step * 0.01})
    run.finish()
    for key in ("loss", "acc"):
        steps = series_read([run.id], [key])[run.id][key]["steps"]
        assert steps.tolist() == list(range(800)), key
        assert MetricSeries.objects.get(run_id=run.id, key=key).count == 800
    assert Sample.objects.filter(run_id=run.id).count() == 1
    assert Run.objects.get(pk=run.id).status == "succeeded"


def test_sync_command_sends_a_spool_left_by_a_dead_script(server, token, project, tmp_path):
    client = make_client(server, token, tmp_path)
    run = client.create_run(project=project.id, name="offline", flush_interval=60)
    server.stop()
    for step in range(1000):
        run.log(step, {"loss": float(step)})
    run.log_samples(5, [{"prompt": "p", "completion": "c"}])
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"w" * 100)
    run.log_checkpoint(999, folder)
    shutil.rmtree(folder)  # packed when logged: the script may delete its folder at once
    run.finish()  # everything, the finish included, goes to the spool
    assert run.offline and client.spooled_files()
    spool = client.spool_path(run.id).read_text()
    # a record an older client spooled (a checkpoint by path) is dropped, not sent
    old = {"run": run.id, "type": "checkpoint", "body": {"step": 5, "path": "/etc", "metrics": {}}}
    client.spool_path(run.id).write_text(json.dumps(old) + "\n" + spool)
    server.start()
    args = ["--url", client.url, "--token", token, "--spool-dir", str(tmp_path / "spool"), "sync"]
    assert cli_main(args) == 0
    assert client.spooled_files() == []
    # a second sync of the same records (e.g. a copy of the spool) stores nothing twice
    client.spool_path(run.id).write_text(spool)
    assert cli_main(args) == 0
    assert MetricSeries.objects.get(run_id=run.id, key="loss").count == 1000
    assert Sample.objects.filter(run_id=run.id).count() == 1
    ckpt = Checkpoint.objects.get(run_id=run.id)
    assert ckpt.step == 999 and (Path(ckpt.path) / "w.bin").read_bytes() == b"w" * 100
    assert Run.objects.get(pk=run.id).status == "succeeded"


def test_sync_without_a_server_keeps_the_spool(token, tmp_path):
    spool = tmp_path / "spool"
    client = Client(f"http://127.0.0.1:{free_port()}", token, spool_dir=spool, retries=0)
    path = client.spool_path(1)
    path.parent.mkdir(parents=True)
    path.write_text('{"run": 1, "type": "metrics", "body": [{"key": "x", "step": 0, "value": 1.0}]}\n')
    args = ["--url", client.url, "--token", token, "--spool-dir", str(spool), "sync"]
    assert cli_main(args) == 1
    assert path.exists()
