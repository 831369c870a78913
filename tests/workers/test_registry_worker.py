"""A real Celery worker process reports itself to the registry (workers/registry.py), and launches are
checked against what it reported: its queues, slots, packages and the models under its roots."""

from __future__ import annotations

import importlib.metadata

import pytest

from tests.conftest import NPG_CONFIG, wait_for
from trainers.common.tiny import build_tiny_model
from webapp.fleet.models import WorkerReport
from webapp.fleet.selectors import fresh_reports
from webapp.runs.models import Run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_worker_reports_itself_and_launches_are_checked_against_it(start_worker, api, project, tmp_path):
    build_tiny_model(tmp_path / "roots" / "Org" / "tiny-qwen")
    worker = start_worker(ORLAB_MODEL_ROOTS=str(tmp_path / "roots"), ORLAB_WORKER_REPORT_INTERVAL="1")
    first = wait_for(lambda: WorkerReport.objects.first(), 30, message=f"a report:\n{worker.log()[-3000:]}")
    assert first.name.startswith("w1@") and first.slots == 2
    assert first.queues == ["control", "cpu", "eval", "gpu", "short"]  # the fixture's default: all
    assert first.visible_gpus == 0 and first.gpus == []  # no NVIDIA driver here
    assert first.torch_version == importlib.metadata.version("torch")
    assert first.has_deepspeed and first.deepspeed_version == importlib.metadata.version("deepspeed")
    assert first.has_vllm is False  # not installed on the CPU machines
    (model,) = first.catalogue
    assert model["name"] == "Org/tiny-qwen" and model["chat_template"] is True and model["parameters"] > 0
    # one report per worker, refreshed in place
    wait_for(
        lambda: WorkerReport.objects.get().reported_at > first.reported_at, 30, message="a second report"
    )
    assert WorkerReport.objects.count() == 1

    bad = api.post(
        "/api/runs/",
        {"project": project.id, "kind": "sft", "config": {"model_path": "Org/other"}},
        format="json",
    )
    assert bad.status_code == 400 and "config.model_path" in bad.json()["errors"]
    assert "Org/tiny-qwen" in bad.json()["errors"]["config.model_path"][0] and not Run.objects.exists()

    resp = api.post(
        "/api/runs/", {"project": project.id, "kind": "tabular", "config": NPG_CONFIG}, format="json"
    )
    assert resp.status_code == 201, resp.content
    run_id = resp.json()["id"]
    wait_for(lambda: Run.objects.get(pk=run_id).status == "succeeded", 60, message="the run to succeed")
    assert Run.objects.get(pk=run_id).launch_check.workers == [first.name]

    # a clean shutdown takes the worker out of the registry at once
    worker.stop()
    assert WorkerReport.objects.get().stopped_at is not None and fresh_reports() == []
