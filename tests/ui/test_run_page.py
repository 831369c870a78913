"""The run page's evaluations, samples and scoring panels through Django's test client: which panels
a run gets, the samples filter state read from the URL, and the "Score a dataset" form (CSRF, the
project's own preference datasets only, errors as messages, other users 404). The browser side is in
test_run_page_browser.py."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client

from webapp.datasets.models import Dataset, ScoringJob
from webapp.projects.services import project_create
from webapp.runs import services
from webapp.runs.models import Checkpoint, Run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def dataset(project, name, kind="preference", status="ready", version=1) -> Dataset:
    return Dataset.objects.create(
        project=project, name=name, kind=kind, status=status, version=version, row_count=3
    )


@pytest.fixture
def reward(alice, project):
    """A finished reward-model run with two checkpoints, and datasets of several kinds and projects."""
    run = Run.objects.create(project=project, name="rm", kind="reward", status="succeeded", queue="cpu")
    other = project_create(user=alice, name="alice-other")
    return {
        "run": run,
        "ckpts": [Checkpoint.objects.create(run=run, step=s, path=f"/tmp/rm-{s}") for s in (10, 20)],
        "prefs": dataset(project, "prefs"),
        "prefs_v2": dataset(project, "prefs", version=2),
        "problems": dataset(project, "bench", kind="problems"),
        "importing": dataset(project, "half", status="importing"),
        "elsewhere": dataset(other, "other-prefs"),
    }


def page(client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200, url
    return response.content.decode()


def page_data(html: str) -> dict:
    return json.loads(
        re.search(r'<script id="run-data" type="application/json">(.*?)</script>', html, re.S)[1]
    )


def section_hidden(html: str, testid: str) -> bool:
    tag = re.search(rf'<section[^>]*data-testid="{testid}"[^>]*>', html)
    assert tag, testid
    return " hidden" in tag[0]


def messages_of(client, response) -> list[str]:
    assert response.status_code == 302
    html = page(client, response["Location"].split("#")[0])
    return re.findall(r'<li class="msg msg-\w+">(.*?)</li>', html, re.S)


def test_panels_show_only_what_the_run_has(client_alice, alice, project):
    run = services.run_create(user=alice, project=project, name="ext", kind="external", config={})
    html = page(client_alice, f"/runs/{run.pk}/")
    assert section_hidden(html, "evaluations-section") and section_hidden(html, "samples-section")
    assert 'data-testid="scoring-section"' not in html and "run-scoring.js" not in html
    data = page_data(html)
    assert data["evaluations_api"] == f"/api/runs/{run.pk}/evaluations/"
    assert data["samples_api"] == f"/api/runs/{run.pk}/samples/"
    assert data["verdicts"] == ["correct", "wrong", "no_answer", "timeout", "error"]

    services.evaluation_record(run.id, 5, "aime", {"avg@4": 0.5}, {"k": 4})
    services.samples_record(run, [{"step": 1, "prompt": "p", "completion": "c", "verdict": "wrong"}])
    html = page(client_alice, f"/runs/{run.pk}/")
    assert not section_hidden(html, "evaluations-section") and not section_hidden(html, "samples-section")


def test_the_samples_filters_come_from_the_url_and_bad_values_are_dropped(client_alice, alice, project):
    run = services.run_create(user=alice, project=project, name="ext", kind="external", config={})
    html = page(client_alice, f"/runs/{run.pk}/?verdict=no_answer&truncated=true&step_min=3&step_max=9")
    assert '<option value="no_answer" selected>' in html
    assert '<option value="true" selected>yes</option>' in html
    assert re.search(r'name="step_min"[^>]*value="3"', html) and re.search(
        r'name="step_max"[^>]*value="9"', html
    )
    html = page(client_alice, f"/runs/{run.pk}/?verdict=<b>&truncated=maybe&step_min=-2&step_max=x")
    assert " selected>" not in html.split('data-testid="samples-filter"')[1].split("</form>")[0]
    assert re.search(r'name="step_min"[^>]*value=""', html) and "<b>" not in html


def test_a_reward_run_offers_its_projects_ready_preference_datasets(client_alice, reward):
    html = page(client_alice, f"/runs/{reward['run'].pk}/")
    assert not section_hidden(html, "scoring-section") and "run-scoring.js" in html
    rows = re.findall(r'<tr data-testid="checkpoint-row".*?</tr>', html, re.S)
    assert len(rows) == 2
    for row, ckpt in zip(rows, reward["ckpts"], strict=True):
        assert f'action="/runs/{reward["run"].pk}/checkpoints/{ckpt.pk}/score/"' in row
        assert "csrfmiddlewaretoken" in row
        options = re.findall(r'<option value="(\d+)">', row)
        assert options == [str(reward["prefs_v2"].pk), str(reward["prefs"].pk)]  # newest version first
    assert page_data(html)["scoring_api"] == f"/api/runs/{reward['run'].pk}/scoring/"
    # a policy run has no scoring control
    ext = Run.objects.create(project=reward["run"].project, name="sft", kind="sft", status="succeeded")
    Checkpoint.objects.create(run=ext, step=1, path="/tmp/x")
    assert 'data-testid="score-control"' not in page(client_alice, f"/runs/{ext.pk}/")


def test_scoring_from_the_page_queues_a_job_and_lists_it(client_alice, reward):
    run, ckpt, prefs = reward["run"], reward["ckpts"][1], reward["prefs"]
    url = f"/runs/{run.pk}/checkpoints/{ckpt.pk}/score/"
    response = client_alice.post(url, {"dataset": prefs.pk})
    assert response["Location"] == f"/runs/{run.pk}/#scoring"
    job = ScoringJob.objects.get()
    assert (job.checkpoint_id, job.dataset_id, job.status) == (ckpt.pk, prefs.pk, "queued")
    assert any(
        "Scoring prefs v1 with the step-20 checkpoint" in m for m in messages_of(client_alice, response)
    )
    html = page(client_alice, f"/runs/{run.pk}/")
    row = re.search(
        rf'<tr data-testid="scoring-row" data-job="{job.pk}" data-status="queued">.*?</tr>', html, re.S
    )
    assert row and "step 20" in row[0] and "prefs v1" in row[0] and 'data-testid="scores-link"' not in row[0]

    ScoringJob.objects.filter(pk=job.pk).update(status="succeeded", progress=1.0, scored=3)
    html = page(client_alice, f"/runs/{run.pk}/")
    link = f'href="/datasets/{prefs.pk}/pairs/?rm={ckpt.pk}&amp;ordering=margin" data-testid="scores-link"'
    assert link in html and "width: 100%" in html
    listed = client_alice.get(f"/api/runs/{run.pk}/scoring/").json()["results"]
    assert listed[0]["dataset_name"] == "prefs" and listed[0]["checkpoint_step"] == 20


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("elsewhere", "belongs to another project"),
        ("problems", "only preference datasets can be scored"),
        ("importing", "dataset is importing, not ready"),
        ("missing", "choose one of this project"),
    ],
)
def test_a_dataset_that_cannot_be_scored_is_a_message(client_alice, reward, target, message):
    ds = reward[target].pk if target != "missing" else 10**9
    response = client_alice.post(
        f"/runs/{reward['run'].pk}/checkpoints/{reward['ckpts'][0].pk}/score/", {"dataset": ds}
    )
    shown = messages_of(client_alice, response)
    assert any(message in m and m.startswith("Could not score") for m in shown), shown
    assert not ScoringJob.objects.exists()


def test_a_policy_checkpoint_cannot_score(client_alice, reward):
    run = Run.objects.create(project=reward["run"].project, name="sft", kind="sft", status="succeeded")
    ckpt = Checkpoint.objects.create(run=run, step=1, path="/tmp/x")
    response = client_alice.post(
        f"/runs/{run.pk}/checkpoints/{ckpt.pk}/score/", {"dataset": reward["prefs"].pk}
    )
    assert any("not a checkpoint of a reward-model run" in m for m in messages_of(client_alice, response))
    assert not ScoringJob.objects.exists()


def test_scoring_needs_the_owner_a_post_a_matching_checkpoint_and_csrf(
    client_alice, client_bob, alice, reward
):
    run, ckpt, prefs = reward["run"], reward["ckpts"][0], reward["prefs"]
    url = f"/runs/{run.pk}/checkpoints/{ckpt.pk}/score/"
    assert client_bob.get(f"/runs/{run.pk}/").status_code == 404
    assert client_bob.post(url, {"dataset": prefs.pk}).status_code == 404
    assert client_bob.get(f"/api/runs/{run.pk}/scoring/").status_code == 404
    assert client_alice.get(url).status_code == 405
    other = Run.objects.create(project=run.project, name="rm2", kind="reward", status="succeeded")
    assert (
        client_alice.post(f"/runs/{other.pk}/checkpoints/{ckpt.pk}/score/", {"dataset": prefs.pk}).status_code
        == 404
    )
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post(url, {"dataset": prefs.pk}).status_code == 403
    token = strict.get(f"/runs/{run.pk}/").cookies["csrftoken"].value
    assert strict.post(url, {"dataset": prefs.pk, "csrfmiddlewaretoken": token}).status_code == 302
    assert ScoringJob.objects.count() == 1
