"""A worker's warm shutdown (SIGTERM) interrupts its runs: the trainer checkpoints and stops, the run
ends `interrupted` (resumable) and a resume continues from that checkpoint as a new attempt, with
each step's metrics and samples stored once (the newer attempt's for the steps it redid). Real
Celery worker processes on real Redis and PostgreSQL (workers/shutdown.py)."""

from __future__ import annotations

import os
import signal
from collections import Counter

import numpy as np
import pytest

from tests.conftest import wait_for
from webapp.runs.metric_store import series_read
from webapp.runs.models import Checkpoint, MetricSeries, Run, RunAttempt, Sample

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RL_TINY = {
    # long enough that the SIGTERM, sent once step 2 is visible, lands before the end on an idle
    # machine too: with 8 steps, and once with 24, CI's run had finished by then and ended succeeded
    # (a tiny step takes ~0.1 s there; the request reaches the sink at its next heartbeat, which the
    # worker below beats every 0.2 s)
    "steps": 40,
    "checkpoint_every": 0,  # no periodic checkpoint: the one the interrupt writes is the only one
    "rollout": {"n": 2, "prompts_per_step": 2, "stages": [{"until_step": 10**9, "max_response": 8}]},
    "eval": {"every": 0, "k": 1, "max_problems": 2},
    "data": {"generated_train": 20, "generated_eval": 2},
    "reward_processes": 1,
    "samples_per_step": 2,
}


def launch(api, project, kind, config):
    resp = api.post(
        "/api/runs/", {"project": project.id, "name": "r", "kind": kind, "config": config}, format="json"
    )
    assert resp.status_code == 201, resp.content
    return resp.json()["id"]


def last_step(run_id) -> int:
    steps = [s.last_step for s in MetricSeries.objects.filter(run_id=run_id) if s.last_step is not None]
    return max(steps, default=-1)


def steps_of(run_id, key) -> list[int]:
    return series_read([run_id], [key])[run_id].get(key, {"steps": np.empty(0)})["steps"].tolist()


@pytest.mark.timeout(600)  # two workers and 40 RL steps: minutes on a loaded 2-core machine
def test_sigterm_interrupts_a_running_rl_run_with_a_checkpoint_and_resume_continues_from_it(
    start_worker, api, project
):
    first = start_worker("w1", concurrency=1, ORLAB_HEARTBEAT_INTERVAL="0.2")
    run_id = launch(api, project, "rl", RL_TINY)
    wait_for(lambda: last_step(run_id) >= 2, 180, message=f"two RL steps:\n{first.log()[-3000:]}")

    os.kill(first.proc.pid, signal.SIGTERM)  # the main process only, as `docker stop` or `kill` does
    wait_for(
        lambda: Run.objects.get(pk=run_id).status != "running",
        60,
        message=f"the run to stop:\n{first.log()[-3000:]}",
    )
    first.proc.wait(timeout=60)  # the worker's warm shutdown ends once the run has stopped
    run = Run.objects.get(pk=run_id)
    assert run.status == "interrupted", (run.status, run.error)
    checkpoint = Checkpoint.objects.get(run_id=run_id)  # the one the interrupt wrote
    stopped_at = checkpoint.step
    assert 2 <= stopped_at < RL_TINY["steps"]
    assert stopped_at == last_step(run_id)  # everything logged is covered by the checkpoint
    one = RunAttempt.objects.get(run_id=run_id, attempt=1)
    assert one.status == "interrupted" and one.ended_at is not None

    start_worker("w2", concurrency=1)
    resumed = api.post(f"/api/runs/{run_id}/resume/").json()
    assert resumed["attempt"] == 2 and resumed["status"] == "queued"
    wait_for(
        lambda: Run.objects.get(pk=run_id).status in ("succeeded", "failed"), 240, message="the resumed run"
    )
    run = Run.objects.get(pk=run_id)
    assert run.status == "succeeded", run.traceback

    two = RunAttempt.objects.get(run_id=run_id, attempt=2)
    assert (two.resumed_from_step, two.first_step) == (stopped_at, stopped_at + 1)
    # every step once; attempt 2 continued after the checkpoint (it logged no step before it)
    steps = steps_of(run_id, "batch/skipped")  # logged at every step
    assert steps == list(range(1, RL_TINY["steps"] + 1))
    # training rollouts (the evaluation's rollouts are samples too, phase "eval", at their own steps)
    samples = list(Sample.objects.filter(run_id=run_id, phase="train").values_list("step", "client_key"))
    per_step = Counter(step for step, _ in samples)
    assert set(per_step) == set(range(1, RL_TINY["steps"] + 1))
    assert set(per_step.values()) == {RL_TINY["samples_per_step"]}  # none twice
    assert all(key.startswith("orlab:a1:") for step, key in samples if step <= stopped_at)
    assert all(key.startswith("orlab:a2:") for step, key in samples if step > stopped_at)
    keys = list(Sample.objects.filter(run_id=run_id).values_list("client_key", flat=True))
    assert len(keys) == len(set(keys))  # no rollout, training or evaluation, stored twice
    attempts = api.get(f"/api/runs/{run_id}/").json()["attempts"]
    assert [(a["attempt"], a["first_step"]) for a in attempts] == [(1, 0), (2, stopped_at + 1)]


def test_sigterm_to_every_worker_process_interrupts_a_multi_process_run_and_requeues_it(
    start_worker, api, project
):
    """systemd's stop signals the whole process group: the pool child running the node task survives
    it and asks for the interrupt; rank 0's sink stops the ranks at a checkpoint; with
    ORLAB_REQUEUE_INTERRUPTED=1 the run is queued again and another worker finishes it."""
    first = start_worker("w1", concurrency=1, ORLAB_REQUEUE_INTERRUPTED="1")
    config = {
        "batch_size": 7,
        "features": 4,
        "hidden": 8,
        "steps": 120,
        "sleep_per_step": 0.05,
        "nproc_per_node": 2,
    }
    run_id = launch(api, project, "regression", config)
    wait_for(lambda: last_step(run_id) >= 3, 120, message=f"points:\n{first.log()[-3000:]}")

    os.killpg(first.proc.pid, signal.SIGTERM)
    first.proc.wait(timeout=90)
    run = Run.objects.get(pk=run_id)
    assert (run.status, run.attempt) == ("queued", 2), (run.status, run.error)  # re-queued
    stop = Checkpoint.objects.get(run_id=run_id)
    assert stop.step == last_step(run_id) < config["steps"]
    assert RunAttempt.objects.get(run_id=run_id, attempt=1).status == "interrupted"

    start_worker("w2", concurrency=1)
    wait_for(
        lambda: Run.objects.get(pk=run_id).status in ("succeeded", "failed"), 120, message="the re-queued run"
    )
    run = Run.objects.get(pk=run_id)
    assert run.status == "succeeded", run.error + run.traceback
    assert steps_of(run_id, "train/loss") == list(range(1, config["steps"] + 1))  # none lost, none twice
    assert RunAttempt.objects.get(run_id=run_id, attempt=2).first_step == stop.step + 1
