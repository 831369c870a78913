"""A reward model's held-out accuracies are evaluations of its run (issue 15 point 6): the reward
trainer, writing through the worker's database sink, records each evaluation (accuracy, RewardBench
sections, with their 95 % intervals) as an Evaluation row attached to the checkpoint of its step, which
the compare page's GET /api/compare/evaluations/ and the run's checkpoint table show."""

import pytest

from trainers.base import get_spec
from trainers.common.demo_data import generate_pairs, write_jsonl
from webapp.runs.checkpoint_evals import checkpoint_table
from webapp.runs.models import Evaluation, Run
from workers.sinks import DbSink

pytestmark = pytest.mark.django_db(transaction=True)


def test_reward_accuracies_are_evaluations_on_the_compare_page(api, project, alice, settings, tmp_path):
    settings.ORLAB_SINK_FLUSH_INTERVAL = 0.1
    settings.ORLAB_HEARTBEAT_INTERVAL = 0.1
    run = Run.objects.create(
        project=project, name="rm", kind="reward", status="running", created_by=alice, attempt=1
    )
    spec = get_spec("reward")
    config = spec.validate({
        **spec.presets["tiny-cpu-demo"], "epochs": 1, "max_steps": 2, "batch_size": 8, "max_length": 64,
        "train_dataset": str(write_jsonl(generate_pairs(32, seed=1), tmp_path / "train.jsonl")),
        "eval_dataset": str(write_jsonl(generate_pairs(48, seed=2), tmp_path / "eval.jsonl")),
    })  # fmt: skip
    sink = DbSink(run.id, 1)
    try:
        spec.train_fn()(config, sink)
    finally:
        sink.close()
    evals = list(Evaluation.objects.filter(run=run, status="succeeded").order_by("step"))
    assert [e.step for e in evals] == [0, 2]
    last = evals[-1]
    lo, hi = last.metrics["accuracy_ci"]
    assert lo <= last.metrics["accuracy"] <= hi
    assert last.checkpoint is not None and last.checkpoint.step == 2  # attached to the step's checkpoint
    shown = api.get("/api/compare/evaluations/", {"runs": str(run.id)}).json()["evaluations"]
    assert [e["step"] for e in shown] == [0, 2]
    assert {"accuracy", "accuracy_ci"} <= set(shown[-1]["metrics"])
    table = checkpoint_table(run)
    assert "accuracy" in table.columns[0].metrics
    cell = table.rows[-1].cells[table.columns[0].metrics.index("accuracy")]
    assert cell.value == last.metrics["accuracy"] and cell.ci == (lo, hi)
