"""On-demand jobs on checkpoints: benchmark evaluation of a policy, reward-model scoring of a dataset.
The task bodies run in-process against PostgreSQL (their Celery plumbing is the same send_task path
the worker-lifecycle tests exercise with a real worker)."""

import json
import shutil

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from trainers.base import MemorySink, get_spec
from trainers.common.demo_data import generate_pairs, write_jsonl
from trainers.common.tiny import build_tiny_model
from webapp.datasets.models import PairScore, ScoringJob
from webapp.runs.models import Checkpoint, Evaluation, Run, Sample
from webapp.runs.retention import run_artifact_dir
from workers.tasks import evaluate_checkpoint, score_dataset

pytestmark = pytest.mark.django_db(transaction=True)


def upload(api, project, rows, name, kind):
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    f = SimpleUploadedFile(f"{name}.jsonl", content)
    resp = api.post("/api/datasets/", {"file": f, "name": name, "kind": kind, "project": project.id})
    assert resp.status_code == 201, resp.content
    return resp.json()["id"]


def checkpoint_of(project, kind, path, step=10):
    """A checkpoint of a new run, copied from ``path`` to where a worker writes one: workers load
    only those (webapp.runs.checkpoint_paths)."""
    run = Run.objects.create(project=project, name=kind, kind=kind, status="succeeded", queue="cpu")
    shutil.rmtree(run_artifact_dir(run.id), ignore_errors=True)  # a run id reused by a new test database
    directory = run_artifact_dir(run.id) / "attempt-1" / f"checkpoint-{step:08d}"
    shutil.copytree(path, directory, ignore=shutil.ignore_patterns("rm", "policy", "*.jsonl"))
    return Checkpoint.objects.create(run=run, step=step, path=str(directory))


def test_evaluate_a_policy_checkpoint_on_a_benchmark(api, bob_api, project, tmp_path):
    bench = upload(
        api, project, [{"prompt": f"{i}+1=", "answer": str(i + 1)} for i in range(6)], "bench", "problems"
    )
    ckpt = checkpoint_of(project, "sft", build_tiny_model(tmp_path / "policy"))
    resp = api.post(
        f"/api/checkpoints/{ckpt.id}/evaluate/", {"benchmark": bench, "k": 3, "max_new_tokens": 8}
    )
    assert resp.status_code == 202, resp.content
    assert bob_api.post(f"/api/checkpoints/{ckpt.id}/evaluate/", {"benchmark": bench}).status_code == 404
    evaluate_checkpoint(resp.json()["id"])
    ev = Evaluation.objects.get(pk=resp.json()["id"])
    assert ev.status == "succeeded", ev.error
    assert set(ev.metrics) >= {"avg@3", "pass@1", "pass@3"} and 0 <= ev.metrics["avg@3"] <= 1
    assert ev.protocol["k"] == 3 and ev.protocol["problems"] == 6 and "verifier" in ev.protocol
    listed = api.get(f"/api/runs/{ckpt.run_id}/evaluations/").json()["results"]
    assert listed[0]["benchmark_name"] == "bench v1"
    # its rollouts are samples of the run at the checkpoint's step (issue 14), once per evaluation
    stored = Sample.objects.filter(run_id=ckpt.run_id)
    assert stored.count() == 6 * 3
    assert {(s.phase, s.step, s.checkpoint_step) for s in stored} == {("eval", 10, 10)}
    assert sorted({(s.group_index, s.member_index) for s in stored}) == [
        (g, j) for g in range(6) for j in range(3)
    ]


def test_evaluate_rejects_a_preference_benchmark_and_reward_checkpoints(api, project, tmp_path):
    prefs = upload(api, project, [{"prompt": "p", "chosen": "a", "rejected": "b"}], "prefs", "preference")
    ckpt = checkpoint_of(project, "sft", tmp_path)
    resp = api.post(f"/api/checkpoints/{ckpt.id}/evaluate/", {"benchmark": prefs})
    assert resp.status_code == 400 and "benchmark" in resp.json()["errors"]


def test_a_reward_checkpoint_scores_every_pair(api, project, tmp_path):
    rows = generate_pairs(24, seed=3)
    ds = upload(
        api,
        project,
        [{k: r[k] for k in ("prompt", "chosen", "rejected", "source")} for r in rows],
        "p",
        "preference",
    )
    spec = get_spec("reward")
    train_file = write_jsonl(generate_pairs(64, seed=1), tmp_path / "train.jsonl")
    sink = MemorySink(workdir=tmp_path / "rm")
    (tmp_path / "rm").mkdir()
    spec.train_fn()(
        spec.validate({**spec.presets["tiny-cpu-demo"], "train_dataset": str(train_file), "epochs": 1}), sink
    )
    ckpt = checkpoint_of(project, "reward", sink.checkpoints[-1][1])
    resp = api.post(f"/api/checkpoints/{ckpt.id}/score/", {"dataset": ds})
    assert resp.status_code == 202, resp.content
    score_dataset(resp.json()["id"])
    job = ScoringJob.objects.get(pk=resp.json()["id"])
    assert job.status == "succeeded" and job.scored == 24 and job.progress == 1.0, job.error
    scores = PairScore.objects.filter(checkpoint=ckpt)
    assert scores.count() == 24
    assert all(abs(s.margin - (s.chosen - s.rejected)) < 1e-9 for s in scores)
    # scoring again replaces, never duplicates
    again = api.post(f"/api/checkpoints/{ckpt.id}/score/", {"dataset": ds}).json()["id"]
    score_dataset(again)
    assert PairScore.objects.filter(checkpoint=ckpt).count() == 24
    assert api.get(f"/api/datasets/{ds}/scoring/").json()["count"] == 2
    # a policy checkpoint cannot score
    policy = checkpoint_of(project, "sft", tmp_path)
    bad = api.post(f"/api/checkpoints/{policy.id}/score/", {"dataset": ds})
    assert bad.status_code == 400 and "checkpoint" in bad.json()["errors"]
