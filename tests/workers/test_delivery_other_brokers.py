"""Re-sending provably gone messages (issue 11.5) on the brokers other than Redis, with real ones:

- the embedded filesystem broker (workers.fs_transport): a taken message waits in the ``reserved``
  folder under its worker's host and pid until acked, so the outbox sees where it is; a message
  reserved by a dead process, or in neither folder, is re-sent once and runs once; one reserved by a
  live process, or still queued, is not re-sent;
- RabbitMQ (127.0.0.1:5672): it cannot be inspected, so the outbox never re-sends there; a message
  a consumer took and died with is put back by RabbitMQ itself, once (nothing lost, nothing doubled).
"""

import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.utils import timezone

from tests.conftest import NPG_CONFIG, wait_for
from webapp.outbox import broker, sender
from webapp.outbox.models import Message
from webapp.runs.metric_store import series_read
from webapp.runs.models import Run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
RABBITMQ_URL = os.environ.get("ORLAB_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


@contextmanager
def web_broker(settings, url: str, options: dict):
    """Point this (the web and control) process's Celery app and settings at another broker."""
    from workers.celery import app

    def switch(to, opts):
        app.conf.broker_url = app.conf.broker_write_url = app.conf.broker_read_url = to
        app.conf.broker_transport_options = opts
        app._pool = None
        app.amqp._producer_pool = None

    before = app.conf.broker_url, dict(app.conf.broker_transport_options or {})
    settings.CELERY_BROKER_URL, settings.CELERY_BROKER_TRANSPORT_OPTIONS = url, options
    switch(url, options)
    try:
        yield
    finally:
        switch(*before)


@pytest.fixture
def fs_broker(tmp_path, settings):
    """The embedded broker's folders as webapp/settings.py lays them out under ORLAB_VAR_DIR."""
    from kombu.transport import TRANSPORT_ALIASES

    TRANSPORT_ALIASES.setdefault("orlabfs", "workers.fs_transport:Transport")
    var = tmp_path / "var"
    folders = {sub: var / "broker" / sub for sub in ("queue", "processed", "control")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    options = {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "processed_folder": str(folders["processed"]),
        "control_folder": str(folders["control"]),
        "store_processed": False,
    }
    with web_broker(settings, "orlabfs://", options):
        yield var


def launch(api, project, name):
    resp = api.post(
        "/api/runs/",
        {"project": project.id, "name": name, "kind": "tabular", "config": NPG_CONFIG},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    return resp.json()["id"]


# A worker's consumer as kombu runs it: take one message with late acks (into the reserved folder),
# say so, then die without acking (SIGKILL: nothing restores it) or wait to be killed.
TAKE = r"""
import os, signal, sys, time
from kombu import Connection
from kombu.transport import TRANSPORT_ALIASES
TRANSPORT_ALIASES.setdefault("orlabfs", "workers.fs_transport:Transport")
url, queue, options = sys.argv[1], sys.argv[2], eval(sys.argv[3])
with Connection(url, transport_options=options) as conn:
    channel = conn.default_channel
    message = None
    while message is None:
        message = channel.basic_get(queue, no_ack=False)
        time.sleep(0.05)
    print("took", message.headers.get("id"), flush=True)
    if sys.argv[4] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(600)
"""


def take(url: str, queue: str, options: dict, then: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", TAKE, url, queue, repr(options), then],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    line = proc.stdout.readline()
    assert line.startswith("took "), proc.stderr.read()[-3000:] if proc.poll() is not None else line
    return proc


def where(message: Message) -> str:
    found = broker.locate(message.queue, message.task_id)
    return found.where if found else "unknown"


def test_embedded_broker_resends_a_dead_workers_message_once_and_not_a_live_ones(
    start_worker, fs_broker, api, project, settings
):
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    reserved = fs_broker / "broker" / "reserved"
    settings.ORLAB_OUTBOX_RESEND_AFTER = 30
    dead, alive, queued = (launch(api, project, name) for name in ("dead", "alive", "queued"))
    messages = {m.subject_id: m for m in Message.objects.filter(subject="run")}
    assert all(m.sends == 1 for m in messages.values()), [(m.sends, m.last_error) for m in messages.values()]
    assert {where(m) for m in messages.values()} == {"queued"}  # three files in the queue folder

    # FIFO: the first taker gets "dead", the second "alive"; "queued" stays in the queue folder
    victim = take("orlabfs://", "short", options, "die")
    victim.wait(timeout=30)
    holder = take("orlabfs://", "short", options, "hold")
    try:
        assert where(messages[dead]) == "reserved" and where(messages[alive]) == "reserved"
        assert len(list(reserved.iterdir())) == 2
        Message.objects.update(sent_at=timezone.now() - timedelta(minutes=5))  # all went out long ago

        assert sender.resend_gone() == 1  # only the dead process's message
        assert {m.subject_id: m.sends for m in Message.objects.all()} == {dead: 2, alive: 1, queued: 1}
        assert where(messages[dead]) == "queued"  # back in the queue, its dead reservation removed
        assert [p.name.split("@")[1] for p in reserved.iterdir()] == [str(holder.pid)]
        assert sender.resend_gone() == 0  # queued now: never twice
    finally:
        holder.kill()
        holder.wait()

    # the holder died too: its message is re-sent now, once; a message no folder holds (the broker's
    # files were wiped) is re-sent as well
    Message.objects.filter(subject_id=queued).update(sent_at=timezone.now() - timedelta(minutes=5))
    for path in (fs_broker / "broker" / "queue").iterdir():
        if broker._file_task_id(path) == messages[queued].task_id:
            path.unlink()
    assert where(messages[queued]) == "absent"
    Message.objects.filter(subject_id=alive).update(sent_at=timezone.now() - timedelta(minutes=5))
    assert sender.resend_gone() == 2
    assert sender.resend_gone() == 0
    assert list(reserved.iterdir()) == []

    # a real worker on the embedded broker runs each once and acks: nothing is left reserved
    worker = start_worker("w1", CELERY_BROKER_URL="", ORLAB_VAR_DIR=str(fs_broker))
    for run_id in (dead, alive, queued):
        wait_for(
            lambda r=run_id: Run.objects.get(pk=r).status == "succeeded", 90, message=worker.log()[-3000:]
        )
        gap = series_read([run_id], ["gap"])[run_id]["gap"]
        assert np.array_equal(gap["steps"], np.arange(NPG_CONFIG["iterations"] + 1))  # one execution
    wait_for(lambda: list(reserved.iterdir()) == [], 30, message="the worker's acks")
    settings.ORLAB_OUTBOX_RESEND_AFTER = 0
    assert sender.resend_gone() == 0  # ended: settled, never re-sent
    assert {m.subject_id: m.sends for m in Message.objects.all()} == {dead: 2, alive: 2, queued: 2}
    assert all(m.settled_at is not None for m in Message.objects.all())


def _rabbitmq_depth(queue: str) -> int:
    from kombu import Connection

    with Connection(RABBITMQ_URL) as conn:
        _, count, _ = conn.default_channel.queue_declare(queue=queue, passive=True)
        return count


def test_rabbitmq_is_never_resent_to_and_puts_back_a_dead_consumers_message_once(api, project, settings):
    """Nothing can prove a message gone on RabbitMQ (the README's queues section): the outbox never
    re-sends there, even a message that was purged (that run stays queued until resumed by hand). A
    message taken by a consumer that died unacked is not lost: RabbitMQ re-queues it when the
    connection closes, so there is still exactly one copy."""
    from kombu import Connection

    queue = f"orlab-test-{uuid.uuid4().hex[:12]}"  # its own queue on the shared server
    with web_broker(settings, "amqp://guest:guest@127.0.0.1:1//", {}):  # down: the message waits
        run_id = launch(api, project, "rabbit")
    message = Message.objects.get(subject="run", subject_id=run_id)
    assert message.sent_at is None
    # sent to the test's own queue, so that no other worker of the shared server takes it
    Message.objects.filter(pk=message.pk).update(queue=queue)
    with web_broker(settings, RABBITMQ_URL, {}):
        try:
            assert sender.deliver([message.pk]) == 1
            assert _rabbitmq_depth(queue) == 1
            settings.ORLAB_OUTBOX_RESEND_AFTER = 0
            Message.objects.filter(pk=message.pk).update(sent_at=timezone.now() - timedelta(minutes=5))
            message.refresh_from_db()
            assert broker.locate(queue, message.task_id) is None  # cannot be inspected
            assert sender.resend_gone() == 0 and _rabbitmq_depth(queue) == 1

            victim = take(RABBITMQ_URL, queue, {}, "die")
            victim.wait(timeout=30)
            wait_for(lambda: _rabbitmq_depth(queue) == 1, 30, message="RabbitMQ to put the message back")
            assert sender.resend_gone() == 0
            time.sleep(0.5)
            assert _rabbitmq_depth(queue) == 1  # one copy, not two
            assert Message.objects.get(pk=message.pk).sends == 1
            Run.objects.filter(pk=run_id).update(status="cancelled")
        finally:
            with Connection(RABBITMQ_URL) as conn:
                conn.default_channel.queue_delete(queue)
