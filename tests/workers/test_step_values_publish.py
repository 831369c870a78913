"""A run publishes a dataset it produced (DAPO's step values) through its DbSink: validated whole,
stored as a new version linked to the run, idempotent on a resumed attempt, rejected with row detail."""

import json

import pytest

from webapp.datasets.models import Dataset, StepSolution
from webapp.datasets.step_values import value_summary
from webapp.runs.models import Run
from workers.sinks import DbSink

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def running(project, alice):
    return Run.objects.create(
        project=project, name="dapo", kind="dapo", status="running", created_by=alice, attempt=1
    )


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _row(values, steps=None, **extra):
    steps = steps or [f"step {i}" for i in range(len(values) - 1)]
    return {"prompt": "1+2+3=", "answer": "6", "solution": "\n".join(steps), "steps": steps, "values": values,
            "correct": values[-1] == 1.0, "verdict": "correct" if values[-1] == 1.0 else "wrong", **extra}  # fmt: skip


def test_published_rows_become_a_browsable_dataset_version(running, tmp_path):
    rows = [_row([0.5, 0.75, 1.0], problem_row=3), _row([0.5, 0.25, 0.0]), _row([0.25, 0.0, 0.0, 0.0])]
    sink = DbSink(running.id, 1)
    try:
        sink.publish_dataset(
            "step_values", "dapo-values", _write(tmp_path / "a.jsonl", rows), {"mc_rollouts": 4}
        )
        sink.publish_dataset("step_values", "dapo-values", _write(tmp_path / "b.jsonl", rows[:2]), {})
        # a resumed attempt publishing the same file again does not make a third version
        sink.publish_dataset("step_values", "dapo-values", tmp_path / "a.jsonl", {"mc_rollouts": 4})
    finally:
        sink.close()
    versions = list(Dataset.objects.filter(name="dapo-values").order_by("version"))
    assert [(d.version, d.row_count, d.kind, d.source_run_id) for d in versions] == [
        (1, 3, "step_values", running.id),
        (2, 2, "step_values", running.id),
    ]
    assert versions[0].meta["mc_rollouts"] == 4 and versions[0].status == "ready"
    first = StepSolution.objects.get(dataset=versions[0], row=0)
    assert first.values == [0.5, 0.75, 1.0] and first.correct and first.metadata == {"problem_row": 3}
    summary = value_summary(versions[0])
    assert summary["correct"] == [[0, 0.5, 1], [1, 0.75, 1], [2, 1.0, 1]]
    assert summary["wrong"][0] == [0, 0.375, 2] and summary["wrong"][3] == [3, 0.0, 1]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"prompt": "p", "solution": "s", "steps": ["s"], "values": [0.5]}, "len(steps) + 1"),
        ({"prompt": "p", "solution": "s", "steps": ["s"], "values": [0.5, 1.5]}, "probabilities"),
        ({"prompt": "p", "solution": "s", "steps": [], "values": [1.0]}, "non-empty list"),
        ({"solution": "s", "steps": ["s"], "values": [0.5, 1.0]}, "'prompt'"),
    ],
)
def test_a_bad_row_stores_nothing_and_names_the_line(running, tmp_path, bad, message):
    path = _write(tmp_path / "bad.jsonl", [_row([0.5, 1.0]), bad])
    sink = DbSink(running.id, 1)
    try:
        with pytest.raises(ValueError, match="line 2") as info:
            sink.publish_dataset("step_values", "dapo-values", path, {})
        assert message in str(info.value)
    finally:
        sink.close()
    assert not Dataset.objects.filter(name="dapo-values").exists() and not StepSolution.objects.exists()
