"""A DAPO run end to end on a real Celery worker: its step values become a browsable dataset version
linked to the run, the critic's calibration and the actor's accuracy are stored as evaluations, and
the final checkpoint is a policy another run can start from."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.conftest import wait_for
from webapp.datasets.models import Dataset, StepSolution
from webapp.runs.models import Checkpoint, Evaluation, Run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CONFIG = {
    "generated_train": 40,
    "generated_eval": 4,
    "steps": {"mode": "delimiter", "delimiter": "\n", "max_steps": 4},
    "generate": {"prompts": 6, "solutions_per_prompt": 2, "mc_rollouts": 2, "max_new_tokens": 12},
    "critic": {"epochs": 1, "batch_size": 4, "max_length": 64, "val_fraction": 0.34, "eval_every": 0},
    "actor": {"candidates": 2, "epochs": 1, "states": 8, "states_per_batch": 4, "max_step_tokens": 6},
    "eval": {"k": 1, "temperature": 0.0, "max_new_tokens": 12},
    "reward_processes": 1,
    "dataset_name": "worker-dapo",
}


def test_a_dapo_run_publishes_step_values_and_a_policy(worker, api, project, client, alice):
    rows = "".join(json.dumps({"prompt": f"{i}+2=", "answer": str(i + 2)}) + "\n" for i in range(4))
    upload = SimpleUploadedFile("heldout.jsonl", rows.encode())
    held_out = api.post(
        "/api/datasets/", {"file": upload, "name": "heldout", "kind": "problems", "project": project.id}
    )
    assert held_out.status_code == 201, held_out.content
    config = {**CONFIG, "eval_dataset": held_out.json()["id"]}
    resp = api.post("/api/runs/", {"project": project.id, "name": "dapo", "kind": "dapo", "config": config},
                    format="json")  # fmt: skip
    assert resp.status_code == 201, resp.content
    run_id = resp.json()["id"]
    wait_for(
        lambda: Run.objects.get(pk=run_id).status in ("succeeded", "failed"), 240,
        message=f"dapo run:\n{worker.log()[-3000:]}",
    )  # fmt: skip
    run = Run.objects.get(pk=run_id)
    assert run.status == "succeeded", run.traceback

    produced = Dataset.objects.get(source_run=run)
    assert produced.kind == "step_values" and produced.name.startswith("worker-dapo")
    assert produced.row_count == 6 * 2 == StepSolution.objects.filter(dataset=produced).count()
    for s in StepSolution.objects.filter(dataset=produced):
        assert len(s.values) == len(s.steps) + 1 and all(0 <= v <= 1 for v in s.values)
        assert s.values[-1] == float(s.correct)  # the last value is the solution's own reward
    listed = api.get(f"/api/datasets/{produced.id}/solutions/").json()
    assert listed["count"] == 12

    names = set(Evaluation.objects.filter(run=run).values_list("benchmark_name", flat=True))
    assert names == {"critic-calibration", "heldout v1"}, names  # the eval dataset by its name and version
    keys = set(api.get(f"/api/runs/{run_id}/").json()["keys"])
    assert {"critic/ece", "critic/auc", "actor/loss", "stage"} <= keys, keys

    final = Checkpoint.objects.filter(run=run).order_by("-step").first()
    assert final is not None and final.path
    client.force_login(alice)
    page = client.get(f"/datasets/{produced.id}/solutions/")
    assert page.status_code == 200 and b"12 solutions" in page.content
