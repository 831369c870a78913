"""Each preset's hardware: shown under the launch form's preset picker and in GET /api/trainers/; and the
estimate a launch stores on the run (the tiny model's shape needs no worker)."""

from __future__ import annotations

import json
import re

import pytest

from trainers.base import get_spec
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


def test_launch_page_shows_the_presets_hardware(client_alice, project):
    spec = get_spec("sft")
    html = client_alice.get(f"/projects/{project.pk}/launch/?kind=sft&preset=tiny-cpu-demo").content.decode()
    shown = re.search(r'id="preset-hardware-text">([^<]*)<', html).group(1)
    assert shown == spec.preset_hardware["tiny-cpu-demo"]["summary"] and shown.startswith("CPU only")
    presets = json.loads(
        re.search(r'<script id="presets-data" type="application/json">(.*?)</script>', html, re.S).group(1)
    )
    assert presets["tiny-cpu-demo"]["hardware"] == shown
    bare = client_alice.get(f"/projects/{project.pk}/launch/?kind=sft&preset=").content.decode()
    assert re.search(r'id="preset-hardware"[^>]* hidden', bare)


def test_trainers_api_lists_preset_hardware(api):
    trainers = {t["kind"]: t for t in api.get("/api/trainers/").json()["results"]}
    for kind in ("rl", "dapo", "sft", "reward"):
        assert set(trainers[kind]["preset_hardware"]) == set(trainers[kind]["presets"]), kind
    assert trainers["sft"]["preset_hardware"]["tiny-cpu-demo"]["gpu_memory_gb"] is None
    big = trainers["rl"]["preset_hardware"]["or1-32b-multistage"]
    assert (big["gpu_memory_gb"], big["gpus_per_node"], big["nodes"], big["ready"]) == (141, 8, 2, True)
    # the reward trainer runs across ranks (tested on CPU gloo ranks only): its 8-GPU presets say so
    reward = trainers["reward"]["preset_hardware"]["skywork-llama-8b"]
    assert (reward["gpus_per_node"], reward["ready"]) == (8, True)
    assert "no GPU has run it" in reward["summary"]


def test_a_tiny_launch_stores_its_estimate(api, project):
    resp = api.post(
        "/api/runs/",
        {"project": project.id, "kind": "sft", "preset": "tiny-cpu-demo", "queue": "cpu"},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    estimate = Run.objects.get(pk=resp.json()["id"]).memory_estimate
    assert estimate["total_bytes"] > 0 and estimate["assumptions"]["dtype"] == "float32"
    assert estimate["components"]["activations"] > 0
    assert api.get(f"/api/runs/{resp.json()['id']}/").json()["memory_estimate"] == estimate
