"""POST/GET /api/runs/{id}/metrics/: validation, atomicity, idempotency, downsampling, compare."""

import pytest

from webapp.runs.models import MetricSeries, Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(project, alice):
    return Run.objects.create(
        project=project, name="ext", kind="external", status="running", created_by=alice
    )


def post(api, run, points):
    return api.post(f"/api/runs/{run.id}/metrics/", points, format="json")


def test_batch_round_trip_and_retry_is_idempotent(api, run):
    pts = [{"key": k, "step": s, "value": s * 0.1} for s in range(100) for k in ("loss", "acc")]
    assert post(api, run, pts).json() == {"received": 200, "written": 200, "skipped": 0}
    assert post(api, run, pts).json() == {"received": 200, "written": 0, "skipped": 200}
    data = api.get(f"/api/runs/{run.id}/metrics/?keys=loss").json()
    assert list(data) == ["loss"] and data["loss"]["steps"] == list(range(100))


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"key": "loss", "step": -1, "value": 1.0}, "[1].step"),
        ({"key": "loss", "step": 1.5, "value": 1.0}, "[1].step"),
        ({"key": "loss", "step": 1, "value": "high"}, "[1].value"),
        ({"key": "loss", "step": 1, "value": True}, "[1].value"),
        ({"key": "", "step": 1, "value": 1.0}, "[1].key"),
        ({"key": "loss", "value": 1.0}, "[1]"),
        ({"key": "loss", "step": 1, "value": 1.0, "wall_time": "now"}, "[1].wall_time"),
        ("not an object", "[1]"),
    ],
)
def test_a_bad_point_rejects_the_whole_batch(api, run, bad, field):
    resp = post(api, run, [{"key": "loss", "step": 0, "value": 1.0}, bad])
    assert resp.status_code == 400
    assert field in resp.json()["errors"], resp.json()
    assert not MetricSeries.objects.filter(run=run).exists()  # the good point was not written either


def test_oversized_batch_is_rejected(api, run):
    pts = [{"key": "x", "step": i, "value": 0.0} for i in range(100_001)]
    resp = post(api, run, pts)
    assert resp.status_code == 400 and "at most 100000" in resp.json()["errors"]["__all__"][0]
    assert not MetricSeries.objects.filter(run=run).exists()


def test_malformed_json_and_nan_literals_are_rejected(api, run):
    url = f"/api/runs/{run.id}/metrics/"
    assert api.post(url, b"[{", content_type="application/json").status_code == 400
    nan = b'[{"key": "x", "step": 0, "value": NaN}]'
    assert api.post(url, nan, content_type="application/json").status_code == 400


def test_null_is_stored_as_nan_and_returned_as_null(api, run):
    post(api, run, [{"key": "loss", "step": 0, "value": None}, {"key": "loss", "step": 1, "value": 2}])
    assert api.get(f"/api/runs/{run.id}/metrics/").json()["loss"]["values"] == [None, 2.0]


def test_since_step_and_max_points(api, run):
    post(api, run, [{"key": "loss", "step": s, "value": float(s % 17)} for s in range(5000)])
    tail = api.get(f"/api/runs/{run.id}/metrics/?since_step=4995").json()["loss"]
    assert tail["steps"] == [4996, 4997, 4998, 4999]
    small = api.get(f"/api/runs/{run.id}/metrics/?max_points=100").json()["loss"]
    assert len(small["steps"]) <= 100 and max(small["values"]) == 16.0
    assert api.get(f"/api/runs/{run.id}/metrics/?max_points=abc").status_code == 400
    walls = api.get(f"/api/runs/{run.id}/metrics/?since_step=4998&with_wall=1").json()["loss"]
    assert len(walls["walls"]) == 1


def test_compare_returns_each_run_and_hides_others(api, bob_api, run, project, alice):
    other = Run.objects.create(project=project, name="b", kind="external", status="running")
    post(api, run, [{"key": "loss", "step": 0, "value": 1.0}])
    post(api, other, [{"key": "loss", "step": 0, "value": 2.0}])
    data = api.get(f"/api/compare/?runs={run.id},{other.id}&keys=loss").json()
    assert data[str(run.id)]["loss"]["values"] == [1.0] and data[str(other.id)]["loss"]["values"] == [2.0]
    assert bob_api.get(f"/api/compare/?runs={run.id}").status_code == 404
    assert api.get("/api/compare/?runs=x").status_code == 400
