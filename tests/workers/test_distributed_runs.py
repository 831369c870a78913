"""Runs trained by several processes: a real Celery worker starts them through torch.distributed's
elastic launcher (gloo on the CPU), on real Redis and PostgreSQL. The trainer is the tiny regression
one (a real torch loop that takes seconds), so what is checked is the platform's multi-process path:
the same losses as one process, checkpoints recorded once, resume, cancel, a dead rank, a lost
worker, two node tasks joining through the c10d rendezvous, and a node that never comes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ARTIFACTS, WorkerProcess, _purge_broker, wait_for
from trainers.base import MemorySink, get_spec
from webapp.runs.metric_store import series_read
from webapp.runs.models import Checkpoint, Run, RunNode

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SMALL = {"batch_size": 7, "features": 4, "hidden": 8}
NODE_ENV = {"ORLAB_NODE_ADDR": "127.0.0.1"}  # the rendezvous endpoint the node tasks agree on


@pytest.fixture(scope="module")
def shared_worker(django_db_setup, django_db_blocker):
    """One worker for the tests that do not kill it or change its settings (a worker takes seconds
    to start; each test still has its own database state)."""
    _purge_broker()
    worker = WorkerProcess(extra_env={**NODE_ENV, "ORLAB_NODE_JOIN_TIMEOUT": "120"}, name="dist")
    yield worker
    worker.stop()


def launch(api, project, config, name="r"):
    resp = api.post(
        "/api/runs/",
        {"project": project.id, "name": name, "kind": "regression", "config": config},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    return resp.json()["id"]


def status(run_id):
    return Run.objects.get(pk=run_id).status


def series(run_id, key):
    data = series_read([run_id], [key])[run_id].get(key)
    return (data["steps"].tolist(), data["values"]) if data else ([], np.empty(0))


def one_process_losses(config, tmp_path) -> list[float]:
    spec = get_spec("regression")
    one = {k: v for k, v in config.items() if k not in ("nproc_per_node", "nodes", "sleep_per_step")}
    sink = MemorySink(workdir=tmp_path)
    spec.train_fn()(spec.validate(one), sink)
    return sink.series("train/loss")


def run_processes(run_id) -> list[str]:
    """Command lines of live processes started for this run (launcher, ranks, their children): each
    names the run's folder in the artifact store."""
    marker = f"{ARTIFACTS / 'runs' / str(run_id)}/"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(
                (ln for ln in (proc / "status").read_text().splitlines() if ln.startswith("State:")), ""
            )
        except OSError:
            continue
        if marker in cmdline and "zombie" not in state:
            found.append(f"{proc.name}: {cmdline}")
    return found


def wait_status(run_id, wanted, timeout, worker):
    wait_for(lambda: status(run_id) in wanted, timeout, message=f"status {wanted}:\n{worker.log()[-4000:]}")


def rank_pids(run_id) -> dict[int, int]:
    """{global rank: pid} of the run's live ranks (their environment names the rank)."""
    ranks = {}
    for line in run_processes(run_id):
        pid = int(line.split(":", 1)[0])
        try:
            env = dict(
                kv.split("=", 1)
                for kv in (Path("/proc") / str(pid) / "environ").read_text().split("\0")
                if "=" in kv
            )
        except OSError:
            continue
        if "workers.rank_entry" in line and "RANK" in env and "workers.launch" not in line:
            ranks[int(env["RANK"])] = pid
    return ranks


# Tests with a worker of their own come first: the shared worker, once started, would take their runs.


def test_a_lost_worker_takes_its_launcher_and_ranks_with_it(start_worker, api, project):
    w = start_worker("w1")
    run_id = launch(api, project, {**SMALL, "steps": 10_000, "sleep_per_step": 0.05, "nproc_per_node": 2})
    wait_for(lambda: len(rank_pids(run_id)) == 2 and len(series(run_id, "train/loss")[0]) >= 2, 120,
             message=f"two ranks training:\n{w.log()[-3000:]}")  # fmt: skip
    w.kill()  # SIGKILL to the worker's process group, as a machine losing the worker
    wait_for(lambda: not run_processes(run_id), 60, message="the run's processes to exit")
    from webapp.runs import services

    wait_for(lambda: services.runs_mark_lost(timeout=3) or status(run_id) == "lost", 30, message="lost")
    assert status(run_id) == "lost"


def test_a_run_fails_with_its_reason_when_not_every_node_joins_in_time(start_worker, api, project):
    worker = start_worker("w1", **NODE_ENV, ORLAB_NODE_JOIN_TIMEOUT="6")
    # one of the worker's two slots is busy, so the second node task cannot start in time
    busy = api.post(
        "/api/runs/",
        {
            "project": project.id,
            "name": "busy",
            "kind": "synthetic",
            "config": {"steps": 10**6, "sleep_per_step": 0.01},
        },
        format="json",
    ).json()["id"]
    wait_for(lambda: status(busy) == "running", 60, message="the busy run")
    run_id = launch(api, project, {**SMALL, "steps": 3, "nodes": 2})
    wait_status(run_id, ("failed", "succeeded"), 120, worker)
    run = Run.objects.get(pk=run_id)
    assert run.status == "failed"
    assert run.error.startswith("only 1 of 2 nodes joined within 6 s"), run.error
    wait_for(lambda: not run_processes(run_id), 60, message="the run's processes to exit")
    api.post(f"/api/runs/{busy}/cancel/")
    # the second node task, once the slot freed, found nothing to claim
    wait_for(lambda: "no node rank to claim" in worker.log(), 60, message="the late node task")
    assert RunNode.objects.filter(run_id=run_id).count() == 1


def test_cancel_stops_every_rank_and_a_resume_continues_from_the_checkpoint(
    shared_worker, api, project, tmp_path
):
    worker = shared_worker
    config = {**SMALL, "steps": 150, "sleep_per_step": 0.05, "nproc_per_node": 2}
    run_id = launch(api, project, config)
    wait_for(
        lambda: len(series(run_id, "train/loss")[0]) >= 3, 120, message=f"points:\n{worker.log()[-3000:]}"
    )
    assert api.post(f"/api/runs/{run_id}/cancel/").status_code == 200
    wait_status(run_id, ("cancelled", "failed", "succeeded"), 60, worker)
    assert status(run_id) == "cancelled", Run.objects.get(pk=run_id).error
    wait_for(lambda: not run_processes(run_id), 30, message="the run's processes to exit")
    stop = Checkpoint.objects.get(run_id=run_id)  # the stop checkpoint, recorded once
    assert 3 <= stop.step < config["steps"]
    assert sorted(p.name for p in Path(stop.path).iterdir()) == ["state.pt"]  # rank 0's files only

    assert api.post(f"/api/runs/{run_id}/resume/").json()["attempt"] == 2
    wait_status(run_id, ("succeeded", "failed"), 120, worker)
    run = Run.objects.get(pk=run_id)
    assert run.status == "succeeded", run.error + run.traceback
    steps, losses = series(run_id, "train/loss")
    assert steps == list(range(1, config["steps"] + 1))  # none lost, none twice
    np.testing.assert_allclose(losses, one_process_losses(config, tmp_path), rtol=1e-4)
    assert list(RunNode.objects.filter(run_id=run_id).values_list("attempt", "node_rank")) == [(1, 0), (2, 0)]
    assert series(run_id, "train/world_size")[1].tolist() == [2.0] * config["steps"]
    assert Checkpoint.objects.filter(run_id=run_id).count() == 2  # the stop and the end


def test_a_dead_rank_fails_the_run_naming_it_and_leaves_no_process(shared_worker, api, project):
    worker = shared_worker
    run_id = launch(api, project, {**SMALL, "steps": 10_000, "sleep_per_step": 0.05, "nproc_per_node": 2})
    wait_for(
        lambda: len(series(run_id, "train/loss")[0]) >= 2, 120, message=f"points:\n{worker.log()[-3000:]}"
    )
    os.kill(rank_pids(run_id)[1], signal.SIGKILL)  # as the kernel's OOM killer would
    wait_status(run_id, ("failed", "cancelled", "succeeded"), 90, worker)
    run = Run.objects.get(pk=run_id)
    assert run.status == "failed"
    assert run.error.startswith("rank 1 on ") and "SIGKILL" in run.error, run.error
    wait_for(lambda: not run_processes(run_id), 60, message="the run's processes to exit")


def test_an_error_on_another_rank_than_zero_is_the_runs_error(shared_worker, api, project):
    worker = shared_worker
    run_id = launch(api, project, {**SMALL, "steps": 50, "fail_at_step": 3, "nproc_per_node": 2})
    wait_status(run_id, ("failed", "succeeded"), 120, worker)
    run = Run.objects.get(pk=run_id)
    assert run.status == "failed"
    assert "rank 1 on " in run.error and "regression failure at step 3 on rank 1" in run.error, run.error
    assert "fail_at_step" in run.traceback and "Traceback" in run.traceback
    assert series(run_id, "train/loss")[0] == [1, 2]  # what rank 0 logged before is kept
    wait_for(lambda: not run_processes(run_id), 60, message="the run's processes to exit")


def test_two_node_tasks_join_through_the_rendezvous_and_train_like_one_process(
    shared_worker, api, project, tmp_path
):
    worker = shared_worker
    config = {**SMALL, "steps": 3, "checkpoint_every": 2, "nodes": 2}
    run_id = launch(api, project, config)
    wait_status(run_id, ("succeeded", "failed"), 180, worker)
    run = Run.objects.get(pk=run_id)
    assert run.status == "succeeded", run.error + run.traceback
    assert run.rendezvous_endpoint.startswith("127.0.0.1:")
    assert sorted(RunNode.objects.filter(run_id=run_id).values_list("node_rank", flat=True)) == [0, 1]
    np.testing.assert_allclose(
        series(run_id, "train/loss")[1], one_process_losses(config, tmp_path), rtol=1e-4
    )
    assert series(run_id, "train/world_size")[1].tolist() == [2.0] * 3
    assert [c.step for c in Checkpoint.objects.filter(run_id=run_id).order_by("step")] == [2, 3]
    wait_for(lambda: not run_processes(run_id), 30, message="the run's processes to exit")
