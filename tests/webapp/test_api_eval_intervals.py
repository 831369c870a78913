"""Evaluations with intervals through the API (issue 15 point 5): an external run's client may send
'<name>_ci' = [lo, hi] beside the numbers; the evaluations list returns them with the protocol key
(the same for protocols that differ only in fields that do not change what is measured). A bad
interval or value is a 400 naming the field."""

from __future__ import annotations

import pytest

from webapp.runs.eval_protocol import protocol_key

pytestmark = pytest.mark.django_db


def test_intervals_and_protocol_key(api, project):
    run = api.post(
        "/api/runs/", {"project": project.id, "name": "ext", "kind": "external", "config": {}}, format="json"
    ).json()
    url = f"/api/runs/{run['id']}/evaluations/"
    protocol = {"k": 8, "n": 8, "temperature": 0.6, "top_p": 1.0, "max_new_tokens": 512, "seed": 1}
    body = {"step": 10, "benchmark": "math500", "protocol": protocol,
            "metrics": {"pass@4": 0.5, "pass@4_ci": [0.41, 0.6], "maj@4": 0.45, "x": None}}  # fmt: skip
    resp = api.post(url, body, format="json")
    assert resp.status_code == 201, resp.content
    api.post(url, {**body, "step": 20, "protocol": {**protocol, "seed": 2}}, format="json")
    api.post(url, {**body, "step": 30, "protocol": {**protocol, "temperature": 1.0}}, format="json")
    rows = api.get(url).json()["results"]
    assert rows[0]["metrics"]["pass@4_ci"] == [0.41, 0.6] and rows[0]["metrics"]["pass@4"] == 0.5
    keys = [r["protocol_key"] for r in rows]
    assert keys[0] == keys[1] == protocol_key(protocol) != keys[2]  # the seed is not the protocol
    assert len(keys[0]) == 8
    for bad in ([0.6, 0.41], [0.1], [0.1, "x"], [0.1, True], [0.1, 10**400]):
        resp = api.post(url, {**body, "metrics": {"pass@4": 0.5, "pass@4_ci": bad}}, format="json")
        assert resp.status_code == 400, (bad, resp.content)
        assert all(k.startswith("metrics") for k in resp.json()["errors"]), resp.content
    for bad in ("0.5", [0.1, 0.2], {"a": 1}, True):
        resp = api.post(url, {**body, "metrics": {"pass@4": bad}}, format="json")
        assert resp.status_code == 400, (bad, resp.content)
        assert all(k.startswith("metrics") for k in resp.json()["errors"]), resp.content
    assert len(api.get(url).json()["results"]) == 3
