"""A run's eval policy through the API (issue 15 point 4): set at launch and by PUT, read by GET, every
bad field a 400 naming it, other teams' runs a 404; a saved checkpoint enqueues the policy's
evaluation once (the outbox holds its `eval` message)."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.outbox.models import Message as OutboxMessage
from webapp.projects.services import project_create
from webapp.runs import services
from webapp.runs.models import Evaluation, Run

pytestmark = pytest.mark.django_db


def dataset(api, project, kind="problems", name="bench"):
    rows = (
        [{"prompt": "1+1=", "answer": "2"}]
        if kind == "problems"
        else [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    )
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    resp = api.post(
        "/api/datasets/",
        {
            "file": SimpleUploadedFile(f"{name}.jsonl", body),
            "name": name,
            "kind": kind,
            "project": project.id,
        },
    )
    assert resp.status_code == 201, resp.content
    return resp.json()["id"]


def sft_run(project, alice, **config):
    return Run.objects.create(
        project=project, name="sft", kind="sft", status="running", queue="cpu", created_by=alice,
        config={"model_path": "tiny", "max_new_tokens": 16, **config},
    )  # fmt: skip


def test_policy_get_put_and_defaults(api, project, alice):
    bench = dataset(api, project)
    run = sft_run(project, alice)
    got = api.get(f"/api/runs/{run.id}/eval-policy/").json()
    # SFT evaluates greedily with its max_new_tokens: the run's own settings fill the nulls
    assert got["enabled"] is False and got["available"] is True
    assert got["defaults"] == {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 16}
    resp = api.put(
        f"/api/runs/{run.id}/eval-policy/",
        {"benchmarks": [bench], "every": 2, "n": 4, "ks": [4, 1, 2], "temperature": 0.7},
        format="json",
    )
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["enabled"] and body["benchmarks"] == [bench] and body["every"] == 2
    assert body["ks"] == [1, 2, 4] and body["temperature"] == 0.7 and body["max_new_tokens"] is None
    assert api.get(f"/api/runs/{run.id}/eval-policy/").json()["ks"] == [1, 2, 4]


@pytest.mark.parametrize(
    "policy, field",
    [
        ({"benchmarks": [10**9]}, "benchmarks.0"),
        ({"benchmarks": "x"}, "benchmarks"),
        ({"benchmarks": []}, "benchmarks"),
        ({"ks": [1, 9], "n": 8}, "ks"),
        ({"ks": [2]}, "ks"),  # n is the run's own: SFT's greedy 1
        ({"every": 0}, "every"),
        ({"top_p": 0}, "top_p"),
        ({"temperature": -1}, "temperature"),
        ({"n": 0}, "n"),
        ({"max_new_tokens": "many"}, "max_new_tokens"),
        ({"enabled": "yes"}, "enabled"),  # the schema's types, not DRF's lenient ones
        ({"every": "2"}, "every"),
        ({"n": 2.0}, "n"),
        ({"temperature": "0.5"}, "temperature"),
    ],
)
def test_policy_bad_input_is_a_400_naming_the_field(api, project, alice, policy, field):
    bench = dataset(api, project)
    run = sft_run(project, alice)
    resp = api.put(f"/api/runs/{run.id}/eval-policy/", {"benchmarks": [bench], **policy}, format="json")
    assert resp.status_code == 400, resp.content
    assert field in resp.json()["errors"], resp.json()


def test_a_dataset_of_another_project_or_kind_is_refused(api, bob_api, project, alice, bob):
    theirs = project_create(user=bob, name="bob-lab")
    their_bench = dataset(bob_api, theirs)
    prefs = dataset(api, project, kind="preference", name="prefs")
    run = sft_run(project, alice)
    for ref in (their_bench, prefs):
        resp = api.put(f"/api/runs/{run.id}/eval-policy/", {"benchmarks": [ref]}, format="json")
        assert resp.status_code == 400 and "benchmarks.0" in resp.json()["errors"], resp.content


def test_only_members_read_or_edit_a_policy(api, bob_api, project, alice):
    bench = dataset(api, project)
    run = sft_run(project, alice)
    assert bob_api.get(f"/api/runs/{run.id}/eval-policy/").status_code == 404
    assert (
        bob_api.put(f"/api/runs/{run.id}/eval-policy/", {"benchmarks": [bench]}, format="json").status_code
        == 404
    )
    from rest_framework.test import APIClient

    assert APIClient().get(f"/api/runs/{run.id}/eval-policy/").status_code in (401, 403)


def test_a_run_kind_without_policy_checkpoints_is_refused(api, project, alice):
    bench = dataset(api, project)
    run = Run.objects.create(project=project, name="t", kind="tabular", status="running", created_by=alice)
    resp = api.put(f"/api/runs/{run.id}/eval-policy/", {"benchmarks": [bench]}, format="json")
    assert resp.status_code == 400 and "run" in resp.json()["errors"]


def test_launch_with_a_bad_policy_launches_nothing(api, project):
    before = Run.objects.count()
    resp = api.post(
        "/api/runs/",
        {"project": project.id, "kind": "sft", "config": {"model_path": "tiny"},
         "eval_policy": {"benchmarks": [10**9], "ks": [3], "n": 2}},
        format="json",
    )  # fmt: skip
    assert resp.status_code == 400
    assert {"eval_policy.benchmarks.0", "eval_policy.ks"} <= set(resp.json()["errors"]), resp.json()
    assert Run.objects.count() == before


def test_a_saved_checkpoint_enqueues_the_policy_evaluation_once(api, project, alice):
    bench = dataset(api, project)
    run = sft_run(project, alice)
    put = {"benchmarks": [bench], "every": 2, "n": 2, "ks": [1, 2]}
    assert api.put(f"/api/runs/{run.id}/eval-policy/", put, format="json").status_code == 200
    for step in (10, 20, 30, 40):
        services.checkpoint_record(run.id, 1, step, f"/nowhere/checkpoint-{step}", {})
    services.checkpoint_record(run.id, 1, 40, "/nowhere/checkpoint-40", {})  # a redelivered sink write
    evals = Evaluation.objects.filter(run=run).order_by("step")
    assert [(e.step, e.checkpoint.step, e.k, e.status) for e in evals] == [
        (20, 20, 2, "queued"),
        (40, 40, 2, "queued"),
    ]
    assert all(e.protocol["ks"] == [1, 2] and e.attempt is None for e in evals)
    messages = OutboxMessage.objects.filter(task="workers.tasks.evaluate_checkpoint")
    assert sorted(m.args[0] for m in messages) == [e.id for e in evals]
    assert {m.queue for m in messages} == {"eval"}
    # a disabled policy queues nothing more
    assert (
        api.put(f"/api/runs/{run.id}/eval-policy/", {**put, "enabled": False}, format="json").status_code
        == 200
    )
    services.checkpoint_record(run.id, 1, 60, "/nowhere/checkpoint-60", {})
    assert evals.count() == 2


def test_an_rl_launch_with_eval_ks_above_k_is_a_400_naming_config_eval_ks(api, project):
    resp = api.post(
        "/api/runs/",
        {"project": project.id, "kind": "rl", "config": {"eval": {"k": 2, "ks": [1, 4]}}},
        format="json",
    )
    assert resp.status_code == 400 and "config.eval.ks" in resp.json()["errors"], resp.content


def test_on_demand_evaluations_take_the_runs_eval_ks(api, project, alice):
    bench = dataset(api, project)
    run = Run.objects.create(
        project=project, name="rl", kind="rl", status="running", queue="cpu", created_by=alice,
        config={"eval": {"k": 8, "ks": [1, 8]}},
    )  # fmt: skip
    checkpoint = services.checkpoint_record(run.id, 1, 10, "/nowhere/checkpoint-10", {})
    resp = api.post(f"/api/checkpoints/{checkpoint.id}/evaluate/", {"benchmark": bench}, format="json")
    assert resp.status_code == 202, resp.content
    assert resp.json()["protocol"]["ks"] == [1, 8] and resp.json()["k"] == 8
    # a smaller k asked here keeps the run's ks it allows
    resp = api.post(
        f"/api/checkpoints/{checkpoint.id}/evaluate/", {"benchmark": bench, "k": 4}, format="json"
    )
    assert resp.json()["protocol"]["ks"] == [1]
