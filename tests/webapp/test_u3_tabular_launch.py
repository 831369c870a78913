"""Issue 16 point 9: the launch form and the API accept a soft_pi config without a step size, and still
refuse (400 / a field error, nothing created) a method that needs one."""

from __future__ import annotations

import re

import pytest

from webapp.runs.models import Run

pytestmark = pytest.mark.django_db

SOFT_PI = {"method": "soft_pi", "tau": 0.1, "iterations": 12,
           "mdp": {"kind": "garnet", "states": 10, "actions": 3, "branching": 3, "seed": 0, "gamma": 0.9}}  # fmt: skip


def test_the_api_launches_soft_pi_without_a_step_size(api, project):
    response = api.post(
        "/api/runs/",
        {"project": project.pk, "name": "spi", "kind": "tabular", "config": SOFT_PI},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert Run.objects.get(pk=response.json()["id"]).config.get("step_size") is None  # stored effective: null
    bad = api.post(
        "/api/runs/",
        {
            "project": project.pk,
            "name": "npg",
            "kind": "tabular",
            "config": {**SOFT_PI, "method": "softmax_npg"},
        },
        format="json",
    )
    assert bad.status_code == 400
    assert any("required for method softmax_npg" in m for m in bad.json()["errors"]["config.step_size"])
    assert Run.objects.count() == 1


def test_the_launch_form_accepts_an_empty_step_size_for_soft_pi(client, alice, project):
    from tests.ui.test_pages import GARNET_POST, field_errors

    client.force_login(alice)
    data = {**GARNET_POST, "name": "spi", "config.method": "soft_pi", "config.step_size": ""}
    response = client.post(f"/projects/{project.pk}/launch/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    run = Run.objects.get(name="spi")
    assert run.config["method"] == "soft_pi" and run.config.get("step_size") is None
    html = client.post(
        f"/projects/{project.pk}/launch/", {**data, "name": "npg", "config.method": "softmax_npg"}
    )
    assert field_errors(html.content.decode(), "config.step_size") == [
        "required for method softmax_npg (only soft_pi has no step size)"
    ]
    assert not Run.objects.filter(name="npg").exists()
    assert re.search(r'name="config.step_size"', html.content.decode())
