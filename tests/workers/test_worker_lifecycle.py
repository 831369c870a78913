"""Runs executed by a real Celery worker process on real Redis and PostgreSQL."""

import numpy as np
import pytest

from tests.conftest import NPG_CONFIG, wait_for
from webapp.runs.metric_store import series_read
from webapp.runs.models import Checkpoint, MetricSeries, Run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def launch(api, project, kind, config, name="r"):
    resp = api.post(
        "/api/runs/", {"project": project.id, "name": name, "kind": kind, "config": config}, format="json"
    )
    assert resp.status_code == 201, resp.content
    return resp.json()["id"]


def status(api, run_id):
    return api.get(f"/api/runs/{run_id}/").json()["status"]


def steps_of(run_id, key):
    return series_read([run_id], [key])[run_id].get(key, {"steps": np.empty(0)})["steps"]


def test_tabular_run_goes_from_queued_to_succeeded_with_its_metrics(worker, api, project):
    run_id = launch(api, project, "tabular", NPG_CONFIG)
    wait_for(lambda: status(api, run_id) == "succeeded", 60, message=f"success:\n{worker.log()[-3000:]}")
    run = Run.objects.get(pk=run_id)
    assert run.started_at and run.finished_at and run.worker_host and run.code_version is not None
    gap = series_read([run_id], ["gap"])[run_id]["gap"]
    assert gap["steps"].tolist() == list(range(NPG_CONFIG["iterations"] + 1))
    assert gap["values"][-1] < gap["values"][0] * 1e-3  # NPG converged
    assert Checkpoint.objects.filter(run_id=run_id).exists()
    assert run.summary  # the trainer's summary is kept


def test_a_failing_trainer_keeps_its_traceback(worker, api, project):
    run_id = launch(api, project, "synthetic", {"steps": 50, "keys": 2, "fail_at_step": 20})
    wait_for(lambda: status(api, run_id) == "failed", 60, message="failure")
    run = Run.objects.get(pk=run_id)
    assert "synthetic failure at step 20" in run.error
    assert "Traceback" in run.traceback and "fail_at_step" in run.traceback
    assert steps_of(run_id, "train/loss").tolist() == list(range(20))  # what it logged before failing is kept


def test_cancel_stops_a_running_trainer_at_its_next_step(worker, api, project):
    run_id = launch(api, project, "synthetic", {"steps": 100_000, "keys": 2, "sleep_per_step": 0.01})
    wait_for(lambda: len(steps_of(run_id, "train/loss")) > 20, 60, message="first points")
    assert api.post(f"/api/runs/{run_id}/cancel/").json()["cancel_requested"] is True
    wait_for(lambda: status(api, run_id) == "cancelled", 30, message="cancelled")
    n = len(steps_of(run_id, "train/loss"))
    assert 20 < n < 100_000


def test_worker_killed_run_is_lost_then_resumes_without_lost_or_doubled_points(
    start_worker, api, project, settings
):
    settings.ORLAB_HEARTBEAT_TIMEOUT = 4  # the API's lost check runs in this process
    first = start_worker("w1")
    config = {"steps": 6000, "keys": 3, "sleep_per_step": 0.002, "checkpoint_every": 500}
    run_id = launch(api, project, "synthetic", config)
    wait_for(lambda: Checkpoint.objects.filter(run_id=run_id).count() >= 2, 90, message="two checkpoints")
    first.kill()
    logged_before_kill = len(steps_of(run_id, "train/loss"))
    wait_for(lambda: status(api, run_id) == "lost", 30, message="lost")
    assert "heartbeat" in Run.objects.get(pk=run_id).error

    start_worker("w2")
    resumed = api.post(f"/api/runs/{run_id}/resume/").json()
    assert resumed["attempt"] == 2 and resumed["status"] == "queued"
    wait_for(lambda: status(api, run_id) == "succeeded", 120, message="resumed run to finish")

    for key in ("train/loss", "train/reward", "policy/entropy"):
        steps = steps_of(run_id, key)
        assert steps.tolist() == list(range(config["steps"])), key  # none lost, none twice
        assert MetricSeries.objects.get(run_id=run_id, key=key).count == config["steps"]
    assert logged_before_kill > 1000
    attempts = set(Checkpoint.objects.filter(run_id=run_id).values_list("attempt", flat=True))
    assert attempts == {1, 2}


def test_an_rl_run_scores_rewards_in_a_process_pool_inside_the_worker(worker, api, project):
    # Celery's prefork children are daemonic; the RL trainer's reward pool must still start there.
    config = {
        "steps": 1,
        "rollout": {"n": 2, "prompts_per_step": 2, "stages": [{"until_step": 10**9, "max_response": 8}]},
        "eval": {"every": 0, "k": 1, "max_problems": 2},
        "data": {"generated_train": 20, "generated_eval": 2},
        "reward_processes": 1,
        "samples_per_step": 2,
    }
    run_id = launch(api, project, "rl", config)
    wait_for(lambda: status(api, run_id) in ("succeeded", "failed"), 180, message="rl run")
    run = Run.objects.get(pk=run_id)
    assert run.status == "succeeded", run.traceback
    samples = api.get(f"/api/runs/{run_id}/samples/").json()["results"]
    verdicts = [(s["verdict"], s["extra"]) for s in samples]
    assert samples and all(s["verdict"] in ("correct", "wrong", "no_answer") for s in samples), verdicts
    evals = api.get(f"/api/runs/{run_id}/evaluations/").json()["results"]
    assert [e["step"] for e in evals] == [0, 1] and evals[0]["benchmark_name"] == "eval"
