"""The run page's checkpoint x benchmark section (issue 15 points 4, 6) in headless Chromium: a row per
checkpoint, a column per benchmark x protocol x metric with the value and its 95 % interval, a status
while queued (filled in without a reload once the evaluation succeeds), a cell opening its evaluation's
page; the per-checkpoint evaluate action and the eval policy editor (CSRF forms, a bad k names ks).
Members only: another user's request is a 404."""

from __future__ import annotations

import json
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.runs.models import Checkpoint, EvalPolicy, Evaluation, Run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def evaluated(api, alice, project):
    body = json.dumps({"prompt": "1+1=", "answer": "2"}).encode() + b"\n"
    resp = api.post(
        "/api/datasets/",
        {
            "file": SimpleUploadedFile("b.jsonl", body),
            "name": "bench",
            "kind": "problems",
            "project": project.id,
        },
    )
    assert resp.status_code == 201, resp.content
    bench = resp.json()["id"]
    run = Run.objects.create(
        project=project, name="sft", kind="sft", status="succeeded", queue="cpu", created_by=alice,
        config={"model_path": "tiny", "max_new_tokens": 16},
    )  # fmt: skip
    first, second = (
        Checkpoint.objects.create(run=run, step=step, path=f"/x/checkpoint-{step}") for step in (10, 20)
    )
    protocol = {"k": 2, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8}
    common = {"run": run, "benchmark_id": bench, "benchmark_name": "bench v1", "k": 2, "protocol": protocol}
    done = Evaluation.objects.create(
        checkpoint=first, step=10, status="succeeded", **common,
        metrics={"pass@1": 0.5, "pass@1_ci": [0.3, 0.7], "pass@2": 0.75, "avg@2": 0.5},
    )  # fmt: skip
    queued = Evaluation.objects.create(checkpoint=second, step=20, status="queued", **common)
    return run, bench, done, queued


def login(page, url):
    page.goto(url)
    page.fill("#id_username", "alice")
    page.fill("#id_password", "pw-alice")
    page.click('[data-testid="login-submit"]')


def test_table_evaluate_and_policy_editor(live_server, browser, evaluated):
    run, bench, done, queued = evaluated
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(20_000)
    login(page, f"{live_server.url}/runs/{run.pk}/")
    page.wait_for_url(re.compile(rf"/runs/{run.pk}/"))
    section = page.locator('[data-testid="checkpoint-evals-section"]')
    assert section.locator('[data-testid="ce-metric"]').all_inner_texts() == ["pass@1", "pass@2", "avg@2"]
    assert "n=2 T=1 top-p=1 max=8" in section.locator('[data-testid="ce-column"]').inner_text()
    row10 = section.locator('[data-testid="ce-row"][data-step="10"]')
    assert row10.locator('[data-testid="ce-value"]').all_inner_texts() == ["0.500", "0.750", "0.500"]
    assert row10.locator('[data-testid="ce-ci"]').first.inner_text() == "[0.300, 0.700]"
    row20 = section.locator('[data-testid="ce-row"][data-step="20"]')
    assert row20.locator('[data-testid="ce-status"]').first.text_content() == "queued"

    # the queued evaluation finishes: the cells fill in without a reload (the section's script)
    Evaluation.objects.filter(pk=queued.pk).update(
        status="succeeded", metrics={"pass@1": 0.25, "pass@2": 0.5}
    )
    page.wait_for_selector('[data-testid="ce-row"][data-step="20"] [data-testid="ce-value"]')
    assert row20.locator('[data-testid="ce-value"]').first.inner_text() == "0.250"

    # a cell opens its evaluation
    row10.locator('[data-testid="ce-link"]').first.click()
    page.wait_for_selector('[data-testid="evaluation-page"]')
    assert "[0.300, 0.700]" in page.locator('[data-testid="evaluation-metrics"]').inner_text()
    assert "temperature" in page.locator('[data-testid="evaluation-protocol"]').inner_text()
    page.go_back()

    # evaluate the step-10 checkpoint again from the page: a queued evaluation (no worker here)
    page.locator('[data-testid="ce-row"][data-step="10"] [data-testid="ce-evaluate-submit"]').click()
    page.wait_for_selector('[data-testid="messages"]')
    again = Evaluation.objects.filter(checkpoint__step=10, status="queued").get()
    assert again.benchmark_id == bench and again.k == 1  # SFT's own: greedy, one sample

    # the policy editor: every 2nd checkpoint, n 4, k 1 and 4
    page.locator('[data-testid="eval-policy"] summary').click()
    page.check('[data-testid="policy-benchmark"]')
    page.fill('[data-testid="policy-every"]', "2")
    page.fill('[data-testid="policy-n"]', "4")
    page.fill('[data-testid="policy-ks"]', "1, 4")
    page.click('[data-testid="policy-save"]')
    page.wait_for_selector('[data-testid="eval-policy-summary"]:has-text("every 2 checkpoints")')
    policy = EvalPolicy.objects.get(run=run)
    assert (policy.every, policy.n, policy.ks, policy.enabled) == (2, 4, [1, 4], True)
    assert list(policy.benchmarks.values_list("id", flat=True)) == [bench]

    # k above n: refused, the message names ks, the stored policy unchanged
    page.locator('[data-testid="eval-policy"] summary').click()
    page.fill('[data-testid="policy-ks"]', "8")
    page.click('[data-testid="policy-save"]')
    page.wait_for_selector('[data-testid="messages"]:has-text("ks")')
    assert EvalPolicy.objects.get(run=run).ks == [1, 4]
    assert not errors, errors


def test_other_users_get_404(client_bob, evaluated):
    run, bench, done, queued = evaluated
    assert client_bob.get(f"/runs/{run.pk}/checkpoint-evals/").status_code == 404
    assert client_bob.get(f"/runs/{run.pk}/evaluations/{done.pk}/").status_code == 404
    checkpoint = done.checkpoint_id
    assert (
        client_bob.post(
            f"/runs/{run.pk}/checkpoints/{checkpoint}/evaluate/", {"benchmark": bench}
        ).status_code
        == 404
    )
    assert client_bob.post(f"/runs/{run.pk}/eval-policy/", {"benchmarks": [bench]}).status_code == 404
    assert not EvalPolicy.objects.filter(run=run).exists()
