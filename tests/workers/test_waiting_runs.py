"""Issue 12.5: a run started from another run's checkpoint (init_from_run) waits as `waiting`, with no
task message and no worker slot, and moves on when its parent ends: queued when the parent succeeded
with a checkpoint (its message recorded in the same transaction), failed with the reason when the
parent failed, was cancelled or was lost."""

import shutil
from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import wait_for
from webapp.outbox.models import Message
from webapp.runs import services
from webapp.runs.models import Checkpoint, Run
from webapp.runs.retention import run_artifact_dir

#: the cheapest policy pair: a few SFT steps on the tiny model, then one RL step from its checkpoint
SFT = {"model_path": "tiny", "steps": 2, "batch_size": 4, "eval_every": 0, "generated_train": 64,
       "generated_eval": 4, "threads": 1, "warmup_steps": 0}  # fmt: skip
RL = {"model_path": "tiny", "steps": 1, "eval": {"every": 0}, "checkpoint_every": 0, "samples_per_step": 0,
      "reward_processes": 1, "threads": 1, "data": {"generated_train": 32, "generated_eval": 4},
      "rollout": {"n": 2, "prompts_per_step": 2, "stages": [{"until_step": 10**9, "max_response": 8}]}}  # fmt: skip


def launch(api, project, kind, config, **extra):
    body = {"project": project.id, "name": kind, "kind": kind, "config": config, **extra}
    resp = api.post("/api/runs/", body, format="json")
    assert resp.status_code == 201, resp.content
    return Run.objects.get(pk=resp.json()["id"])


def messages_of(run):
    return list(
        Message.objects.filter(subject=Message.Subject.RUN, subject_id=run.id).values_list("args", flat=True)
    )


def parent_row(project, status="running", **fields):
    """A policy run the way a worker holds it (no worker needed to end it through the services)."""
    run = Run.objects.create(
        project=project,
        name="sft",
        kind="sft",
        status=status,
        queue="cpu",
        heartbeat_at=timezone.now(),
        **fields,
    )
    shutil.rmtree(run_artifact_dir(run.id), ignore_errors=True)  # a new test database reuses run ids
    return run


def with_checkpoint(run):
    """A checkpoint folder where a worker's sink writes one, and its row."""
    directory = run_artifact_dir(run.id) / "attempt-1" / "checkpoint-00000001"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text("{}")
    Checkpoint.objects.create(run=run, step=1, path=str(directory), attempt=1)
    return directory


def child_of(user, project, parent, name="rl"):
    return services.run_create(
        user=user,
        project=project,
        name=name,
        kind="rl",
        config={**RL, "init_from_run": parent.id},
        queue="cpu",
    )


@pytest.mark.django_db
def test_a_child_of_an_unfinished_parent_waits_with_no_message_and_names_its_parent(api, alice, project):
    parent = launch(api, project, "sft", SFT, queue="cpu")
    assert parent.status == "queued" and messages_of(parent)
    child = launch(api, project, "rl", {**RL, "init_from_run": parent.id}, queue="cpu")
    assert child.status == "waiting"
    assert messages_of(child) == []  # nothing for a worker to take
    detail = api.get(f"/api/runs/{child.id}/").json()
    assert detail["waiting_for"] == {"id": parent.id, "name": parent.name, "status": "queued"}
    assert api.get(f"/api/runs/{parent.id}/").json()["waiting_for"] is None

    from django.test import Client

    page = Client()
    page.force_login(alice)
    html = page.get(f"/runs/{child.id}/").content.decode()
    assert 'data-testid="waiting-note"' in html and f'href="/runs/{parent.id}/"' in html
    assert (
        f'run #<span id="waiting-id">{parent.id}</span></a> (<span id="waiting-status">queued</span>)' in html
    )


@pytest.mark.django_db
def test_the_parent_succeeding_queues_its_waiting_children_with_their_messages(alice, project):
    parent = parent_row(project)
    child = child_of(alice, project, parent)
    grandchild = child_of(alice, project, child, name="rl 2")
    assert (child.status, grandchild.status) == ("waiting", "waiting")
    directory = with_checkpoint(parent)

    assert services.run_finish(parent.id, 1, cancelled=False, summary={})
    child.refresh_from_db()
    grandchild.refresh_from_db()
    assert child.status == "queued" and messages_of(child) == [[child.id, 1]]
    assert grandchild.status == "waiting" and messages_of(grandchild) == []  # its parent only just queued
    # the worker starts it from the parent's checkpoint, without waiting
    assert services.run_materialize_datasets(child)["model_path"] == str(directory.resolve())
    # a new child of a parent that is done is queued at once
    assert child_of(alice, project, parent, name="rl 3").status == "queued"


@pytest.mark.django_db
def test_children_released_together_are_enqueued_in_launch_order(alice, project):
    parent = parent_row(project)
    children = [child_of(alice, project, parent, name=f"rl {i}") for i in range(4)]
    with_checkpoint(parent)
    assert services.run_finish(parent.id, 1, cancelled=False, summary={})
    sent = Message.objects.filter(subject=Message.Subject.RUN, subject_id__in=[c.id for c in children])
    # the outbox keeps the order the messages were written in: first launched, first queued
    assert list(sent.order_by("id").values_list("subject_id", flat=True)) == [c.id for c in children]


@pytest.mark.django_db
@pytest.mark.parametrize("ending", ["failed", "cancelled", "lost", "no checkpoint", "interrupted"])
def test_a_parent_ending_without_a_checkpoint_fails_its_waiting_children_with_the_reason(
    alice, project, ending
):
    parent = parent_row(project, status="queued" if ending == "cancelled" else "running")
    child = child_of(alice, project, parent)
    grandchild = child_of(alice, project, child, name="rl 2")
    if ending == "failed":
        services.run_fail(parent.id, 1, error="boom", traceback="")
    elif ending == "cancelled":
        services.run_request_cancel(parent)
    elif ending == "lost":
        Run.objects.filter(pk=parent.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
        assert services.runs_mark_lost(timeout=60) == 1
    elif ending == "no checkpoint":
        services.run_finish(parent.id, 1, cancelled=False, summary={})
    else:
        services.run_finish(parent.id, 1, cancelled=False, summary={}, interrupted=True)
    child.refresh_from_db()
    grandchild.refresh_from_db()
    if ending == "interrupted":  # resumable: the children keep waiting for it
        assert (child.status, grandchild.status) == ("waiting", "waiting")
        return
    reason = "succeeded without a checkpoint" if ending == "no checkpoint" else f"ended {ending}"
    assert child.status == "failed" and f"init_from_run {parent.id} {reason}" in child.error
    assert child.finished_at is not None
    assert grandchild.status == "failed" and f"init_from_run {child.id} ended failed" in grandchild.error
    assert messages_of(child) == messages_of(grandchild) == []
    # a launch from a parent that can never have a checkpoint is refused, naming the field
    with pytest.raises(services.RunError) as refused:
        child_of(alice, project, parent, name="late")
    assert "config.init_from_run" in refused.value.field_errors


@pytest.mark.django_db
def test_a_waiting_run_is_cancelled_at_once_and_never_queued(api, alice, project):
    parent = parent_row(project)
    child = child_of(alice, project, parent)
    grandchild = child_of(alice, project, child, name="rl 2")
    cancelled = api.post(f"/api/runs/{child.id}/cancel/").json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    grandchild.refresh_from_db()
    assert grandchild.status == "failed" and f"init_from_run {child.id} ended cancelled" in grandchild.error

    with_checkpoint(parent)
    services.run_finish(parent.id, 1, cancelled=False, summary={})
    child.refresh_from_db()
    assert child.status == "cancelled" and messages_of(child) == []


@pytest.mark.django_db
def test_a_resumed_child_waits_again_while_its_parent_is_not_done(alice, project):
    parent = parent_row(project)
    child = child_of(alice, project, parent)
    Run.objects.filter(pk=child.pk).update(status="failed")  # e.g. it failed on a worker
    child.refresh_from_db()
    resumed = services.run_resume(child)
    assert resumed.status == "waiting" and resumed.attempt == 2 and messages_of(child) == []
    with_checkpoint(parent)
    services.run_finish(parent.id, 1, cancelled=False, summary={})
    child.refresh_from_db()
    assert child.status == "queued" and messages_of(child) == [[child.id, 2]]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_waiting_child_holds_no_worker_slot_and_runs_when_its_parent_succeeds(start_worker, api, project):
    """One worker with one slot on `cpu`. The parent sits on `gpu`, which it does not consume: the
    child waits, and a third run still gets the slot (a child that held it, polling for its parent,
    kept it from everything else). The parent then runs here, in the test's process, and the worker
    runs the child from its checkpoint."""
    from workers.tasks import execute_run

    worker = start_worker("w1", queues="cpu", concurrency=1)
    parent = launch(api, project, "sft", SFT, queue="gpu")
    child = launch(api, project, "rl", {**RL, "init_from_run": parent.id}, queue="cpu")
    other = launch(api, project, "synthetic", {"steps": 5, "keys": 1}, queue="cpu")
    status = lambda run: Run.objects.get(pk=run.pk).status  # noqa: E731
    wait_for(lambda: status(other) == "succeeded", 60, message=f"the other run:\n{worker.log()[-3000:]}")
    assert status(child) == "waiting"

    shutil.rmtree(run_artifact_dir(parent.id), ignore_errors=True)
    execute_run(parent.id, 1)
    assert status(parent) == "succeeded", Run.objects.get(pk=parent.pk).error
    wait_for(
        lambda: status(child) in ("succeeded", "failed"), 180, message=f"the child:\n{worker.log()[-3000:]}"
    )
    child.refresh_from_db()
    assert child.status == "succeeded", child.error
    assert child.started_at > Run.objects.get(pk=parent.pk).finished_at
