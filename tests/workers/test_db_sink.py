"""DbSink in-process against PostgreSQL: buffering, flushing, checkpoints, samples, cancellation."""

import time

import numpy as np
import pytest

from tests.conftest import wait_for
from webapp.runs.metric_store import series_read
from webapp.runs.models import Checkpoint, MetricSeries, Run, Sample
from workers.sinks import DbSink

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def running(project, alice, settings):
    settings.ORLAB_SINK_FLUSH_INTERVAL = 0.1
    settings.ORLAB_HEARTBEAT_INTERVAL = 0.1
    return Run.objects.create(
        project=project, name="r", kind="synthetic", status="running", created_by=alice, attempt=1
    )


def test_points_reach_the_database_without_an_explicit_flush(running):
    sink = DbSink(running.id, 1)
    try:
        sink.log(0, {"loss": 1.0, "acc": 0.5})
        wait_for(lambda: MetricSeries.objects.filter(run=running).count() == 2, 5, message="background flush")
    finally:
        sink.close()


def test_close_stores_everything_logged(running):
    sink = DbSink(running.id, 1)
    for step in range(5000):
        sink.log(step, {"a": step, "b": -step, "c": float("nan")})
    sink.close()
    got = series_read([running.id])[running.id]
    assert np.array_equal(got["a"]["steps"], np.arange(5000))
    assert np.array_equal(got["b"]["values"], -np.arange(5000.0))
    assert np.isnan(got["c"]["values"]).all()


def test_checkpoint_is_recorded_after_the_points_before_it(running, tmp_path):
    sink = DbSink(running.id, 1)
    for step in range(100):
        sink.log(step, {"loss": 1.0})
    directory = sink.checkpoint_dir(99)
    sink.save_checkpoint(99, directory, {"loss": 1.0})
    # no waiting: save_checkpoint flushed synchronously before recording
    assert MetricSeries.objects.get(run=running, key="loss").count == 100
    ckpt = Checkpoint.objects.get(run=running)
    assert ckpt.step == 99 and ckpt.path == str(directory) and directory.is_dir()
    sink.close()


def test_samples_are_stored(running):
    sink = DbSink(running.id, 1)
    sink.log_samples(
        3, [{"prompt": "1+1", "completion": "2", "reward": 1.0, "verdict": "correct", "seed": 7}]
    )
    sink.close()
    sample = Sample.objects.get(run=running)
    assert (sample.step, sample.verdict, sample.length, sample.extra) == (3, "correct", 1, {"seed": 7})


def test_cancel_request_reaches_should_stop(running):
    sink = DbSink(running.id, 1)
    try:
        time.sleep(0.3)
        assert not sink.should_stop()
        Run.objects.filter(pk=running.pk).update(cancel_requested=True)
        wait_for(sink.should_stop, 5, message="should_stop")
        assert sink.cancelled and not sink.lost
    finally:
        sink.close()


def test_a_run_taken_away_stops_the_trainer_as_lost(running):
    sink = DbSink(running.id, 1)
    try:
        Run.objects.filter(pk=running.pk).update(status="lost")
        wait_for(sink.should_stop, 5, message="should_stop")
        assert sink.lost and not sink.cancelled
    finally:
        sink.close()
