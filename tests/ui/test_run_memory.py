"""The run page's memory panel (the launch estimate next to the measured peak) and the checkpoint
table's sizes and retention deletions."""

from __future__ import annotations

import re

import numpy as np
import pytest
from django.utils import timezone

from trainers.common.memory_estimate import TINY_MODEL_INFO, estimate_for_config
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Checkpoint, Run

pytestmark = pytest.mark.django_db

RL_CONFIG = {
    "rollout": {
        "n": 4,
        "prompts_per_step": 8,
        "max_prompt": 64,
        "stages": [{"until_step": 9, "max_response": 32}],
    }
}


def rl_run(project, **kw) -> Run:
    return Run.objects.create(project=project, name="rl", kind="rl", config=RL_CONFIG, status="running", **kw)


def page(client, run) -> str:
    resp = client.get(f"/runs/{run.pk}/")
    assert resp.status_code == 200
    return resp.content.decode()


def text_of(html: str, testid: str) -> str:
    match = re.search(rf'data-testid="{testid}"[^>]*>(.*?)</p>', html, re.S)
    assert match, testid
    return re.sub(r"<[^>]+>", "", match.group(1))


def test_estimate_next_to_the_measured_peak(client_alice, project):
    estimate = estimate_for_config("rl", RL_CONFIG, TINY_MODEL_INFO, 80 * 2**30)
    run = rl_run(project, memory_estimate=estimate.to_dict())
    metrics_record(
        run.id, {"memory/peak_gb": Columns.of(np.array([1, 2, 3]), np.array([0.2, 0.5, 0.4]), np.zeros(3))}
    )
    html = page(client_alice, run)
    measured = text_of(html, "memory-measured")
    assert "measured peak: 0.50 GiB" in measured
    assert f"({round(100 * 0.5 * 2**30 / estimate.total)}% of the estimate)" in measured
    total = text_of(html, "memory-estimate-total")
    assert f"{estimate.total / 2**30:.2f} GiB at the {estimate.peak_phase}" in total
    shown = dict(
        re.findall(
            r'data-testid="memory-component" data-name="([^"]+)"><td>[^<]*</td><td class="num">([\d.]+)</td>',
            html,
        )
    )
    expected = {k.replace("_", " "): f"{v / 2**30:.2f}" for k, v in estimate.components.items() if v}
    assert shown == expected and "activations" in shown and "rollout" in shown


def test_on_the_cpu_the_peak_is_not_measured(client_alice, project):
    estimate = estimate_for_config("rl", RL_CONFIG, TINY_MODEL_INFO, device="cpu")
    run = rl_run(project, memory_estimate=estimate.to_dict())
    assert "measured peak: only on CUDA" in text_of(page(client_alice, run), "memory-measured")


def test_without_an_estimate_the_panel_says_so(client_alice, project):
    html = page(client_alice, rl_run(project))
    assert 'data-testid="memory-no-estimate"' in html
    tabular = Run.objects.create(project=project, name="t", kind="tabular", config={}, status="running")
    assert 'data-testid="memory-section"' not in page(client_alice, tabular)


def test_checkpoint_sizes_and_retention_deletions(client_alice, api, project):
    run = rl_run(project)
    Checkpoint.objects.create(run=run, step=10, path="/a/10", size_bytes=3 * 2**30, deleted_at=timezone.now())
    Checkpoint.objects.create(run=run, step=20, path="/a/20", size_bytes=2048)
    Checkpoint.objects.create(run=run, step=30, path="/a/30")
    html = page(client_alice, run)
    rows = dict(re.findall(r'data-step="(\d+)".*?data-testid="checkpoint-size">(.*?)</td>', html))
    assert rows["10"].startswith("3.0\xa0GB") and "deleted by retention" in rows["10"]
    assert rows["20"] == "2.0\xa0KB" and rows["30"] == "—"
    listed = {c["step"]: c for c in api.get(f"/api/runs/{run.pk}/checkpoints/").json()["results"]}
    assert listed[10]["deleted_at"] is not None and listed[10]["size_bytes"] == 3 * 2**30
    assert listed[20]["deleted_at"] is None and listed[30]["size_bytes"] is None
