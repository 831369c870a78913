"""The samples and evaluations endpoints the run page reads: sample filters (verdict, truncated, step
range) with their validation, an evaluation recorded through the API, and the run's scoring jobs."""

from __future__ import annotations

import pytest

from trainers.common.verifiers.verdict import VERDICTS
from webapp.runs import services
from webapp.runs.models import SAMPLE_VERDICTS

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(alice, project):
    run = services.run_create(user=alice, project=project, name="ext", kind="external", config={})
    rows = []
    for step in range(6):
        for i, verdict in enumerate(VERDICTS):
            rows.append(
                {
                    "step": step,
                    "prompt": f"p{step}-{i}",
                    "completion": "x" * (10 * i + step),
                    "reward": 1.0 if verdict == "correct" else 0.0,
                    "advantage": 0.5 - i / 4,
                    "verdict": verdict,
                    "truncated": i == 2 and step % 2 == 0,
                }
            )
    assert services.samples_record(run, rows) == 30
    return run


def fetch(api, run, query: str = "") -> dict:
    resp = api.get(f"/api/runs/{run.id}/samples/?page_size=1000&{query}")
    assert resp.status_code == 200, resp.content
    return resp.json()


def test_the_verdicts_are_the_verifiers_own():
    assert SAMPLE_VERDICTS == VERDICTS


def test_filters_select_by_verdict_truncation_and_step_range(api, run):
    assert fetch(api, run)["count"] == 30
    wrong = fetch(api, run, "verdict=wrong")["results"]
    assert len(wrong) == 6 and {r["verdict"] for r in wrong} == {"wrong"}
    assert [r["step"] for r in wrong] == list(range(6))
    two = fetch(api, run, "verdict=timeout,error")["results"]
    assert len(two) == 12 and {r["verdict"] for r in two} == {"timeout", "error"}
    truncated = fetch(api, run, "truncated=true")["results"]
    assert [(r["step"], r["verdict"]) for r in truncated] == [
        (0, "no_answer"),
        (2, "no_answer"),
        (4, "no_answer"),
    ]
    assert fetch(api, run, "truncated=false")["count"] == 27
    ranged = fetch(api, run, "step_min=2&step_max=3")["results"]
    assert len(ranged) == 10 and {r["step"] for r in ranged} == {2, 3}
    both = fetch(api, run, "verdict=no_answer&truncated=false&step_min=1")["results"]
    assert [r["step"] for r in both] == [1, 3, 5]
    assert fetch(api, run, "step=4&verdict=correct")["results"][0]["prompt"] == "p4-0"


def test_paginated_in_step_order(api, run):
    resp = api.get(f"/api/runs/{run.id}/samples/?page_size=7&page=2").json()
    assert resp["count"] == 30 and len(resp["results"]) == 7
    assert [r["step"] for r in resp["results"]] == [1, 1, 1, 2, 2, 2, 2]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("verdict=right", "verdict"),
        ("verdict=wrong,maybe", "verdict"),
        ("truncated=yes", "truncated"),
        ("step_min=-1", "step_min"),
        ("step_max=abc", "step_max"),
        ("step_min=5&step_max=2", "step_max"),
        ("step=1.5", "step"),
    ],
)
def test_a_bad_filter_is_a_400_naming_the_parameter(api, run, query, field):
    resp = api.get(f"/api/runs/{run.id}/samples/?{query}")
    assert resp.status_code == 400, resp.content
    assert list(resp.json()["errors"]) == [field]


def test_the_unknown_verdict_is_named_with_the_known_ones(api, run):
    message = api.get(f"/api/runs/{run.id}/samples/?verdict=right").json()["errors"]["verdict"][0]
    assert "'right'" in message and all(v in message for v in VERDICTS)


def test_samples_of_another_users_run_are_404(bob_api, run):
    assert bob_api.get(f"/api/runs/{run.id}/samples/").status_code == 404
    assert bob_api.get(f"/api/runs/{run.id}/evaluations/").status_code == 404
    assert bob_api.get(f"/api/runs/{run.id}/scoring/").status_code == 404


def test_an_evaluation_recorded_through_the_api(api, bob_api, run):
    body = {
        "step": 20,
        "benchmark": "aime24",
        "metrics": {"avg@4": 0.25, "pass@1": 0.2, "pass@4": None},
        "protocol": {"k": 4, "temperature": 0.6, "top_p": 1.0, "max_new_tokens": 512, "verifier": "v1"},
    }
    resp = api.post(f"/api/runs/{run.id}/evaluations/", body, format="json")
    assert resp.status_code == 201, resp.content
    ev = resp.json()
    assert (ev["step"], ev["benchmark_name"], ev["k"], ev["status"]) == (20, "aime24", 4, "succeeded")
    assert ev["metrics"] == body["metrics"] and ev["protocol"] == body["protocol"]
    listed = api.get(f"/api/runs/{run.id}/evaluations/").json()["results"]
    assert [e["id"] for e in listed] == [ev["id"]]
    assert bob_api.post(f"/api/runs/{run.id}/evaluations/", body, format="json").status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"metrics": {"avg@4": "high"}}, "metrics.avg@4"),
        ({"metrics": {}}, "metrics"),
        ({"step": -1}, "step"),
        ({"protocol": {"k": 0}}, "protocol"),
        ({"benchmark": ""}, "benchmark"),
    ],
)
def test_a_bad_evaluation_is_a_400_naming_the_field(api, run, change, field):
    body = {"step": 1, "benchmark": "b", "metrics": {"avg@1": 0.5}, "protocol": {"k": 1}} | change
    resp = api.post(f"/api/runs/{run.id}/evaluations/", body, format="json")
    assert resp.status_code == 400, resp.content
    assert field in resp.json()["errors"]
