"""Issue 11: the run records the sandbox guards its programs were scored under (which guards, full or
weak mode), in the summary the worker stores on the run (and the run page shows)."""

import json
import sys

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from trainers.base import get_spec
from webapp.runs.models import Run
from workers.tasks import execute_run

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only"),
]

CODE = [
    {"prompt": f"Print {i}.", "tests": [{"stdin": "", "stdout": str(i)}], "domain": "code"} for i in range(4)
]


def _rl_code_run(api, project, monkeypatch, steps: int = 1) -> Run:
    monkeypatch.delenv("ORLAB_SANDBOX_ALLOW_WEAK", raising=False)
    monkeypatch.delenv("ORLAB_SANDBOX_DISABLE", raising=False)
    upload = SimpleUploadedFile("code.jsonl", "".join(json.dumps(r) + "\n" for r in CODE).encode())
    resp = api.post(
        "/api/datasets/", {"file": upload, "name": "code", "kind": "problems", "project": project.id}
    )
    assert resp.status_code == 201, resp.content
    config = get_spec("rl").validate({
        **get_spec("rl").presets["tiny-cpu-demo"],
        "train_dataset": resp.json()["id"],
        "steps": steps,
        "rollout": {"n": 2, "prompts_per_step": 2, "stages": [{"until_step": 10**9, "max_response": 8}]},
        "algo": {"mini_batches": 1, "ppo_epochs": 1},
        "eval": {"every": 0, "k": 1, "max_problems": 1},
        "checkpoint_every": 0,
    }).model_dump(mode="json")  # fmt: skip
    return Run.objects.create(project=project, name="rl-code", kind="rl", config=config, status="queued")


def _assert_full_guards(guards: dict) -> None:
    # this machine has the full guards (tests/trainers/test_sandbox_policy.py checks that)
    assert guards["mode"] == "full" and guards["missing"] == [] and guards["summary"].startswith("full:")
    for key in ("network", "filesystem", "identity", "memory", "disk"):
        assert guards[key], key


def test_an_rl_run_on_code_records_the_sandbox_guards(api, alice, project, monkeypatch):
    run = _rl_code_run(api, project, monkeypatch)
    execute_run(run.id, 1)
    run.refresh_from_db()
    assert run.status == "succeeded", run.error
    guards = run.summary["sandbox"]
    # this machine has the full guards (tests/trainers/test_sandbox_policy.py checks that)
    assert guards["mode"] == "full" and guards["missing"] == [] and guards["summary"].startswith("full:")
    for key in ("network", "filesystem", "identity", "memory", "disk"):
        assert guards[key], key


def test_a_run_that_fails_after_scoring_started_still_records_the_guards(api, alice, project, monkeypatch):
    """The trainer raises after step 1's programs were scored, so it never returns a summary: the
    guards were stored when scoring started (workers.sinks.sandbox_recording)."""
    from workers.sinks import DbSink

    run = _rl_code_run(api, project, monkeypatch, steps=3)
    log = DbSink.log

    def failing_log(self, step, metrics):
        if step >= 1:  # step 1 scored its rollouts' programs in the sandbox before logging
            raise RuntimeError("trainer failed after scoring")
        return log(self, step, metrics)

    monkeypatch.setattr(DbSink, "log", failing_log)
    execute_run(run.id, 1)
    run.refresh_from_db()
    assert run.status == "failed" and "trainer failed after scoring" in run.error, (run.status, run.error)
    _assert_full_guards(run.summary["sandbox"])
