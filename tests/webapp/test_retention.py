"""Checkpoint sizes and the retention policy, with real directories under the artifact store and
PostgreSQL: keep the last K, every M-th, the best by a metric (max and min); never the newest, one with
a pending evaluation or scoring job; never a directory the platform did not write."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from trainers.common.compute_config import RetentionConfig
from webapp.runs import services
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Checkpoint, Evaluation, Run
from webapp.runs.retention import Candidate, run_artifact_dir, steps_to_keep

pytestmark = pytest.mark.django_db


@pytest.fixture
def make_run(project, settings):
    made = []

    def make(retention: dict | None = None, kind: str = "rl") -> Run:
        config = {"retention": retention} if retention is not None else {}
        run = Run.objects.create(project=project, name="r", kind=kind, config=config, status="running")
        made.append(run)
        return run

    yield make
    for run in made:
        shutil.rmtree(run_artifact_dir(run.id), ignore_errors=True)


def write(run: Run, step: int, metrics: dict | None = None, size: int = 1000, attempt: int = 1) -> Checkpoint:
    """A checkpoint directory as the worker's sink writes it, then recorded as the sink records it."""
    directory = run_artifact_dir(run.id) / f"attempt-{attempt}" / f"checkpoint-{step:08d}"
    (directory / "optimizer").mkdir(parents=True)
    (directory / "model.safetensors").write_bytes(b"w" * size)
    (directory / "optimizer" / "state.pt").write_bytes(b"o" * 24)
    return services.checkpoint_record(run.id, attempt, step, str(directory), metrics or {})


def live_steps(run: Run) -> list[int]:
    return sorted(Checkpoint.objects.filter(run=run, deleted_at__isnull=True).values_list("step", flat=True))


def test_size_is_the_directory_walk(make_run):
    run = make_run()
    c = write(run, 10, size=4096)
    link = Path(c.path) / "link-to-weights"
    os.symlink(Path(c.path) / "model.safetensors", link)  # a symlink is neither followed nor counted
    services.checkpoint_record(run.id, 1, 10, c.path, {})
    assert Checkpoint.objects.get(pk=c.pk).size_bytes == 4096 + 24


def test_without_a_policy_everything_is_kept(make_run):
    run = make_run()
    for step in (10, 20, 30):
        write(run, step)
    assert live_steps(run) == [10, 20, 30]


def test_keep_last_k_deletes_the_files_and_keeps_the_rows(make_run):
    run = make_run({"keep_last": 2})
    made = [write(run, step) for step in (10, 20, 30, 40, 50)]
    assert live_steps(run) == [40, 50]
    for c in made:
        row = Checkpoint.objects.get(pk=c.pk)
        assert Path(c.path).exists() == (row.deleted_at is None)
        assert row.size_bytes == 1024  # the size stays on the row of a deleted checkpoint
    assert Checkpoint.objects.filter(run=run).count() == 5


def test_keep_every_mth_step_and_the_newest(make_run):
    run = make_run({"keep_every": 20, "keep_last": 1})
    for step in (10, 20, 30, 40, 50):
        write(run, step)
    assert live_steps(run) == [20, 40, 50]


@pytest.mark.parametrize(("mode", "best"), [("max", 20), ("min", 10)])
def test_best_by_metric(make_run, mode, best):
    run = make_run({"keep_last": 1, "best_metric": "val/acc", "best_mode": mode})
    for step, acc in ((10, 0.1), (20, 0.5), (30, 0.3), (40, 0.2)):
        write(run, step, {"val/acc": acc})
    assert live_steps(run) == sorted({best, 40})


def test_best_metric_read_from_the_logged_metrics_when_the_checkpoint_has_none(make_run):
    run = make_run({"keep_last": 1, "best_metric": "val/acc"})
    steps = np.array([10, 20, 30])
    metrics_record(run.id, {"val/acc": Columns.of(steps, np.array([0.2, 0.9, 0.1]), np.zeros(3))})
    for step in (10, 20, 30, 40):
        write(run, step)
    assert live_steps(run) == [20, 40]


def test_a_pending_evaluation_protects_its_checkpoint(make_run):
    run = make_run({"keep_last": 1})
    first = write(run, 10)
    ev = Evaluation.objects.create(run=run, checkpoint=first, step=10, k=4, status="queued")
    write(run, 20)
    write(run, 30)
    assert live_steps(run) == [10, 30]
    Evaluation.objects.filter(pk=ev.pk).update(status="running")
    write(run, 40)
    assert live_steps(run) == [10, 40]
    Evaluation.objects.filter(pk=ev.pk).update(status="succeeded")
    write(run, 50)
    assert live_steps(run) == [50]
    assert not Path(first.path).exists()


def test_a_queued_scoring_job_protects_its_checkpoint(make_run, alice, project):
    from webapp.datasets.models import Dataset, ScoringJob

    run = make_run({"keep_last": 1}, kind="reward")
    first = write(run, 10)
    dataset = Dataset.objects.create(project=project, name="prefs", kind="preference", status="ready")
    job = ScoringJob.objects.create(dataset=dataset, checkpoint=first, created_by=alice)
    write(run, 20)
    assert live_steps(run) == [10, 20]
    ScoringJob.objects.filter(pk=job.pk).update(status="succeeded")
    write(run, 30)
    assert live_steps(run) == [30]


def test_a_run_that_starts_from_a_checkpoint_protects_it_until_it_ends(make_run, project):
    run = make_run({"keep_last": 1}, kind="sft")
    first = write(run, 10)
    child = Run.objects.create(
        project=project,
        name="rl",
        kind="rl",
        config={"model_path": f"checkpoint:{first.pk}"},
        status="queued",
    )
    write(run, 20)
    assert live_steps(run) == [10, 20]
    Run.objects.filter(pk=child.pk).update(status="interrupted")  # may resume from its base again
    write(run, 30)
    assert live_steps(run) == [10, 30]
    Run.objects.filter(pk=child.pk).update(status="succeeded")
    write(run, 40)
    assert live_steps(run) == [40]


def test_paths_the_platform_did_not_write_are_neither_measured_nor_deleted(make_run, tmp_path):
    run = make_run({"keep_last": 1})
    outside = tmp_path / "client-checkpoint"
    outside.mkdir()
    (outside / "weights").write_bytes(b"x" * 10)
    c = services.checkpoint_record(run.id, 1, 5, str(outside), {})
    # the run's whole folder recorded as a "checkpoint" (an API client could send it) is not one either
    whole = services.checkpoint_record(run.id, 1, 6, str(run_artifact_dir(run.id)), {})
    write(run, 10)
    write(run, 20)
    assert Checkpoint.objects.get(pk=c.pk).size_bytes is None
    assert live_steps(run) == [5, 6, 20]
    assert outside.exists() and run_artifact_dir(run.id).exists() and whole.deleted_at is None


def test_a_deleted_checkpoint_cannot_be_evaluated_or_scored(make_run, api, project):
    from webapp.datasets.models import Dataset

    run = make_run({"keep_last": 1})
    first = write(run, 10)
    write(run, 20)
    bench = Dataset.objects.create(project=project, name="bench", kind="problems", status="ready")
    resp = api.post(f"/api/checkpoints/{first.id}/evaluate/", {"benchmark": bench.id})
    assert resp.status_code == 400
    assert "deleted by the retention policy" in resp.json()["errors"]["checkpoint"][0]
    assert not Evaluation.objects.filter(checkpoint=first).exists()


def test_re_recording_a_step_revives_it(make_run):
    run = make_run({"keep_last": 1, "best_metric": "val/acc"})
    write(run, 10, {"val/acc": 0.1})
    write(run, 20, {"val/acc": 0.5})
    assert live_steps(run) == [20]
    # a later attempt writes step 10 again (a fresh directory), now the best: the row is live again
    again = write(run, 10, {"val/acc": 0.9}, attempt=2)
    assert again.deleted_at is None and Path(again.path).exists()
    assert live_steps(run) == [10, 20]
    # what checkpoint_record returns says whether retention deleted the checkpoint just recorded
    assert write(run, 5, {"val/acc": 0.0}).deleted_at is not None


def test_steps_to_keep_rules():
    policy = RetentionConfig(keep_last=2, keep_every=3, best_metric="m", best_mode="max")
    items = [
        Candidate(s, v) for s, v in ((1, 0.5), (2, None), (3, 0.1), (4, 0.9), (5, 0.9), (6, 0.2), (7, 0.3))
    ]
    # newest two (6, 7), multiples of 3 (3, 6), the best (4: the earliest of the equal 0.9s)
    assert steps_to_keep(policy, items) == {3, 4, 6, 7}
    protected = [*items[:1], Candidate(2, None, protected=True), *items[2:]]
    assert steps_to_keep(policy, protected) == {2, 3, 4, 6, 7}
    assert steps_to_keep(RetentionConfig(keep_last=1), []) == set()
