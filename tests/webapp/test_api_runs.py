"""The runs API: launch, validation, access, lifecycle endpoints, sweeps."""

import pytest
from rest_framework.test import APIClient

from tests.conftest import NPG_CONFIG
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


def launch(api, project, **over):
    body = {"project": project.id, "name": "npg", "kind": "tabular", "config": NPG_CONFIG} | over
    return api.post("/api/runs/", body, format="json")


def test_launch_returns_a_queued_run_with_defaulted_config(api, project):
    resp = launch(api, project)
    assert resp.status_code == 201, resp.content
    data = resp.json()
    assert data["status"] == "queued" and data["queue"] == "short" and data["attempt"] == 1
    run = Run.objects.get(pk=data["id"])
    assert run.config["method"] == "softmax_npg"
    assert "tau" in run.config  # defaults are filled in and stored: the run records what it will use


def test_launch_from_a_preset_with_overrides(api, project):
    resp = api.post(
        "/api/runs/",
        {"project": project.id, "kind": "synthetic", "preset": "quick", "config": {"steps": 7}},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    assert resp.json()["config"]["steps"] == 7 and resp.json()["config"]["keys"] == 4


def test_unknown_kind_is_a_field_error(api, project):
    resp = launch(api, project, kind="nope")
    assert resp.status_code == 400
    assert "kind" in resp.json()["errors"]


def test_invalid_config_names_the_fields(api, project):
    bad = NPG_CONFIG | {"step_size": -1, "mdp": NPG_CONFIG["mdp"] | {"gamma": 1.5}, "bogus": 1}
    resp = launch(api, project, config=bad)
    assert resp.status_code == 400
    errors = resp.json()["errors"]
    assert "config.step_size" in errors
    assert any(k.startswith("config.mdp") and "gamma" in k for k in errors), errors
    assert "config.bogus" in errors
    assert Run.objects.count() == 0


def test_missing_fields_are_reported(api, project):
    resp = api.post("/api/runs/", {"kind": "tabular"}, format="json")
    assert resp.status_code == 400 and "project" in resp.json()["errors"]


def test_no_token_is_401():
    assert APIClient().get("/api/runs/").status_code == 401
    assert APIClient().get("/api/projects/").status_code == 401


def test_other_users_project_and_run_are_invisible(api, bob_api, project):
    run_id = launch(api, project).json()["id"]
    assert bob_api.get(f"/api/runs/{run_id}/").status_code == 404
    assert bob_api.get(f"/api/runs/{run_id}/metrics/").status_code == 404
    assert bob_api.post(f"/api/runs/{run_id}/cancel/").status_code == 404
    assert bob_api.get(f"/api/projects/{project.id}/").status_code == 404
    assert bob_api.get("/api/runs/").json()["count"] == 0
    resp = launch(bob_api, project)
    assert resp.status_code == 400 and "project" in resp.json()["errors"]


def test_list_filters_sorts_and_paginates(api, project):
    for i in range(3):
        launch(api, project, name=f"r{i}", group="g1" if i < 2 else "g2", tags=["seed"] if i == 0 else [])
    launch(api, project, name="ext", kind="external", config={"lr": 1})
    assert api.get("/api/runs/?group=g1").json()["count"] == 2
    assert api.get("/api/runs/?kind=external").json()["count"] == 1
    assert api.get("/api/runs/?status=running").json()["count"] == 1
    assert api.get("/api/runs/?tag=seed").json()["count"] == 1
    names = [r["name"] for r in api.get("/api/runs/?ordering=name").json()["results"]]
    assert names == sorted(names)
    page = api.get("/api/runs/?page_size=2").json()
    assert page["count"] == 4 and len(page["results"]) == 2 and page["next"]


def test_cancel_a_queued_run_then_resume_and_clone(api, project):
    run_id = launch(api, project).json()["id"]
    assert api.post(f"/api/runs/{run_id}/cancel/").json()["status"] == "cancelled"
    # cancelling twice is refused with a clear reason
    resp = api.post(f"/api/runs/{run_id}/cancel/")
    assert resp.status_code == 400 and resp.json()["errors"]["status"] == ["cancelled"]
    resumed = api.post(f"/api/runs/{run_id}/resume/").json()
    assert resumed["status"] == "queued" and resumed["attempt"] == 2
    assert api.post(f"/api/runs/{run_id}/resume/").status_code == 400  # queued: nothing to resume
    clone = api.post(f"/api/runs/{run_id}/clone/", {"config": {"step_size": 0.5}}, format="json")
    assert clone.status_code == 201
    assert clone.json()["parent"] == run_id and clone.json()["config"]["step_size"] == 0.5
    bad = api.post(f"/api/runs/{run_id}/clone/", {"config": {"step_size": "x"}}, format="json")
    assert bad.status_code == 400 and "config.step_size" in bad.json()["errors"]


def test_external_run_logs_and_finishes(api, project):
    run = launch(api, project, kind="external", config={"lr": 1e-6}).json()
    assert run["status"] == "running"
    pts = [{"key": "loss", "step": s, "value": 1.0 / (s + 1)} for s in range(10)]
    assert api.post(f"/api/runs/{run['id']}/metrics/", pts, format="json").json()["written"] == 10
    done = api.post(f"/api/runs/{run['id']}/finish/", {"status": "succeeded"}, format="json")
    assert done.json()["status"] == "succeeded"
    assert api.get(f"/api/runs/{run['id']}/").json()["last"] == {}  # external kinds have no primary metrics


def test_sweep_launches_the_product_in_one_group(api, project):
    body = {
        "project": project.id,
        "name": "sweep",
        "kind": "tabular",
        "config": NPG_CONFIG,
        "grid": {"method": ["softmax_pg", "softmax_npg"], "step_size": [0.1, 1.0], "mdp.seed": [0, 1, 2]},
    }
    resp = api.post("/api/runs/sweep/", body, format="json")
    assert resp.status_code == 201, resp.content
    group = resp.json()["group"]
    runs = Run.objects.filter(group=group)
    assert runs.count() == 12
    assert {r.config["mdp"]["seed"] for r in runs} == {0, 1, 2}


def test_a_named_sweep_preset_launches_its_grid_and_a_grid_overrides_it(api, project):
    trainers = api.get("/api/trainers/").json()["results"]
    named = next(t for t in trainers if t["kind"] == "tabular")["sweep_presets"]["methods-x-step-size"]
    body = {"project": project.id, "kind": "tabular", "sweep_preset": "methods-x-step-size"}
    resp = api.post("/api/runs/sweep/", body, format="json")
    assert resp.status_code == 201, resp.content
    runs = Run.objects.filter(group=resp.json()["group"])
    assert runs.count() == 3 * 2 * 3 == len(named["grid"]["method"]) * 6
    assert {r.config["iterations"] for r in runs} == {200}  # the sweep preset's base preset (npg-garnet)
    resp = api.post("/api/runs/sweep/", {**body, "grid": {"step_size": [0.5]}, "config": {"iterations": 7}},
                    format="json")  # fmt: skip
    runs = Run.objects.filter(group=resp.json()["group"])
    assert runs.count() == 9 and {(r.config["step_size"], r.config["iterations"]) for r in runs} == {(0.5, 7)}
    bad = api.post("/api/runs/sweep/", {**body, "sweep_preset": "nope"}, format="json")
    assert bad.status_code == 400 and "sweep_preset" in bad.json()["errors"]
    assert (
        api.post("/api/runs/sweep/", {"project": project.id, "kind": "tabular"}, format="json").status_code
        == 400
    )


def test_sweep_with_one_invalid_point_creates_nothing(api, project):
    body = {
        "project": project.id,
        "kind": "tabular",
        "config": NPG_CONFIG,
        "grid": {"step_size": [1.0, -1.0]},
    }
    resp = api.post("/api/runs/sweep/", body, format="json")
    assert resp.status_code == 400 and Run.objects.count() == 0


def test_trainers_list_has_schema_and_presets(api):
    results = api.get("/api/trainers/").json()["results"]
    tabular = next(t for t in results if t["kind"] == "tabular")
    assert "method" in tabular["config_schema"]["properties"]
    assert tabular["presets"]


def test_openapi_schema(api):
    resp = api.get("/api/schema/?format=json")
    assert resp.status_code == 200
    schema = resp.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/runs/{id}/metrics/" in schema["paths"]


def test_session_auth_enforces_csrf(alice, project):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get("/api/runs/").status_code == 200
    resp = client.post(
        "/api/runs/", {"project": project.id, "kind": "tabular", "config": NPG_CONFIG}, format="json"
    )
    assert resp.status_code == 403


def test_schema_needs_a_login_too():
    assert APIClient().get("/api/schema/").status_code == 401


def test_nul_characters_are_a_400_not_a_database_error(api, project):
    assert api.get("/api/runs/?search=a%00b").status_code == 400
    resp = launch(api, project, kind="external", config={"note": "a\x00b"})
    assert resp.status_code == 400 and "config.note" in resp.json()["errors"]


def test_list_filters_by_config_values(api, project):
    for lr in (1e-6, 1e-5):
        launch(api, project, kind="external", config={"optim": {"lr": lr}, "seed": 1})
    assert api.get("/api/runs/?config.optim.lr__gt=2e-6").json()["count"] == 1
    assert api.get("/api/runs/?config.seed=1").json()["count"] == 2
    bad = api.get("/api/runs/?config.seed__bogus=1")
    assert bad.status_code == 400 and "config.seed__bogus" in bad.json()["errors"]


def test_the_runs_list_costs_the_same_queries_for_3_runs_and_30(api, alice, project):
    """The list defers each run's config: reading it anyway cost one query a run (1,000 runs: the
    bench's 57 ms became 1.1 s)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert api.get(f"/api/runs/?project={project.id}&page_size=100").status_code == 200
        return len(ctx.captured_queries)

    for i in range(3):
        Run.objects.create(project=project, name=f"r{i}", kind="external", created_by=alice, config={"a": i})
    few = queries()
    for i in range(3, 30):
        Run.objects.create(project=project, name=f"r{i}", kind="external", created_by=alice, config={"a": i})
    assert queries() == few
    with_config = api.get(f"/api/runs/?project={project.id}&fields=config").json()["results"]
    assert sorted(r["config"]["a"] for r in with_config) == list(range(30))
