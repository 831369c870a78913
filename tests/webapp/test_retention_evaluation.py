"""On-demand evaluation of a checkpoint takes the run's own generation settings unless the request gives
its own: the eval section's k / temperature / top_p, the response limit of the stage the checkpoint's
step is in (RL), the eval budget (DAPO), greedy with the SFT budget, and the run's chat template."""

from __future__ import annotations

import pytest

from webapp.datasets.models import Dataset
from webapp.runs import services
from webapp.runs.models import Checkpoint, Run

pytestmark = pytest.mark.django_db

RL_CONFIG = {
    "eval": {"every": 10, "k": 4, "temperature": 0.7, "top_p": 0.95, "max_problems": 0},
    "rollout": {
        "stages": [{"until_step": 100, "max_response": 64}, {"until_step": 10**9, "max_response": 128}]
    },
    "chat_template": "none",
}


@pytest.fixture
def bench(project):
    return Dataset.objects.create(project=project, name="bench", kind="problems", status="ready")


def checkpoint(project, kind: str, config: dict, step: int) -> Checkpoint:
    run = Run.objects.create(project=project, name=kind, kind=kind, config=config, status="succeeded")
    return Checkpoint.objects.create(run=run, step=step, path=f"/nowhere/{step}")


def test_rl_defaults_follow_the_eval_section_and_the_stage(project, bench, api):
    early = checkpoint(project, "rl", RL_CONFIG, 50)
    resp = api.post(f"/api/checkpoints/{early.id}/evaluate/", {"benchmark": bench.id})
    assert resp.status_code == 202, resp.content
    assert resp.json()["protocol"] == {
        "k": 4,
        "temperature": 0.7,
        "top_p": 0.95,
        "max_new_tokens": 64,
        "chat_template": "none",
    }
    late = checkpoint(project, "rl", RL_CONFIG, 150)
    assert services.evaluation_request(checkpoint=late, benchmark=bench).protocol["max_new_tokens"] == 128


def test_explicit_values_override(project, bench, api):
    ckpt = checkpoint(project, "rl", RL_CONFIG, 50)
    resp = api.post(
        f"/api/checkpoints/{ckpt.id}/evaluate/",
        {"benchmark": bench.id, "k": 2, "temperature": 0.0, "top_p": 0.5, "max_new_tokens": 16},
    )
    assert resp.status_code == 202, resp.content
    body = resp.json()
    assert body["k"] == 2
    assert body["protocol"] == {
        "k": 2,
        "temperature": 0.0,
        "top_p": 0.5,
        "max_new_tokens": 16,
        "chat_template": "none",
    }


def test_sft_dapo_and_unconfigured_runs(project, bench):
    sft = checkpoint(project, "sft", {"max_new_tokens": 48, "chat_template": "auto"}, 600)
    protocol = services.evaluation_request(checkpoint=sft, benchmark=bench).protocol
    assert (protocol["k"], protocol["temperature"], protocol["max_new_tokens"]) == (1, 0.0, 48)
    dapo = checkpoint(project, "dapo", {"eval": {"k": 4, "temperature": 1.0, "max_new_tokens": 40}}, 3)
    protocol = services.evaluation_request(checkpoint=dapo, benchmark=bench).protocol
    assert (protocol["k"], protocol["temperature"], protocol["max_new_tokens"]) == (4, 1.0, 40)
    bare = checkpoint(project, "rl", {}, 1)
    assert (
        services.evaluation_request(checkpoint=bare, benchmark=bench).protocol == services.EVALUATION_FALLBACK
    )
