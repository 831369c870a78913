"""The housekeeping's sweeps (issue 11: no stuck states), on the real database. The task runs here in
this process, as the control worker would run it; the worker-process path is in test_delivery.py."""

from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from webapp.datasets.models import Dataset
from webapp.outbox.models import Message
from webapp.runs.models import Run
from workers import tasks

pytestmark = pytest.mark.django_db


def importing_dataset(project, alice, name="big"):
    return Dataset.objects.create(project=project, name=name, kind="preference", created_by=alice)


def upload_file(settings, name: str) -> Path:
    uploads = Path(settings.ORLAB_ARTIFACTS) / "uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    path = uploads / name
    path.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    return path


def import_message(dataset, path, **claim):
    return Message.objects.create(
        task="workers.tasks.import_dataset",
        args=[dataset.id, str(path)],
        queue="short",
        subject="dataset",
        subject_id=dataset.id,
        sent_at=timezone.now(),
        **claim,
    )


def test_an_import_whose_worker_died_ends_failed_with_the_reason_and_its_upload_removed(
    project, alice, settings
):
    settings.ORLAB_HEARTBEAT_TIMEOUT = 45
    now = timezone.now()
    dead, alive = importing_dataset(project, alice, "dead"), importing_dataset(project, alice, "alive")
    dead_file, alive_file = upload_file(settings, "dead.jsonl"), upload_file(settings, "alive.jsonl")
    claimed = {"claimed_at": now - timedelta(minutes=5), "settled_at": now - timedelta(minutes=5)}
    import_message(dead, dead_file, claimed_by="w1@h:7", heartbeat_at=now - timedelta(seconds=60), **claimed)
    import_message(alive, alive_file, claimed_by="w2@h:8", heartbeat_at=now - timedelta(seconds=2), **claimed)

    done = tasks.housekeeping()

    assert done["jobs_failed"] == 1
    dead.refresh_from_db()
    assert dead.status == "failed" and "w1@h:7 stopped" in dead.error and "45 s" in dead.error
    assert not dead_file.exists()
    alive.refresh_from_db()
    assert alive.status == "importing" and alive_file.exists()  # its worker heartbeats


def test_a_second_delivery_of_a_claimed_import_is_dropped_and_leaves_the_upload(project, alice, settings):
    dataset = importing_dataset(project, alice)
    path = upload_file(settings, "claimed.jsonl")
    now = timezone.now()
    message = import_message(
        dataset, path, claimed_at=now, claimed_by="w1@h:7", heartbeat_at=now, settled_at=now
    )

    tasks.import_dataset.apply(args=[dataset.id, str(path)], task_id=message.task_id)  # as Celery delivers it

    dataset.refresh_from_db()
    assert dataset.status == "importing" and dataset.row_count == 0  # the first delivery is at it
    assert path.exists()  # its file is the first delivery's to read and remove


def test_an_unclaimed_import_message_is_claimed_once_and_imports(project, alice, settings):
    from webapp.datasets.services import dataset_create_for_import

    path = upload_file(settings, "fresh.jsonl")
    dataset = dataset_create_for_import(
        user=alice, project=project, name="fresh", kind="preference", path=path, filename=path.name
    )
    message = import_message(dataset, path)

    tasks.import_dataset.apply(args=[dataset.id, str(path)], task_id=message.task_id)

    dataset.refresh_from_db()
    message.refresh_from_db()
    assert dataset.status == "ready" and dataset.row_count == 1
    assert message.claimed_at is not None and message.heartbeat_at is None  # the heartbeat stopped
    assert not path.exists()


def test_a_waiting_run_is_never_swept_until_its_parent_ends_failed_cancelled_or_lost(project, alice):
    old = timezone.now() - timedelta(hours=1)
    parent = Run.objects.create(
        project=project, name="sft", kind="synthetic", status="running", heartbeat_at=timezone.now()
    )
    child = Run.objects.create(
        project=project, name="rl", kind="synthetic", status="waiting", config={"init_from_run": parent.id}
    )
    Run.objects.filter(pk=child.pk).update(heartbeat_at=old)  # an old heartbeat does not make it lost

    tasks.housekeeping()
    child.refresh_from_db()
    assert child.status == "waiting"

    Run.objects.filter(pk=parent.pk).update(heartbeat_at=old)  # the parent's worker died
    done = tasks.housekeeping()
    # marking the parent lost fails the child in the same transaction (webapp.runs.dependencies)
    assert done["lost"] == 1 and done["waiting_failed"] == 0
    child.refresh_from_db()
    assert child.status == "failed" and f"init_from_run {parent.id} ended lost" in child.error

    # the backstop: a child left waiting behind a parent that ended some other way
    other = Run.objects.create(
        project=project, name="rl", kind="synthetic", status="waiting", config={"init_from_run": parent.id}
    )
    assert tasks.housekeeping()["waiting_failed"] == 1
    other.refresh_from_db()
    assert other.status == "failed" and f"init_from_run {parent.id} ended lost" in other.error


def test_settled_messages_are_pruned_after_the_keep_period_but_a_job_at_work_keeps_its_row(
    project, alice, settings
):
    dataset = importing_dataset(project, alice)
    long_ago = timezone.now() - timedelta(days=settings.ORLAB_OUTBOX_KEEP_DAYS + 1)
    old = import_message(dataset, "/tmp/x", settled_at=long_ago)
    working = import_message(dataset, "/tmp/y", settled_at=long_ago, heartbeat_at=timezone.now())
    recent = import_message(dataset, "/tmp/z", settled_at=timezone.now())
    unsettled = import_message(dataset, "/tmp/w")
    Message.objects.filter(pk=unsettled.pk).update(created_at=long_ago)
    assert tasks.housekeeping()["pruned"] == 1
    assert set(Message.objects.values_list("pk", flat=True)) == {working.pk, recent.pk, unsettled.pk}
    assert not Message.objects.filter(pk=old.pk).exists()
