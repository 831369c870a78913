"""Message delivery (issue 11): the outbox, the queues, late acks and the housekeeping on `control`,
with real Redis, PostgreSQL and Celery worker processes."""

import json
import socket
import time
from contextlib import contextmanager
from datetime import timedelta

import numpy as np
import pytest
import redis
from django.utils import timezone

from tests.conftest import NPG_CONFIG, wait_for
from webapp.outbox import sender
from webapp.outbox.models import Message
from webapp.runs.metric_store import series_read
from webapp.runs.models import Run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def launch(api, project, kind, config, name="r"):
    resp = api.post(
        "/api/runs/", {"project": project.id, "name": name, "kind": kind, "config": config}, format="json"
    )
    assert resp.status_code == 201, resp.content
    return resp.json()["id"]


def status(run_id):
    """Read from the database, not the API: the API's read path marks lost runs itself."""
    return Run.objects.values_list("status", flat=True).get(pk=run_id)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def web_broker(url: str):
    """Point this (the web) process's Celery app at ``url``; workers keep the real Redis."""
    from workers.celery import app

    def switch(to):
        app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = to
        app._pool = None
        app.amqp._producer_pool = None

    before = app.conf.broker_url
    switch(url)
    try:
        yield
    finally:
        switch(before)


def test_launch_with_the_broker_down_answers_201_and_runs_when_it_is_back(start_worker, api, project):
    with web_broker(f"redis://127.0.0.1:{closed_port()}/0"):
        run_id = launch(api, project, "tabular", NPG_CONFIG)
    assert status(run_id) == "queued"
    (message,) = Message.objects.filter(subject="run", subject_id=run_id)
    assert message.sent_at is None and "refused" in message.last_error.lower()
    assert message.queue == "short"

    # the broker is back: the control worker's housekeeping sends what the web could not
    worker = start_worker("all", beat=True)
    wait_for(lambda: status(run_id) == "succeeded", 90, message=f"the run:\n{worker.log()[-3000:]}")
    message.refresh_from_db()
    assert message.sends == 1 and message.sent_at is not None


def test_a_dead_workers_run_is_lost_with_every_slot_busy_and_no_reader(start_worker, api, project):
    long_run = {"steps": 100_000, "keys": 1, "sleep_per_step": 0.01}
    start_worker(
        "control", queues="control", pool="solo", concurrency=1, beat=True, ORLAB_HEARTBEAT_TIMEOUT="4"
    )
    victim = start_worker("victim", queues="cpu", concurrency=1)
    doomed = launch(api, project, "synthetic", long_run, name="doomed")
    wait_for(lambda: status(doomed) == "running", 60, message=f"doomed running:\n{victim.log()[-3000:]}")
    busy = start_worker("busy", queues="cpu", concurrency=1)
    other = launch(api, project, "synthetic", long_run, name="other")
    wait_for(lambda: status(other) == "running", 60, message=f"other running:\n{busy.log()[-3000:]}")

    victim.kill()  # every cpu slot left is busy, and nobody reads the run
    wait_for(lambda: status(doomed) == "lost", 60, message="the housekeeping to mark the run lost")
    assert "heartbeat" in Run.objects.get(pk=doomed).error
    assert status(other) == "running"  # its worker heartbeats; it is not swept
    api.post(f"/api/runs/{other}/cancel/")
    wait_for(lambda: status(other) == "cancelled", 30, message="other cancelled")


def test_a_message_the_broker_lost_is_resent_once_and_runs_once(start_worker, api, project, settings):
    run_id = launch(api, project, "tabular", NPG_CONFIG)
    (message,) = Message.objects.filter(subject="run", subject_id=run_id)
    assert message.sends == 1
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    assert broker.llen("short") == 1
    settings.ORLAB_OUTBOX_RESEND_AFTER = 0  # no need to wait a minute here

    broker.delete("short")  # the broker restarted without persistence: the message is gone
    assert sender.resend_gone() == 1
    assert sender.resend_gone() == 0  # now it is in the queue again: not sent twice
    assert broker.llen("short") == 1

    worker = start_worker("w1")
    wait_for(lambda: status(run_id) == "succeeded", 60, message=f"the run:\n{worker.log()[-3000:]}")
    assert sender.resend_gone() == 0  # claimed and ended: settled, never re-sent
    message.refresh_from_db()
    assert message.sends == 2 and message.settled_at is not None
    gap = series_read([run_id], ["gap"])[run_id]["gap"]
    assert gap["steps"].tolist() == list(range(NPG_CONFIG["iterations"] + 1))  # one execution


def test_a_duplicate_delivery_of_a_claimed_run_is_dropped(start_worker, api, project, settings):
    from workers.celery import app

    worker = start_worker("w1")  # two slots: the duplicate is taken while the run runs
    config = {"steps": 150, "keys": 1, "sleep_per_step": 0.02}  # runs ~3 s: the duplicate lands meanwhile
    run_id = launch(api, project, "synthetic", config)
    wait_for(lambda: status(run_id) == "running", 60, message=f"running:\n{worker.log()[-3000:]}")
    message = Message.objects.get(subject="run", subject_id=run_id)
    # what Redis does when it restores a reservation: the same message, once more
    app.send_task(message.task, args=message.args, queue=message.queue, task_id=message.task_id)
    settings.ORLAB_OUTBOX_RESEND_AFTER = 0
    assert sender.resend_gone() == 0  # its run is claimed: never re-sent
    wait_for(lambda: "not claimable" in worker.log(), 60, message="the duplicate to be dropped")
    wait_for(lambda: status(run_id) == "succeeded", 60, message="the run")
    steps = series_read([run_id], ["train/loss"])[run_id]["train/loss"]["steps"]
    assert np.array_equal(steps, np.arange(config["steps"]))
    assert Run.objects.get(pk=run_id).attempt == 1
    assert worker.log().count(f"execute_run[{message.task_id}] received") == 2  # twice, run once


def reserve_as_a_worker_would(broker, queue: str, tag: str, taken_at: float) -> None:
    """What kombu's Redis transport does when a worker takes a message with late acks: pop it from
    the queue into the ``unacked`` hash, indexed by the time it was taken. Done here by hand because a
    worker cannot be killed reliably between taking a message and claiming its run."""
    raw = broker.rpop(queue)
    broker.hset("unacked", tag, json.dumps([json.loads(raw), "", queue]))
    broker.zadd("unacked_index", {tag: taken_at})


def test_a_message_reserved_by_a_dead_worker_is_resent_a_fresh_reservation_is_not(
    start_worker, api, project, settings
):
    settings.ORLAB_OUTBOX_RESEND_AFTER = 30
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    fresh = launch(api, project, "tabular", NPG_CONFIG, name="fresh")
    stale = launch(api, project, "tabular", NPG_CONFIG, name="stale")
    Message.objects.update(sent_at=timezone.now() - timedelta(minutes=5))  # both went out long ago
    reserve_as_a_worker_would(broker, "short", "tag-fresh", time.time())  # a live worker just took it
    reserve_as_a_worker_would(broker, "short", "tag-stale", time.time() - 300)  # taken, never claimed

    assert sender.resend_gone() == 1
    assert broker.hkeys("unacked") == [b"tag-fresh"]  # the dead one's copy is gone: no second delivery
    assert Message.objects.get(subject_id=stale).sends == 2
    assert Message.objects.get(subject_id=fresh).sends == 1

    broker.delete("unacked", "unacked_index")  # the live worker of "fresh" is this test: give it back
    Run.objects.filter(pk=fresh).update(status="cancelled")
    worker = start_worker("w1")
    wait_for(lambda: status(stale) == "succeeded", 60, message=f"the run:\n{worker.log()[-3000:]}")
