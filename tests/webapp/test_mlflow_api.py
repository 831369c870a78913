"""The MLflow-compatible tracking API (/mlflow, webapp/mlflow_api) driven by the stock mlflow-skinny
client over real HTTP (pytest-django's live_server), as a training script that logs with mlflow would:
only MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN (or USERNAME/PASSWORD) change."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
import requests

# live_server: committed data, read by the server's request threads with their own connections
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def mlflow_env(live_server, alice, monkeypatch, settings, tmp_path):
    import mlflow
    from rest_framework.authtoken.models import Token

    # run ids restart with each test's fresh tables: a folder of artifacts per test
    settings.ORLAB_ARTIFACTS = tmp_path / "artifacts"

    token = Token.objects.create(user=alice).key
    uri = f"{live_server.url}/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # a refused request fails at once
    monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    # The client's kept-alive sessions are closed after the test, so that no server thread idles on
    # a socket holding its database connection (the test database could not be dropped at the end)
    from mlflow.utils import request_utils

    cached, sessions = request_utils._cached_get_request_session, []

    def tracked_session(*args, **kwargs):
        session = cached(*args, **kwargs)
        sessions.append(session)
        return session

    monkeypatch.setattr(request_utils, "_cached_get_request_session", tracked_session)
    mlflow.set_tracking_uri(uri)
    yield {"uri": uri, "token": token, "mlflow": mlflow}
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    _forget_active_experiment()
    for session in sessions:
        session.close()
    cached.cache_clear()
    _end_idle_request_threads()


def _forget_active_experiment() -> None:
    """What a new process starts with: set_experiment keeps the experiment in the module and in
    os.environ (MLFLOW_EXPERIMENT_ID), where monkeypatch would not undo it."""
    import os

    from mlflow.tracking import fluent

    fluent._active_experiment_id = None
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)


def _end_idle_request_threads() -> None:
    """The live server's request threads still waiting on a kept-alive socket (one the client side
    did not close: a pooled connection some error path kept) hold a database connection each until
    their socket ends, and the test database could not be dropped: end their sockets and wait."""
    import socket
    import threading

    for thread in threading.enumerate():
        args = getattr(thread, "_args", None)  # socketserver's (request, address); gone once it ended
        if "process_request_thread" in thread.name and args:
            with contextlib.suppress(OSError):
                args[0].shutdown(socket.SHUT_RDWR)
            thread.join(timeout=10)


def _raw(env, method, endpoint, token=None, **kwargs):
    headers = {
        "Authorization": f"Bearer {token or env['token']}",
        "Connection": "close",
        **kwargs.pop("headers", {}),
    }
    return requests.request(
        method, f"{env['uri']}/api/2.0/mlflow/{endpoint}", headers=headers, timeout=30, **kwargs
    )


def test_a_script_logs_with_the_stock_client(mlflow_env, alice):
    from mlflow import MlflowClient

    from webapp.projects.models import Project
    from webapp.runs.metric_store import series_read
    from webapp.runs.models import Run

    mlflow = mlflow_env["mlflow"]
    exp = mlflow.set_experiment("grpo-sweep")
    project = Project.objects.get(pk=int(exp.experiment_id))
    assert project.name == "grpo-sweep" and project.owner == alice
    assert mlflow.set_experiment("grpo-sweep").experiment_id == exp.experiment_id  # found, not recreated

    with mlflow.start_run(run_name="lr-1e-3") as active:
        run_id = active.info.run_id
        mlflow.log_param("lr", "0.001")
        mlflow.log_params(
            {"optimizer.name": "adam", "optimizer.betas": "[0.9, 0.99]", "epochs": 3, "flag": True}
        )
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"reward": 0.5, "kl": float("nan"), "ratio": float("inf")}, step=7)
        mlflow.set_tag("team", "rl")
        mlflow.set_tag("stage", "warmup")
        MlflowClient().delete_tag(run_id, "stage")
        mlflow.log_text("hello", "notes/hello.txt")
        mlflow.log_dict({"a": 1}, "cfg.json")

    run = Run.objects.get(pk=int(run_id))
    assert (run.kind, run.status, run.name, run.project_id) == (
        "external",
        "succeeded",
        "lr-1e-3",
        project.pk,
    )
    assert run.config == {
        "lr": 0.001,
        "optimizer": {"name": "adam", "betas": [0.9, 0.99]},
        "epochs": 3,
        "flag": True,
    }
    assert "team=rl" in run.tags and not any(t.startswith("stage") for t in run.tags)
    # the metrics are orlab's own series: what the run page and its live charts read
    stored = series_read([run.pk], ["loss"])[run.pk]["loss"]
    assert stored["steps"].tolist() == [0, 1, 2, 3, 4]

    client = MlflowClient()
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.end_time is not None
    assert got.data.params == {
        "lr": "0.001",
        "optimizer.name": "adam",
        "optimizer.betas": "[0.9, 0.99]",
        "epochs": "3",
        "flag": "True",
    }
    assert got.data.tags["team"] == "rl" and "stage" not in got.data.tags
    assert got.data.tags["mlflow.runName"] == "lr-1e-3"
    assert got.data.metrics["loss"] == pytest.approx(0.2)
    assert math.isnan(got.data.metrics["kl"]) and got.data.metrics["ratio"] == math.inf

    history = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(s, pytest.approx(1.0 / (s + 1))) for s in range(5)]
    assert all(m.timestamp > 1e12 for m in history)
    paged = client._tracking_client.store.get_metric_history(run_id, "loss", max_results=2)
    assert [m.step for m in paged] == [0, 1] and paged.token
    rest = client._tracking_client.store.get_metric_history(
        run_id, "loss", max_results=10, page_token=paged.token
    )
    assert [m.step for m in rest] == [2, 3, 4] and rest.token is None

    assert sorted(a.path for a in client.list_artifacts(run_id)) == ["cfg.json", "notes"]
    local = client.download_artifacts(run_id, "notes/hello.txt")
    assert Path(local).read_text() == "hello"
    from django.test import Client

    browser = Client()
    browser.force_login(alice)
    page = browser.get(f"/runs/{run_id}/").content.decode()
    assert 'data-testid="mlflow-artifacts"' in page and "notes/hello.txt" in page and "cfg.json" in page

    # a second run, then search with MLflow's grammar
    with mlflow.start_run(run_name="lr-1e-2"):
        mlflow.log_param("lr", "0.01")
        mlflow.log_metric("loss", 0.05, step=3)
        mlflow.set_tag("team", "rl")
    found = mlflow.search_runs(
        experiment_ids=[exp.experiment_id],
        filter_string="metrics.loss < 0.1 AND params.lr = '0.01' AND tags.team LIKE 'r%'",
        output_format="list",
    )
    assert [r.info.run_name for r in found] == ["lr-1e-2"]
    ordered = mlflow.search_runs(
        experiment_ids=[exp.experiment_id], order_by=["metrics.loss DESC"], output_format="list"
    )
    assert [r.info.run_name for r in ordered] == ["lr-1e-3", "lr-1e-2"]
    finished = client.search_runs(
        [exp.experiment_id], "attributes.status = 'FINISHED' AND attributes.run_name ILIKE 'LR-1E-3'"
    )
    assert [r.info.run_id for r in finished] == [run_id]
    page = client.search_runs([exp.experiment_id], max_results=1)
    assert len(page) == 1 and page.token
    page2 = client.search_runs([exp.experiment_id], max_results=1, page_token=page.token)
    assert len(page2) == 1 and page2[0].info.run_id != page[0].info.run_id

    # delete / restore: lifecycle_stage, search's view types
    client.delete_run(run_id)
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert [r.info.run_name for r in client.search_runs([exp.experiment_id])] == ["lr-1e-2"]
    client.restore_run(run_id)
    assert len(client.search_runs([exp.experiment_id])) == 2

    # experiments: get, get-by-name, search; the default experiment "0" is the caller's "Default"
    assert client.get_experiment(exp.experiment_id).name == "grpo-sweep"
    assert [e.name for e in client.search_experiments(filter_string="name LIKE 'grpo%'")] == ["grpo-sweep"]
    mlflow.set_experiment(experiment_id="0")
    with mlflow.start_run() as default_run:
        mlflow.log_metric("x", 1.0)
    assert Run.objects.get(pk=int(default_run.info.run_id)).project.name == "Default"


def test_bad_input_answers_mlflow_errors(mlflow_env, settings):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    mlflow = mlflow_env["mlflow"]
    client = MlflowClient()
    exp_id = client.create_experiment("errors")
    with pytest.raises(MlflowException) as exc:
        client.create_experiment("errors")
    assert exc.value.error_code == "RESOURCE_ALREADY_EXISTS"
    run_id = client.create_run(exp_id).info.run_id

    client.log_param(run_id, "lr", "0.1")
    client.log_param(run_id, "lr", "0.1")  # the same value again is fine
    with pytest.raises(MlflowException) as exc:
        client.log_param(run_id, "lr", "0.2")
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE" and "Changing param values" in exc.value.message

    def post(endpoint, body):
        return _raw(mlflow_env, "POST", endpoint, json=body)

    r = post("runs/log-metric", {"run_id": run_id, "key": "x", "value": 1, "timestamp": 0, "step": 2**53 + 1})
    assert (
        r.status_code == 400
        and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        and "step" in r.json()["message"]
    )
    assert post(
        "runs/log-metric", {"run_id": run_id, "key": "x", "value": 1, "timestamp": 0, "step": -(2**53)}
    ).ok
    # a NUL in any field (a tag value, a logged input's name) is a 400 naming it, not a database error
    for endpoint, body, field in [
        ("runs/set-tag", {"run_id": run_id, "key": "k", "value": "a\x00b"}, "value"),
        (
            "runs/log-inputs",
            {
                "run_id": run_id,
                "datasets": [{"dataset": {"name": "d\x00", "digest": "1", "source_type": "x"}}],
            },
            "datasets[0].dataset.name",
        ),
    ]:
        r = post(endpoint, body)
        assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE", r.content
        assert field in r.json()["message"] and "NUL" in r.json()["message"]
    r = post("runs/log-metric", {"run_id": run_id, "key": "x", "value": "abc", "timestamp": 0})
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE" and "value" in r.json()["message"]
    r = post("runs/log-metric", {"run_id": run_id, "value": 1, "timestamp": 0})
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE" and "key" in r.json()["message"]
    metrics = [{"key": "m", "value": 1, "timestamp": 0, "step": i} for i in range(1001)]
    r = post("runs/log-batch", {"run_id": run_id, "metrics": metrics})
    assert r.status_code == 400 and "at most 1000 metrics" in r.json()["message"]
    params = [{"key": f"p{i}", "value": "v"} for i in range(101)]
    r = post("runs/log-batch", {"run_id": run_id, "params": params})
    assert r.status_code == 400 and "at most 100 params" in r.json()["message"]
    r = post("runs/log-parameter", {"run_id": run_id, "key": "big", "value": "x" * 6001})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert post("runs/log-parameter", {"run_id": run_id, "key": "big", "value": "x" * 6000}).ok
    r = _raw(
        mlflow_env, "POST", "runs/log-batch", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code in (400, 401)
    r = post("runs/search", {"experiment_ids": [exp_id], "filter": "metrics.loss << 1"})
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = post("runs/search", {"experiment_ids": [exp_id], "filter": "params.lr > '1'"})
    assert r.status_code == 400 and "comparator" in r.json()["message"]
    r = post("runs/search", {"experiment_ids": [exp_id], "filter": "metrics.x = 1 OR metrics.x = 2"})
    assert r.status_code == 400
    assert [m.step for m in client.get_metric_history(run_id, "x")] == [-(2**53)]
    found = post("runs/search", {"experiment_ids": [exp_id], "filter": "metrics.x = 1"}).json()["runs"]
    assert [r["info"]["run_id"] for r in found] == [run_id]

    # artifacts: the size cap, paths that climb out of the run's folder
    settings.ORLAB_MLFLOW_ARTIFACT_MAX_BYTES = 100
    base = f"{mlflow_env['uri']}/api/2.0/mlflow-artifacts/artifacts/{exp_id}/{run_id}/artifacts"
    auth = {"Authorization": f"Bearer {mlflow_env['token']}", "Connection": "close"}
    assert requests.put(f"{base}/ok.bin", data=b"x" * 100, headers=auth, timeout=30).ok
    r = requests.put(f"{base}/big.bin", data=b"x" * 101, headers=auth, timeout=30)
    assert r.status_code == 400 and "limit of 100 bytes" in r.json()["message"]
    r = requests.put(f"{base}/sub/%2E%2E/%2E%2E/escape.txt", data=b"x", headers=auth, timeout=30)
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    r = requests.put(f"{base}/ok.bin/inside.txt", data=b"x", headers=auth, timeout=30)  # a file, not a folder
    assert r.status_code == 400 and r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert [a.path for a in client.list_artifacts(run_id)] == ["ok.bin"]

    # unknown endpoints, missing credentials
    r = _raw(mlflow_env, "POST", "runs/no-such-thing", json={})
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    r = requests.get(f"{mlflow_env['uri']}/api/2.0/mlflow/runs/get", params={"run_id": run_id}, timeout=30)
    assert r.status_code == 401 and r.json()["error_code"] == "UNAUTHENTICATED"
    r = requests.get(f"{mlflow_env['uri']}/nothing/here", timeout=30)
    assert r.status_code == 404 and r.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    with pytest.raises(MlflowException) as exc:
        client.get_run("123456789")
    assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert mlflow.get_experiment_by_name("no such experiment") is None


def test_another_team_sees_nothing(mlflow_env, bob, alice, monkeypatch, live_server):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from rest_framework.authtoken.models import Token

    from webapp.runs.models import Run

    client = MlflowClient()
    exp_id = client.create_experiment("alice-private")
    run_id = client.create_run(exp_id).info.run_id
    client.log_metric(run_id, "secret", 42.0)
    client.log_param(run_id, "p", "v")

    bob_token = Token.objects.create(user=bob).key
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", bob_token)
    for call in (
        lambda: client.get_run(run_id),
        lambda: client.get_experiment(exp_id),
        lambda: client.log_metric(run_id, "secret", 0.0, step=1),
        lambda: client.set_tag(run_id, "x", "y"),
        lambda: client.get_metric_history(run_id, "secret"),
        lambda: client.search_runs([exp_id]),
        lambda: client.delete_run(run_id),
    ):
        with pytest.raises(MlflowException) as exc:
            call()
        assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        assert "42" not in exc.value.message
    r = requests.get(
        f"{mlflow_env['uri']}/api/2.0/mlflow-artifacts/artifacts",
        params={"path": f"{exp_id}/{run_id}/artifacts"},
        headers={"Authorization": f"Bearer {bob_token}"},
        timeout=30,
    )
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    # bob's own "alice-private" is his own project; alice's stays untouched
    assert client.get_experiment_by_name("alice-private") is None
    assert client.create_experiment("alice-private") != exp_id
    assert (
        Run.objects.get(pk=int(run_id)).tags == []
        and client.search_runs([client.get_experiment_by_name("alice-private").experiment_id]) == []
    )

    # basic auth with alice's orlab username and password works; a wrong password does not
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw-alice")
    assert client.get_run(run_id).data.params == {"p": "v"}
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    with pytest.raises(MlflowException) as exc:
        client.get_run(run_id)
    assert exc.value.error_code == "UNAUTHENTICATED"


def _tiny_trainer(output_dir, run_name):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=32, n_positions=16))
    data = [{"input_ids": torch.randint(0, 32, (8,)), "labels": torch.randint(0, 32, (8,))} for _ in range(8)]
    args = TrainingArguments(
        output_dir=str(output_dir),
        run_name=run_name,
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="mlflow",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    return Trainer(model=model, args=args, train_dataset=data)


@pytest.mark.slow  # importing transformers and accelerate takes most of it
def test_transformers_trainer_reports_to_orlab(mlflow_env, alice, monkeypatch, tmp_path):
    """transformers' own MLflowCallback (report_to="mlflow"), a tiny model on the CPU: with
    MLFLOW_EXPERIMENT_NAME the run lands in that project; without it, in the caller's "Default"."""
    from webapp.runs.metric_store import series_read
    from webapp.runs.models import Run

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "hf-tiny")
    _tiny_trainer(tmp_path / "a", "tiny-a").train()
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME")
    _forget_active_experiment()  # as a second script would start
    _tiny_trainer(tmp_path / "b", "tiny-b").train()

    a, b = Run.objects.get(name="tiny-a"), Run.objects.get(name="tiny-b")
    assert (a.project.name, a.project.owner) == ("hf-tiny", alice)
    assert (b.project.name, b.project.owner) == ("Default", alice)
    for run in (a, b):
        assert (run.kind, run.status) == ("external", "succeeded")
        assert run.config["learning_rate"] == 1e-3 and run.config["max_steps"] == 3  # params, typed
        assert run.mlflow.params["learning_rate"] == "0.001"  # and as sent
        series = series_read([run.pk])[run.pk]
        assert series["loss"]["steps"].tolist() == [1, 2, 3]
        assert all(math.isfinite(v) for v in series["loss"]["values"])


def _verl_tracking_module():
    """verl's tracking module on its own: verl is installed with --no-deps (the Makefile), so that
    its heavy dependencies never replace the CPU torch, and only verl/utils/tracking.py is loaded,
    by path (importing the verl package would pull those dependencies)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("verl")  # a top-level package is found without being imported
    assert spec is not None and spec.submodule_search_locations, "verl is a dev dependency (--no-deps)"
    path = Path(next(iter(spec.submodule_search_locations))) / "utils" / "tracking.py"
    module_spec = importlib.util.spec_from_file_location("orlab_test_verl_tracking", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def test_verl_tracking_logs_metrics_and_validation_generations_as_samples(mlflow_env, alice):
    """verl's trainer.logger=['console','mlflow'] path: Tracking(default_backend=['mlflow']) logs the
    metrics; ValidationGenerationsLogger uploads val_step{N}.json, which becomes samples of the run."""
    from webapp.runs.models import Run, Sample
    from webapp.runs.samples import prompt_text

    verl = _verl_tracking_module()
    tracking = verl.Tracking(
        project_name="verl-gsm8k", experiment_name="ppo-qwen", default_backend=["mlflow"]
    )
    tracking.log({"val-core/gsm8k/reward/mean@1": 0.25, "actor/pg_loss": 0.5}, step=1)
    tracking.log({"val-core/gsm8k/reward/mean@1": 0.5, "actor/pg_loss": 0.25}, step=2)
    generations = verl.ValidationGenerationsLogger("verl-gsm8k", "ppo-qwen")
    generations.log(
        ["mlflow"], [("1+1=?", "2", 1.0), ("2+2=?", "5", 0.0), ("3+3=?", "six", float("nan"))], step=2
    )
    generations.log(["mlflow"], [("1+1=?", "2", 1.0)], step=4)
    tracking.finish()

    run = Run.objects.get(name="ppo-qwen")
    assert (run.project.name, run.project.owner, run.status) == ("verl-gsm8k", alice, "succeeded")
    assert {s.key for s in run.series.all()} == {"val-core/gsm8k/reward/mean_at_1", "actor/pg_loss"}
    samples = list(Sample.objects.filter(run=run).order_by("step", "id"))
    assert [(s.step, prompt_text(s), s.completion, s.reward) for s in samples[:2]] == [
        (2, "1+1=?", "2", 1.0),
        (2, "2+2=?", "5", 0.0),
    ]
    assert samples[2].reward is None and samples[2].extra == {
        "source": "verl validation",
        "score": "nan",
        "group_status": "kept",  # a group of its own (one generation of that prompt), no reward
    }
    assert {s.phase for s in samples} == {"eval"}
    assert [(s.group_index, s.member_index) for s in samples] == [(0, 0), (1, 0), (2, 0), (0, 0)]
    assert [s.step for s in samples] == [2, 2, 2, 4]
    # the file itself is an artifact of the run as well
    from mlflow import MlflowClient

    assert {a.path for a in MlflowClient().list_artifacts(str(run.pk))} == {
        "val_step2.json",
        "val_step4.json",
    }


def test_experiment_names_resolve_own_first_then_shared(mlflow_env, alice, make_user):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from webapp.projects.services import project_add_member, project_create

    carol, dave = make_user("carol"), make_user("dave")
    for owner in (carol, dave):
        project_add_member(project=project_create(user=owner, name="shared"), user=alice)
    solo = project_create(user=carol, name="carol-only")
    project_add_member(project=solo, user=alice)

    client = MlflowClient()
    assert client.get_experiment_by_name("carol-only").experiment_id == str(solo.pk)  # a member's project
    with pytest.raises(MlflowException) as exc:
        client.get_experiment_by_name("shared")
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "carol" in exc.value.message and "dave" in exc.value.message
    own = client.create_experiment("shared")  # the caller's own project of that name comes first
    assert client.get_experiment_by_name("shared").experiment_id == own


def test_history_pages_walk_chunks_and_late_points(mlflow_env):
    """get-history pages read only their chunks: a series over several chunks (4,096 points each),
    with late points in a chunk of their own that overlaps the tail, comes back whole and in order."""
    from mlflow import MlflowClient

    client = MlflowClient()
    run_id = client.create_run(client.create_experiment("long")).info.run_id

    def batch(steps):
        metrics = [{"key": "loss", "value": s / 10, "timestamp": 1_700_000_000_000, "step": s} for s in steps]
        assert _raw(mlflow_env, "POST", "runs/log-batch", json={"run_id": run_id, "metrics": metrics}).ok

    for lo in range(0, 5000, 1000):
        batch(range(lo, lo + 1000))
    batch(range(10_000, 10_010))
    batch(range(5000, 5006))  # late: below the last step, stored in a chunk of their own
    store = client._tracking_client.store
    steps, token = [], None
    while True:
        page = store.get_metric_history(run_id, "loss", max_results=1000, page_token=token)
        steps += [m.step for m in page]
        assert all(m.value == pytest.approx(m.step / 10) for m in page)
        token = page.token
        if token is None:
            break
    assert steps == [*range(5006), *range(10_000, 10_010)]
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == steps
