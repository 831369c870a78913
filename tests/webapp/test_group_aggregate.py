"""Group mean and band on the server (webapp.runs.group_aggregate, GET /api/compare/groups/): the
numbers match numpy on the same data, runs with different steps are aligned by interpolation, the
curve is thinned to max_points, other users' runs are 404, and JSON responses are gzip-compressed."""

import gzip

import numpy as np
import pytest

from webapp.runs.group_aggregate import aggregate_members
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db

STEPS = 300


@pytest.fixture
def sweep(project, alice):
    """Two groups of runs (3 and 2) logging 'loss' at the same steps, one NaN in the first run."""
    rng = np.random.default_rng(1)
    runs, values = [], {}
    for i in range(5):
        run = Run.objects.create(
            project=project, name=f"r{i}", kind="external", status="succeeded", created_by=alice
        )
        v = rng.standard_normal(STEPS) + i
        if i == 0:
            v[7] = np.nan
        steps = np.arange(STEPS) * 2
        metrics_record(run.id, {"loss": Columns.of(steps, v, np.zeros(STEPS))})
        runs.append(run)
        values[run.id] = v
    return runs, values


def test_mean_and_band_match_numpy(api, sweep):
    runs, values = sweep
    groups = [[r.id for r in runs[:3]], [r.id for r in runs[3:]]]
    q = ";".join(",".join(str(i) for i in g) for g in groups)
    body = api.get(f"/api/compare/groups/?groups={q}&keys=loss").json()
    assert [g["runs"] for g in body["groups"]] == groups
    for group, answer in zip(groups, body["groups"], strict=True):
        m = np.vstack([values[i] for i in group])
        s = answer["series"]["loss"]
        assert s["steps"] == list(range(0, 2 * STEPS, 2))
        with np.errstate(invalid="ignore"):
            np.testing.assert_allclose(s["mean"], np.nanmean(m, axis=0), rtol=1e-6)
            np.testing.assert_allclose(s["min"], np.nanmin(m, axis=0), rtol=1e-6)
            np.testing.assert_allclose(s["max"], np.nanmax(m, axis=0), rtol=1e-6)
            np.testing.assert_allclose(s["std"], np.nanstd(m, axis=0, ddof=1), rtol=1e-6)
        assert s["count"] == np.isfinite(m).sum(axis=0).tolist()
    assert body["groups"][0]["series"]["loss"]["count"][7] == 2  # the NaN is left out
    # in float64 (the API sends float32: 7 significant digits)
    exact = aggregate_members([(np.arange(STEPS) * 2, values[i]) for i in groups[0]])
    m = np.vstack([values[i] for i in groups[0]])
    np.testing.assert_allclose(exact["mean"], np.nanmean(m, axis=0), rtol=1e-13)
    np.testing.assert_allclose(exact["std"], np.nanstd(m, axis=0, ddof=1), rtol=1e-12)


def test_thinned_to_max_points_keeping_the_mean_spike(api, sweep):
    runs, values = sweep
    q = ",".join(str(r.id) for r in runs)
    s = api.get(f"/api/compare/groups/?groups={q}&keys=loss&max_points=40").json()["groups"][0]["series"][
        "loss"
    ]
    assert 4 <= len(s["steps"]) <= 40 and len(s["mean"]) == len(s["std"]) == len(s["count"]) == len(
        s["steps"]
    )
    full = np.nanmean(np.vstack(list(values.values())), axis=0)
    assert max(s["mean"]) == pytest.approx(np.nanmax(full))
    assert s["steps"][0] == 0 and s["steps"][-1] == 2 * (STEPS - 1)


def test_different_steps_are_interpolated_and_ranges_respected():
    a = (np.array([0, 10, 20]), np.array([0.0, 1.0, 2.0]))
    b = (np.array([5, 15, 30]), np.array([10.0, 20.0, 40.0]))
    out = aggregate_members([a, b])
    assert out["steps"].tolist() == [0, 5, 10, 15, 20, 30]
    # a at 5 and 15 is interpolated (0.5, 1.5); b at 10, 20 (15, 26.67); a ends at 20, b starts at 5
    np.testing.assert_allclose(out["mean"], [0.0, 5.25, 8.0, 10.75, (2 + 20 + 20 / 3) / 2, 40.0])
    assert out["count"].tolist() == [1, 2, 2, 2, 2, 1]
    np.testing.assert_allclose(out["min"], [0.0, 0.5, 1.0, 1.5, 2.0, 40.0])
    np.testing.assert_allclose(out["std"][[0, 5]], [0.0, 0.0])


def test_other_users_runs_are_404_and_bad_groups_400(bob_api, api, sweep):
    runs, _ = sweep
    assert bob_api.get(f"/api/compare/groups/?groups={runs[0].id}").status_code == 404
    assert api.get("/api/compare/groups/?groups=1,x").status_code == 400
    assert api.get("/api/compare/groups/?groups=;").status_code == 400


def test_json_is_gzip_compressed_for_clients_that_accept_it(api, sweep):
    runs, _ = sweep
    q = ",".join(str(r.id) for r in runs)
    plain = api.get(f"/api/compare/series/?runs={q}&keys=loss")
    packed = api.get(f"/api/compare/series/?runs={q}&keys=loss", HTTP_ACCEPT_ENCODING="gzip")
    assert "Content-Encoding" not in plain and packed["Content-Encoding"] == "gzip"
    assert len(packed.content) < len(plain.content) / 2
    assert gzip.decompress(packed.content) == plain.content


def test_streaming_responses_pass_uncompressed():
    """A stream (server-sent events, a log tail) must reach the client chunk by chunk: gzip would
    hold the chunks back until its buffer fills."""
    from django.http import HttpResponse, StreamingHttpResponse
    from django.test import RequestFactory

    from webapp.compression import CompressMiddleware

    request = RequestFactory().get("/", HTTP_ACCEPT_ENCODING="gzip")
    stream = StreamingHttpResponse(iter([b"data: 1\n\n", b"data: 2\n\n"]), content_type="text/event-stream")
    out = CompressMiddleware(lambda r: stream)(request)
    assert "Content-Encoding" not in out and list(out.streaming_content) == [b"data: 1\n\n", b"data: 2\n\n"]
    page = HttpResponse(b'{"x": [' + b"1.2345, " * 500 + b"0]}", content_type="application/json")
    assert CompressMiddleware(lambda r: page)(request)["Content-Encoding"] == "gzip"


def test_a_downsampled_aggregate_is_cached_until_a_member_logs_a_point(api, sweep, monkeypatch):
    from webapp.runs import group_aggregate as ga

    runs, values = sweep
    q = ",".join(str(r.id) for r in runs)
    url = f"/api/compare/groups/?groups={q}&keys=loss&max_points=40"
    first = api.get(url).json()

    def must_not_read(*args, **kwargs):
        raise AssertionError("the cached aggregate was read again")

    with monkeypatch.context() as m:
        m.setattr(ga, "series_read", must_not_read)
        assert api.get(url).json() == first  # the groups of finished runs: averaged once
    # a new point in one member changes its count and last step: the group is computed again
    metrics_record(runs[0].id, {"loss": Columns.of(np.array([2 * STEPS]), np.array([100.0]), np.zeros(1))})
    again = api.get(url).json()["groups"][0]["series"]["loss"]
    assert again["steps"][-1] == 2 * STEPS and again != first["groups"][0]["series"]["loss"]
