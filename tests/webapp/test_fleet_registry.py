"""The worker registry's storage, GET /api/workers/, and the launch page's fleet panel and model
picker (server side; tests/ui/test_fleet_browser.py shows them in Chromium)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.webapp.test_fleet_launch import report
from webapp.fleet.models import WorkerReport
from webapp.fleet.selectors import fresh_reports
from webapp.fleet.services import report_stopped
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db

ENTRY = {
    "name": "Qwen/Qwen2.5-0.5B-Instruct", "architecture": "Qwen2ForCausalLM", "parameters": 494_032_768,
    "chat_template": True, "hidden_size": 896,
}  # fmt: skip


def test_a_report_is_upserted_per_worker_and_a_clean_stop_makes_it_stale():
    report(name="g1@h", gpus=(80,))
    first = WorkerReport.objects.get()
    report(name="g1@h", gpus=(80, 80), vllm="0.32.0")
    again = WorkerReport.objects.get()
    assert (
        again.pk == first.pk and again.visible_gpus == 2 and again.has_vllm and again.vllm_version == "0.32.0"
    )
    assert again.reported_at > first.reported_at and again.started_at == first.started_at
    assert [r.name for r in fresh_reports("gpu")] == ["g1@h"] and fresh_reports("cpu") == []
    report_stopped("g1@h")
    assert fresh_reports() == []
    report(name="g1@h")  # the worker came back
    assert [r.name for r in fresh_reports()] == ["g1@h"]


def test_workers_api_lists_fresh_reports(api):
    report(name="g1@gpu-host", gpus=(80,), vllm="0.32.0", deepspeed="0.19.8", models=[ENTRY])
    report(name="c1@cpu-host", queues=("cpu",), gpus=(), slots=4)
    report(name="old@gpu-host")
    WorkerReport.objects.filter(name="old@gpu-host").update(reported_at=timezone.now() - timedelta(minutes=5))
    data = api.get("/api/workers/").json()
    assert [w["name"] for w in data["results"]] == ["c1@cpu-host", "g1@gpu-host"] and data["count"] == 2
    gpu = api.get("/api/workers/?queue=gpu").json()["results"]
    assert len(gpu) == 1
    (worker,) = gpu
    assert worker["queues"] == ["gpu"] and worker["slots"] == 1 and worker["visible_gpus"] == 1
    assert worker["gpus"][0]["total_bytes"] == 80 * 2**30
    assert worker["vllm"] == {"available": True, "version": "0.32.0"}
    assert worker["deepspeed"] == {"available": True, "version": "0.19.8"}
    assert worker["models"] == [ENTRY] and worker["torch_version"] == "2.11.0"
    cpu = api.get("/api/workers/?queue=cpu").json()["results"][0]
    assert cpu["vllm"] == {"available": False, "version": ""} and cpu["gpus"] == []


def test_workers_api_needs_a_login():
    assert APIClient().get("/api/workers/").status_code == 401


def test_workers_api_is_in_the_schema(api):
    assert "/api/workers/" in api.get("/api/schema/", HTTP_ACCEPT="application/json").json()["paths"]


# --- the launch page -------------------------------------------------------------------------------


def page(client, project, query="?kind=sft&preset=tiny-cpu-demo") -> str:
    resp = client.get(f"/projects/{project.pk}/launch/{query}")
    assert resp.status_code == 200
    return resp.content.decode()


def test_the_picker_offers_tiny_and_the_queue_models(client, alice, project):
    client.force_login(alice)
    report(name="g1@gpu-host", models=[ENTRY])
    html = page(client, project)
    picker = re.search(r'<select[^>]*data-testid="model-picker"[^>]*>(.*?)</select>', html, re.S)
    assert picker and "disabled" not in picker.group(0)
    assert re.findall(r'<option value="([^"]+)"', picker.group(1)) == ["tiny", "Qwen/Qwen2.5-0.5B-Instruct"]
    assert "494.0M parameters, chat template" in picker.group(1)
    text = re.search(r'<input[^>]*data-testid="model-name"[^>]*>', html).group(0)
    assert "disabled" in text  # the text input carries no value while the picker is shown
    assert "g1@gpu-host" in html and "No worker of queue <code>cpu</code> has reported" in html


def test_without_reports_the_model_is_typed_and_the_panel_says_the_run_will_wait(client, alice, project):
    client.force_login(alice)
    html = page(client, project)
    assert "No worker of queue <code>gpu</code> has reported: the run will wait in the queue" in html
    text = re.search(r'<input[^>]*data-testid="model-name"[^>]*>', html).group(0)
    assert "disabled" not in text and 'value="tiny"' in text


def test_a_launch_from_the_picker_and_a_refused_one(client, alice, project):
    client.force_login(alice)
    report(name="g1@gpu-host", models=[ENTRY])
    url = f"/projects/{project.pk}/launch/"
    form = {"kind": "sft", "config.model_path": "Qwen/Qwen2.5-0.5B-Instruct"}
    resp = client.post(url, form)
    assert resp.status_code == 302, resp.content.decode()[:2000]
    assert Run.objects.get().config["model_path"] == "Qwen/Qwen2.5-0.5B-Instruct"
    resp = client.post(url, {**form, "config.model_path": "Other/model"})
    html = resp.content.decode()
    assert resp.status_code == 200 and Run.objects.count() == 1
    assert "Nothing was launched" in html and "choose a model from the workers&#x27; catalogue" in html
    # the refused name stays selected in the picker, marked as unknown to the queue's workers
    assert 'value="Other/model" selected>Other/model (not reported by the workers of queue gpu)' in html
