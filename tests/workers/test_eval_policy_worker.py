"""A run's eval policy (issue 15 point 4) on a real worker: the SFT trainer saves checkpoints through
the worker's database sink, each save enqueues the policy's evaluation on the `eval` queue, and the
same worker runs it; the results attach to the checkpoint's step."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import wait_for
from webapp.runs.models import Evaluation, Run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_an_sft_run_with_a_policy_every_2nd_checkpoint_ends_with_evaluations_there(worker, api, project):
    rows = "".join(json.dumps({"prompt": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(3))
    resp = api.post(
        "/api/datasets/",
        {
            "file": SimpleUploadedFile("b.jsonl", rows.encode()),
            "name": "b",
            "kind": "problems",
            "project": project.id,
        },
    )
    assert resp.status_code == 201, resp.content
    bench = resp.json()["id"]
    config = {
        "model_path": "tiny", "chat_template": "none", "steps": 4, "batch_size": 4, "warmup_steps": 0,
        "eval_every": 0, "checkpoint_every": 1, "max_new_tokens": 4, "generated_train": 16, "generated_eval": 2,
    }  # fmt: skip
    policy = {
        "benchmarks": [bench],
        "every": 2,
        "n": 2,
        "ks": [1, 2],
        "temperature": 1.0,
        "max_new_tokens": 4,
    }
    resp = api.post(
        "/api/runs/",
        {"project": project.id, "name": "sft", "kind": "sft", "config": config, "eval_policy": policy},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    run_id = resp.json()["id"]
    wait_for(lambda: Run.objects.get(pk=run_id).status in ("succeeded", "failed"), 240, message="sft run")
    run = Run.objects.get(pk=run_id)
    assert run.status == "succeeded", run.traceback
    # SFT counts steps from 0: its 2nd and 4th checkpoints are steps 1 and 3
    assert sorted(run.checkpoints.values_list("step", flat=True)) == [0, 1, 2, 3]
    queued = Evaluation.objects.filter(run_id=run_id, attempt__isnull=True)
    done = lambda: all(e.status in ("succeeded", "failed") for e in queued.all()) and queued.count() == 2  # noqa: E731
    wait_for(done, 180, message="the policy's evaluations")
    evals = list(queued.order_by("step"))
    assert [(e.step, e.checkpoint.step, e.status) for e in evals] == [
        (1, 1, "succeeded"),
        (3, 3, "succeeded"),
    ], [e.error for e in evals]
    for e in evals:
        assert e.benchmark_id == bench and e.k == 2
        assert e.protocol["temperature"] == 1.0 and e.protocol["max_new_tokens"] == 4
        assert {"pass@1", "pass@2", "pass@2_ci"} <= set(e.metrics)
    # on-demand and policy evaluations carry no attempt (a trainer's own in-run ones do)
    assert not Evaluation.objects.filter(run_id=run_id).exclude(pk__in=[e.pk for e in evals]).exists()
