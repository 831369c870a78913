"""The wandb-style module API (orlab_client.init / log / finish) against the real server (gunicorn on
the test database): configuration from ORLAB_URL / ORLAB_TOKEN / ORLAB_PROJECT, project names
resolved among the caller's own projects first, an outage spooled and synced, a bad token refused,
and a script's exit finishing (or failing) its run. The name resolution itself is also checked
through the API in-process (no server)."""

import subprocess
import sys
import textwrap

import pytest

import orlab_client
from orlab_client import AuthError, ProjectError
from orlab_client.cli import main as cli_main
from tests.client.test_client import make_client, server, token  # noqa: F401 (fixtures)
from tests.conftest import ROOT
from webapp.projects.models import Project
from webapp.projects.services import project_add_member, project_create
from webapp.runs.metric_store import series_read
from webapp.runs.models import Checkpoint, Evaluation, MetricSeries, Run, Sample


@pytest.fixture
def shared_names(alice, make_user):
    """carol and dave each own a project "shared" that alice is a member of."""
    for owner in ("carol", "dave"):
        user = make_user(owner)
        project_add_member(project=project_create(user=user, name="shared"), user=alice)
        project_add_member(project=project_create(user=user, name=f"only-{owner}"), user=alice)
    return "shared"


@pytest.mark.django_db
def test_project_names_resolve_own_first_then_member_and_ambiguous_names_the_owners(
    api, bob_api, alice, bob, shared_names
):
    url = "/api/projects/resolve/"
    r = api.get(url, {"name": "only-carol"})
    assert r.status_code == 200 and r.json()["owner"] == "carol" and r.json()["mine"] is False
    r = api.get(url, {"name": "shared"})
    assert r.status_code == 400
    assert "carol" in r.json()["errors"]["name"][0] and "dave" in r.json()["errors"]["name"][0]
    mine = project_create(user=alice, name="shared")  # her own wins over the ones she is a member of
    r = api.get(url, {"name": "shared"})
    assert r.status_code == 200 and r.json() == {
        "id": mine.id,
        "name": "shared",
        "owner": "alice",
        "mine": True,
    }
    # bob is a member of none of them: nothing is found, and nothing tells him they exist
    assert bob_api.get(url, {"name": "shared"}).status_code == 404
    assert bob_api.get(url, {"name": "only-carol"}).status_code == 404
    assert api.get(url).status_code == 400 and "name" in api.get(url).json()["errors"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_init_from_the_environment_logs_like_wandb(
    server,  # noqa: F811
    token,  # noqa: F811
    project,
    shared_names,
    tmp_path,
    monkeypatch,
):
    monkeypatch.setenv("ORLAB_URL", f"http://127.0.0.1:{server.port}")
    monkeypatch.setenv("ORLAB_TOKEN", token)
    monkeypatch.setenv("ORLAB_PROJECT", project.name)  # a name: alice's own "alice-lab"
    monkeypatch.setenv("ORLAB_SPOOL_DIR", str(tmp_path / "spool"))
    run = orlab_client.init(
        name="grpo", config={"lr": 1e-6, "model": {"name": "tiny"}}, group="sweep-a", tags=["trl"],
        flush_interval=0.1,
    )  # fmt: skip
    assert orlab_client.run is run and run.project_id == project.id
    for _ in range(5):
        orlab_client.log({"train/loss": 0.5, "train": {"reward": 1.0}})  # steps 0..4
    orlab_client.log({"eval/acc": 0.25}, step=10)
    orlab_client.log({"train/loss": 0.1})  # step 11
    orlab_client.log({"a": 1}, commit=False)  # step 12, kept for the next call
    orlab_client.log({"b": 2})  # step 12
    with pytest.raises(TypeError, match="'note' is str"):
        orlab_client.log({"note": "text"})
    orlab_client.log_samples([{"prompt": "1+1=", "completion": "2", "reward": 1.0, "verdict": "correct"}])
    orlab_client.log_evaluation(
        "gsm8k", {"pass@1": 0.41, "pass@1_ci": (0.3, 0.52)}, step=12, protocol={"k": 1}
    )
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "w.bin").write_bytes(b"w" * 64)
    orlab_client.log_checkpoint(folder, metrics={"train/loss": 0.1})
    orlab_client.finish()
    assert orlab_client.run is None and run.ended
    orlab_client.finish()  # nothing current: nothing happens

    row = Run.objects.get(pk=run.id)
    assert (row.project_id, row.name, row.kind, row.status) == (project.id, "grpo", "external", "succeeded")
    assert row.config == {"lr": 1e-6, "model": {"name": "tiny"}} and row.group == "sweep-a"
    assert row.tags == ["trl"]
    series = series_read([run.id], ["train/loss", "train/reward", "eval/acc", "a", "b"])[run.id]
    assert series["train/loss"]["steps"].tolist() == [0, 1, 2, 3, 4, 11]
    assert series["train/reward"]["steps"].tolist() == [0, 1, 2, 3, 4]
    assert series["eval/acc"]["steps"].tolist() == [10]
    assert series["a"]["steps"].tolist() == series["b"]["steps"].tolist() == [12]
    sample = Sample.objects.get(run_id=run.id)
    assert (sample.step, sample.verdict) == (12, "correct")
    ev = Evaluation.objects.get(run_id=run.id)
    assert (ev.step, ev.benchmark_name, ev.metrics) == (
        12,
        "gsm8k",
        {"pass@1": 0.41, "pass@1_ci": [0.3, 0.52]},
    )
    ckpt = Checkpoint.objects.get(run_id=run.id)
    assert ckpt.step == 12 and ckpt.metrics == {"train/loss": 0.1}

    # an id in the environment; a context manager; an exception fails the run
    monkeypatch.setenv("ORLAB_PROJECT", str(project.id))
    with pytest.raises(ZeroDivisionError), orlab_client.init(name="crash") as crashed:
        crashed.log({"x": 1.0})
        1 / 0  # noqa: B018
    assert Run.objects.get(pk=crashed.id).status == "failed"
    assert "ZeroDivisionError" in Run.objects.get(pk=crashed.id).error

    # a name alice sees nowhere becomes her own new project; one only in carol's is carol's
    fresh = orlab_client.init(project="brand-new")
    assert Project.objects.get(pk=fresh.project_id).owner.username == "alice"
    second = orlab_client.init(project="brand-new")  # init again: the open run is finished first
    assert second.project_id == fresh.project_id and fresh.ended
    assert Run.objects.get(pk=fresh.id).status == "succeeded"
    second.finish()
    carol = orlab_client.init(project="only-carol")
    assert Project.objects.get(pk=carol.project_id).owner.username == "carol"
    carol.finish()
    # the same name in two other owners' projects: a clear error naming both
    with pytest.raises(ProjectError) as err:
        orlab_client.init(project=shared_names)
    assert "carol" in str(err.value) and "dave" in str(err.value) and "ambiguous" in str(err.value)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_offline_spool_then_sync_and_a_bad_token(server, token, project, tmp_path):  # noqa: F811
    client = make_client(server, token, tmp_path)
    run = orlab_client.init(project=project.id, name="offline", client=client, flush_interval=60)
    server.stop()
    for step in range(200):
        run.log({"loss": float(step)})
    run.log_samples([{"prompt": "p", "completion": "c"}])
    run.log_evaluation("held-out", {"acc": 0.5})
    run.finish()
    assert run.offline and client.spooled_files()
    server.start()
    args = ["--url", client.url, "--token", token, "--spool-dir", str(tmp_path / "spool"), "sync"]
    assert cli_main(args) == 0 and client.spooled_files() == []
    assert MetricSeries.objects.get(run_id=run.id, key="loss").count == 200
    assert Sample.objects.get(run_id=run.id).step == 199
    assert Evaluation.objects.get(run_id=run.id).metrics == {"acc": 0.5}
    assert Run.objects.get(pk=run.id).status == "succeeded"

    with pytest.raises(AuthError, match="ORLAB_TOKEN"):
        orlab_client.init(project=project.id, url=client.url, token="not-a-token")
    with pytest.raises(AuthError):
        orlab_client.init(project="alice-lab", url=client.url, token="not-a-token")
    assert orlab_client.run is None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_script_that_exits_finishes_its_run(server, token, project, tmp_path):  # noqa: F811
    env = {
        "ORLAB_URL": f"http://127.0.0.1:{server.port}",
        "ORLAB_TOKEN": token,
        "ORLAB_PROJECT": "alice-lab",
        "ORLAB_SPOOL_DIR": str(tmp_path / "spool"),
        "PATH": "/usr/bin:/bin",
    }
    script = """
        import sys, orlab_client
        run = orlab_client.init(name=sys.argv[1])
        orlab_client.log({"loss": 1.0})
        print(run.id)
        if sys.argv[1] == "crash":
            raise RuntimeError("boom")
    """
    ids = {}
    for name in ("forgot-finish", "crash"):
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script), name],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == (1 if name == "crash" else 0), proc.stderr
        ids[name] = int(proc.stdout.split()[0])
    assert Run.objects.get(pk=ids["forgot-finish"]).status == "succeeded"
    crashed = Run.objects.get(pk=ids["crash"])
    assert crashed.status == "failed" and "RuntimeError: boom" in crashed.error
    assert MetricSeries.objects.get(run_id=crashed.id, key="loss").count == 1
