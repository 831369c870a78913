"""The health rules and events API: CRUD per project, presets, mutes, events per run / project /
compare, acknowledge; members only (others get 404), bad input 400 with the field."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from webapp.alerts import engine
from webapp.alerts.models import Event, Rule
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    engine.forget()
    yield
    engine.forget()


@pytest.fixture
def run(project, alice):
    return Run.objects.create(
        project=project, name="ext", kind="external", status="running", created_by=alice
    )


def post_points(api, run, key, values, first=0):
    points = [{"key": key, "step": first + i, "value": v} for i, v in enumerate(values)]
    assert api.post(f"/api/runs/{run.id}/metrics/", points, format="json").status_code == 200


def create_rule(api, project, **body):
    body = {
        "name": "loss high",
        "kind": "threshold",
        "key": "loss",
        "params": {"op": ">", "value": 1},
        **body,
    }
    return api.post(f"/api/projects/{project.id}/alert-rules/", body, format="json")


def test_rule_crud_and_events_through_the_api(api, project, run):
    resp = create_rule(api, project, severity="critical")
    assert resp.status_code == 201, resp.json()
    rule = resp.json()
    assert rule["params"] == {"op": ">", "value": 1.0} and rule["created_by"] == "alice"
    assert [r["id"] for r in api.get(f"/api/projects/{project.id}/alert-rules/").json()] == [rule["id"]]

    post_points(api, run, "loss", [0.5, 2.0, 3.0])
    events = api.get(f"/api/runs/{run.id}/events/").json()
    assert events["count"] == 1
    event = events["results"][0]
    assert (event["step"], event["key"], event["severity"], event["acknowledged"]) == (
        1,
        "loss",
        "critical",
        False,
    )

    resp = api.patch(f"/api/alert-rules/{rule['id']}/", {"params": {"op": ">", "value": 10}}, format="json")
    assert resp.status_code == 200 and resp.json()["params"]["value"] == 10.0
    post_points(api, run, "loss", [0.1, 5.0], first=3)  # re-armed at 0.1, 5.0 is below the new bound
    assert api.get(f"/api/runs/{run.id}/events/").json()["count"] == 1

    ack = api.post(f"/api/events/{event['id']}/acknowledge/")
    assert ack.status_code == 200 and ack.json()["acknowledged"] is True
    assert api.get(f"/api/projects/{project.id}/events/?acknowledged=false").json()["count"] == 0
    assert api.get(f"/api/projects/{project.id}/events/?acknowledged=true&run={run.id}").json()["count"] == 1
    assert api.get(f"/api/projects/{project.id}/events/?rule={rule['id'] + 1}").json()["count"] == 0

    assert api.delete(f"/api/alert-rules/{rule['id']}/").status_code == 204
    assert not Rule.objects.exists() and Event.objects.get().rule_id is None


def test_mute_and_unmute_through_the_api(api, project, run):
    rule = create_rule(api, project).json()
    until = (timezone.now() + dt.timedelta(hours=1)).isoformat()
    resp = api.post(f"/api/alert-rules/{rule['id']}/mute/", {"run": run.id, "until": until}, format="json")
    assert resp.status_code == 201, resp.json()
    post_points(api, run, "loss", [2.0, 0.0])
    assert not Event.objects.exists()
    resp = api.post(f"/api/alert-rules/{rule['id']}/unmute/", {"run": run.id}, format="json")
    assert resp.json() == {"removed": 1}
    post_points(api, run, "loss", [2.0], first=2)
    assert Event.objects.count() == 1


def test_presets_list_and_apply(api, project, run):
    listed = api.get("/api/alert-presets/").json()
    assert "kl_blowup" in [p["name"] for p in listed["presets"]]
    assert "completions/clipped_ratio" in listed["aliases"]["@length_clip_ratio"]
    resp = api.post(
        f"/api/projects/{project.id}/alert-presets/", {"preset": "kl_blowup", "run": run.id}, format="json"
    )
    assert resp.status_code == 201
    assert sorted(r["kind"] for r in resp.json()) == ["threshold", "zscore"]
    assert all(r["run"] == run.id and r["preset"] == "kl_blowup" for r in resp.json())


def test_compare_events_contract(api, project, run, alice):
    other = Run.objects.create(project=project, name="b", kind="external", status="running", created_by=alice)
    create_rule(api, project)
    post_points(api, run, "loss", [2.0])
    post_points(api, other, "loss", [0.0, 3.0])
    data = api.get(f"/api/compare/events/?runs={run.id},{other.id}").json()
    assert sorted((e["run_id"], e["step"]) for e in data["events"]) == [(run.id, 0), (other.id, 1)]
    assert set(data["events"][0]) == {
        "id", "run_id", "step", "key", "rule_id", "rule_name", "severity", "message", "created_at",
        "acknowledged", "value",
    }  # fmt: skip


def test_non_members_get_404_everywhere(api, bob_api, project, run):
    rule = create_rule(api, project).json()
    post_points(api, run, "loss", [2.0])
    event = Event.objects.get()
    for url in (
        f"/api/projects/{project.id}/alert-rules/",
        f"/api/projects/{project.id}/events/",
        f"/api/alert-rules/{rule['id']}/",
        f"/api/runs/{run.id}/events/",
        f"/api/compare/events/?runs={run.id}",
    ):
        assert bob_api.get(url).status_code == 404, url
    assert create_rule(bob_api, project).status_code == 404
    assert bob_api.patch(f"/api/alert-rules/{rule['id']}/", {"name": "x"}, format="json").status_code == 404
    assert bob_api.delete(f"/api/alert-rules/{rule['id']}/").status_code == 404
    assert bob_api.post(f"/api/events/{event.id}/acknowledge/").status_code == 404
    assert bob_api.post(f"/api/alert-rules/{rule['id']}/mute/", {}, format="json").status_code == 404
    assert Rule.objects.get().name == "loss high" and not Event.objects.get().acknowledged


def test_a_member_who_is_not_the_owner_manages_rules(api, bob, bob_api, project):
    from webapp.projects.models import Membership

    Membership.objects.create(project=project, user=bob, role="member")
    assert create_rule(bob_api, project).status_code == 201


@pytest.mark.parametrize(
    "body, field",
    [
        ({"kind": "sometimes"}, "kind"),
        ({"params": {"op": "~"}}, "params.op"),
        ({"params": "high"}, "params"),
        ({"key": "@unknown"}, "key"),
        ({"severity": "apocalyptic"}, "severity"),
        ({"name": ""}, "name"),
        ({"run": 999999}, "run"),
        ({"kind": "zscore", "params": {"z": -1}}, "params.z"),
    ],
)
def test_bad_rules_are_a_400_naming_the_field(api, project, body, field):
    resp = create_rule(api, project, **body)
    assert resp.status_code == 400 and field in resp.json()["errors"], resp.json()
    assert not Rule.objects.exists()


def test_bad_mutes_and_queries_are_400(api, project, run, alice):
    rule = create_rule(api, project).json()
    past = (timezone.now() - dt.timedelta(hours=1)).isoformat()
    resp = api.post(f"/api/alert-rules/{rule['id']}/mute/", {"until": past}, format="json")
    assert resp.status_code == 400 and "until" in resp.json()["errors"]
    resp = api.post(f"/api/alert-rules/{rule['id']}/mute/", {"run": 10**9}, format="json")
    assert resp.status_code == 400 and "run" in resp.json()["errors"]
    assert api.get(f"/api/runs/{run.id}/events/?acknowledged=maybe").status_code == 400
    assert api.get(f"/api/runs/{run.id}/events/?rule=x").status_code == 400
    assert api.get("/api/compare/events/?runs=a").status_code == 400
    resp = api.post(f"/api/projects/{project.id}/alert-presets/", {"preset": "nope"}, format="json")
    assert resp.status_code == 400 and "preset" in resp.json()["errors"]
