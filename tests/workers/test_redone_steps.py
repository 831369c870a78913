"""One rule for redone steps (issue 11 point 6): after a resume, the newest attempt's metrics, samples
and evaluations replace the older attempt's for the steps it redoes; a retried batch within an
attempt is stored once; attempt boundaries are recorded. The real DbSink on the test database."""

from __future__ import annotations

from collections import Counter

import pytest
from django.utils import timezone

from webapp.runs import services
from webapp.runs.metric_store import series_read
from webapp.runs.models import Evaluation, MetricSeries, Run, RunAttempt, Sample
from workers.sinks import DbSink

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def run(project, settings):
    settings.ORLAB_SINK_FLUSH_INTERVAL = 0.05
    return Run.objects.create(
        project=project, name="r", kind="synthetic", status="running", heartbeat_at=timezone.now()
    )


def train(sink: DbSink, steps, value: float, *, checkpoint_at=None, evaluate_at=()):
    """What a trainer does at each step: metrics, two samples, an evaluation now and then."""
    for step in steps:
        sink.log(step, {"loss": value + step, "reward": value})
        sink.log_samples(step, [{"prompt": f"p{step}", "completion": f"{value}"}] * 2)
        if step in evaluate_at:
            sink.log_evaluation(step, "gen", {"acc": value}, {"k": 1})
        if step == checkpoint_at:
            sink.save_checkpoint(step, sink.checkpoint_dir(step), {"loss": value})


def test_a_resumed_attempt_replaces_the_redone_steps_metrics_samples_and_evaluations(run):
    first = DbSink(run.id, 1)
    train(first, range(10), 100.0, checkpoint_at=4, evaluate_at=(0, 5, 9))
    first.close()
    services.run_fail(run.id, 1, error="worker died", traceback="")  # stands in for lost
    run.refresh_from_db()
    services.run_resume(run)
    Run.objects.filter(pk=run.id).update(status="running", heartbeat_at=timezone.now())  # claimed

    resume_from = services.resume_directory(run)  # the step-4 checkpoint
    idle = DbSink(run.id, 2, resume_from=resume_from)
    idle.close()  # a resume that ends before writing anything keeps the older attempt's records
    assert Sample.objects.filter(run=run).count() == 20

    second = DbSink(run.id, 2, resume_from=resume_from)  # the same attempt, delivered again
    train(second, range(5, 10), 200.0, evaluate_at=(5, 9))
    second.close()

    loss = series_read([run.id], ["loss"])[run.id]["loss"]
    assert loss["steps"].tolist() == list(range(10))
    assert loss["values"].tolist() == [100.0 + s for s in range(5)] + [200.0 + s for s in range(5, 10)]
    series = MetricSeries.objects.get(run=run, key="loss")
    assert (series.count, series.last_step, series.last_value) == (10, 9, 209.0)
    assert (series.min_value, series.max_value) == (100.0, 209.0)

    samples = [(s.step, s.completion) for s in Sample.objects.filter(run=run)]  # decoded on load
    assert Counter(step for step, _ in samples) == {step: 2 for step in range(10)}  # none twice
    assert {c for step, c in samples if step >= 5} == {"200.0"}
    assert {c for step, c in samples if step < 5} == {"100.0"}

    evaluations = list(
        Evaluation.objects.filter(run=run).order_by("step").values_list("step", "metrics", "attempt")
    )
    assert evaluations == [(0, {"acc": 100.0}, 1), (5, {"acc": 200.0}, 2), (9, {"acc": 200.0}, 2)]

    attempts = list(
        RunAttempt.objects.filter(run=run).values_list("attempt", "first_step", "resumed_from_step")
    )
    assert attempts == [(1, 0, None), (2, 5, 4)]


def test_a_retried_batch_is_stored_once(run):
    """A batch whose commit happened but whose answer was lost is written again by the retry."""
    sink = DbSink(run.id, 1)
    with sink._write_lock:  # hold the background flusher off while we write by hand
        sink.log(0, {"loss": 1.0})
        sink.log_samples(0, [{"prompt": "p", "completion": "c"}] * 3)
        batch = sink._swap()
        sink._write(batch)
        sink._write(batch)  # the retry
    sink.log_evaluation(3, "gen", {"acc": 0.5}, {"k": 1})
    sink.log_evaluation(3, "gen", {"acc": 0.5}, {"k": 1})  # the trainer thread's retry
    sink.close()
    assert Sample.objects.filter(run=run).count() == 3
    assert MetricSeries.objects.get(run=run, key="loss").count == 1
    assert Evaluation.objects.filter(run=run).count() == 1
