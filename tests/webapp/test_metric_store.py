"""The chunked metric store on real PostgreSQL: round trips, idempotency, ordering, downsampling."""

import numpy as np
import pytest

from webapp.runs.downsample import m4
from webapp.runs.metric_store import Columns, metrics_record, series_read
from webapp.runs.models import MetricChunk, MetricSeries, Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(project, alice):
    return Run.objects.create(project=project, name="r", kind="external", status="running", created_by=alice)


def cols(steps, values=None):
    steps = np.asarray(steps)
    values = steps * 0.5 if values is None else values
    return Columns.of(steps, values, np.zeros(len(steps)))


def read(run, key, **kw):
    return series_read([run.id], [key], **kw)[run.id][key]


def test_round_trip_keeps_values_and_order(run):
    written = metrics_record(run.id, {"loss": cols([2, 0, 1], [3.0, 1.0, 2.0]), "acc": cols([0])})
    assert written == 4
    loss = read(run, "loss")
    assert loss["steps"].tolist() == [0, 1, 2]
    assert loss["values"].tolist() == [1.0, 2.0, 3.0]
    series = MetricSeries.objects.get(run=run, key="loss")
    assert (series.count, series.last_step, series.last_value) == (3, 2, 3.0)
    assert (series.min_value, series.max_value) == (1.0, 3.0)


def test_rewriting_stored_steps_is_a_no_op(run):
    metrics_record(run.id, {"loss": cols(range(100))})
    assert metrics_record(run.id, {"loss": cols(range(100))}) == 0
    assert metrics_record(run.id, {"loss": cols(range(50, 150))}) == 50
    got = read(run, "loss")
    assert got["steps"].tolist() == list(range(150))
    assert MetricSeries.objects.get(run=run, key="loss").count == 150


def test_repeated_step_within_a_batch_keeps_the_first(run):
    metrics_record(run.id, {"loss": cols([5, 5, 6], [1.0, 9.0, 2.0])})
    assert read(run, "loss")["values"].tolist() == [1.0, 2.0]


def test_late_points_fill_holes_without_duplicates(run):
    metrics_record(run.id, {"loss": cols([0, 2, 4, 6])})
    assert metrics_record(run.id, {"loss": cols([1, 2, 3, 4, 5])}) == 3
    got = read(run, "loss")
    assert got["steps"].tolist() == [0, 1, 2, 3, 4, 5, 6]
    assert MetricSeries.objects.get(run=run, key="loss").last_step == 6


def test_many_small_batches_fill_chunks_instead_of_multiplying_rows(run):
    for start in range(0, 10_000, 1000):
        metrics_record(run.id, {"loss": cols(range(start, start + 1000))})
    assert MetricChunk.objects.filter(series__run=run).count() == 3  # ceil(10000 / 4096)
    got = read(run, "loss")
    assert np.array_equal(got["steps"], np.arange(10_000))


def test_non_finite_values_are_stored_as_nan(run):
    metrics_record(run.id, {"loss": cols([0, 1, 2], [1.0, float("nan"), float("inf")])})
    values = read(run, "loss")["values"]
    assert values[0] == 1.0 and np.isnan(values[1]) and np.isinf(values[2])


def test_since_step_returns_only_newer_points(run):
    metrics_record(run.id, {"loss": cols(range(10_000))})
    got = read(run, "loss", since_step=9_990)
    assert got["steps"].tolist() == list(range(9_991, 10_000))


def test_read_downsamples_and_keeps_a_spike(run):
    values = np.ones(100_000)
    values[54_321] = 50.0
    metrics_record(run.id, {"loss": cols(range(100_000), values)})
    got = read(run, "loss", max_points=500)
    assert len(got["steps"]) <= 500
    assert 54_321 in got["steps"].tolist() and got["values"].max() == 50.0
    assert got["steps"][0] == 0 and got["steps"][-1] == 99_999


def test_m4_never_exceeds_budget_and_handles_nan():
    rng = np.random.default_rng(0)
    steps = np.sort(rng.choice(10**7, size=50_000, replace=False))
    values = rng.normal(size=50_000)
    values[::7] = np.nan
    for budget in (4, 10, 100, 2000):
        idx = m4(steps, values, budget)
        assert len(idx) <= budget
        assert np.all(np.diff(idx) > 0)
    assert len(m4(steps[:10], values[:10], 100)) == 10


def test_reading_several_runs_at_once(run, project, alice):
    other = Run.objects.create(project=project, name="r2", kind="external", status="running")
    metrics_record(run.id, {"loss": cols([0, 1])})
    metrics_record(other.id, {"loss": cols([0, 1, 2])})
    got = series_read([run.id, other.id], ["loss"])
    assert len(got[run.id]["loss"]["steps"]) == 2 and len(got[other.id]["loss"]["steps"]) == 3


@pytest.mark.django_db(transaction=True)
def test_a_writer_waiting_for_the_series_lock_does_not_drop_the_other_writers_points(run):
    """Two writers of the same series (the sink's flusher and a checkpoint's flush, or two API clients):
    the second waits for the first's lock, then must merge into the tail chunk as the first left it."""
    import threading
    import time

    from django.db import connection, transaction

    metrics_record(run.id, {"loss": cols(range(10))})  # a tail chunk with room left
    first_holds_lock = threading.Event()

    def first():
        try:
            with transaction.atomic():  # keeps the lock until the outer commit, after a pause
                metrics_record(run.id, {"loss": cols(range(10, 20))})
                first_holds_lock.set()
                time.sleep(0.5)
        finally:
            connection.close()

    def second():
        try:
            first_holds_lock.wait(5)
            metrics_record(run.id, {"loss": cols(range(20, 30))})  # blocks on the lock, then merges
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert read(run, "loss")["steps"].tolist() == list(range(30))
    assert MetricSeries.objects.get(run=run, key="loss").count == 30
