"""The run page's chart API (issue 16 points 2, 6, 7): chart preferences per user per project (pins,
collapsed sections) as operations, members only, 400 on bad input; a run's chart markers with its
duration over all attempts; a run's metrics as CSV with the run's name on every row."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from webapp.runs.attempts import run_duration_s
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Run, RunAttempt

pytestmark = pytest.mark.django_db


def prefs_url(project) -> str:
    return f"/api/projects/{project.pk}/chart-prefs/"


def test_pins_and_sections_are_operations_per_user_per_project(api, bob_api, project, bob):
    assert api.get(prefs_url(project)).json() == {"project": project.pk, "pinned": [], "collapsed": []}
    r = api.patch(
        prefs_url(project), {"pin": ["actor/lr", "train/loss"], "collapse": ["eval"]}, format="json"
    )
    assert r.status_code == 200, r.content
    # a second "tab" pins another key without knowing the first's: both stay (operations, not lists)
    r = api.patch(prefs_url(project), {"pin": ["critic/ece"], "unpin": ["train/loss"]}, format="json")
    assert r.json() == {"project": project.pk, "pinned": ["actor/lr", "critic/ece"], "collapsed": ["eval"]}
    r = api.patch(prefs_url(project), {"expand": ["eval"], "pin": ["actor/lr"]}, format="json")
    assert r.json()["collapsed"] == [] and r.json()["pinned"] == ["actor/lr", "critic/ece"]  # no duplicate
    # bob is no member: the same answer as a project that does not exist
    assert bob_api.get(prefs_url(project)).status_code == 404
    assert bob_api.patch(prefs_url(project), {"pin": ["x"]}, format="json").status_code == 404
    # his own project has his own (empty) preferences
    from webapp.projects.services import project_create

    own = project_create(user=bob, name="bob-lab")
    assert bob_api.get(prefs_url(own)).json()["pinned"] == []


@pytest.mark.parametrize(
    "body, field",
    [
        ({"pin": "actor/lr"}, "pin"),  # not a list
        ({"pin": [""]}, "pin.0"),
        ({"pin": ["x" * 256]}, "pin.0"),
        ({"collapse": [None]}, "collapse.0"),
        ({"unpin": [f"k{i}" for i in range(101)]}, "unpin"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, project, body, field):
    r = api.patch(prefs_url(project), body, format="json")
    assert r.status_code == 400, r.content
    assert field in r.json()["errors"], r.json()


def test_pins_are_bounded(api, project):
    for chunk in range(2):
        r = api.patch(prefs_url(project), {"pin": [f"k{chunk}-{i}" for i in range(50)]}, format="json")
        assert r.status_code == 200
    r = api.patch(prefs_url(project), {"pin": ["one-too-many"]}, format="json")
    assert r.status_code == 400 and "pin" in r.json()["errors"]
    assert len(api.get(prefs_url(project)).json()["pinned"]) == 100


def test_the_page_needs_a_csrf_token_for_a_change(alice, project):
    from django.test import Client

    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    r = browser.patch(prefs_url(project), '{"pin": ["a"]}', content_type="application/json")
    assert r.status_code == 403


def resumed_run(alice, project, status="succeeded") -> Run:
    run = Run.objects.create(project=project, name="resumed, \"quoted\"", kind="synthetic", status=status,
                             attempt=2, created_by=alice)  # fmt: skip
    t0 = timezone.now() - timedelta(minutes=30)
    RunAttempt.objects.create(
        run=run, attempt=1, first_step=0, started_at=t0, ended_at=t0 + timedelta(minutes=10), status="lost"
    )
    RunAttempt.objects.create(
        run=run, attempt=2, first_step=25, resumed_from_step=24, started_at=t0 + timedelta(minutes=20),
        ended_at=t0 + timedelta(minutes=25), status="succeeded",
    )  # fmt: skip
    # the claim of attempt 2 reset the run's own clock: Run.duration is the last attempt's only
    run.started_at = t0 + timedelta(minutes=20)
    run.finished_at = t0 + timedelta(minutes=25)
    run.save()
    return run


def test_duration_and_markers_count_every_attempt(api, bob_api, alice, project, client):
    run = resumed_run(alice, project)
    assert run.duration == timedelta(minutes=5)
    assert run_duration_s(run) == pytest.approx(15 * 60)
    r = api.get(f"/api/runs/{run.pk}/chart-markers/")
    assert r.status_code == 200
    body = r.json()
    assert [(a["attempt"], a["first_step"]) for a in body["attempts"]] == [(1, 0), (2, 25)]
    assert body["duration_s"] == pytest.approx(900) and body["events"] == []
    assert bob_api.get(f"/api/runs/{run.pk}/chart-markers/").status_code == 404
    # the page's facts say the same
    client.force_login(alice)
    page = client.get(f"/runs/{run.pk}/")
    assert 'data-testid="duration">15m 00s<' in page.content.decode()
    assert page.context["page_data"]["duration_s"] == pytest.approx(900)


def test_metrics_csv_has_the_run_name_on_every_row(api, bob_api, alice, project):
    run = resumed_run(alice, project)
    run.name = "=HYPERLINK(1), ok"  # a formula-looking name is neutralised for spreadsheets
    run.save()
    steps = np.arange(3)
    metrics_record(
        run.id,
        {
            "train/loss": Columns.of(steps, np.array([1.0, float("nan"), 0.25]), steps * 0.0),
            "actor/lr": Columns.of(steps, np.array([5e-5, 5e-5, 4e-5]), steps * 0.0),
        },
    )
    r = api.get(f"/api/runs/{run.pk}/metrics.csv")
    assert r.status_code == 200 and r["Content-Type"].startswith("text/csv")
    assert f"run-{run.pk}-metrics.csv" in r["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(r.streaming_content).decode())))
    assert rows[0] == ["run_id", "run", "key", "step", "value"]
    assert rows[1:] == [
        [str(run.pk), "'=HYPERLINK(1), ok", "actor/lr", "0", "5e-05"],
        [str(run.pk), "'=HYPERLINK(1), ok", "actor/lr", "1", "5e-05"],
        [str(run.pk), "'=HYPERLINK(1), ok", "actor/lr", "2", "4e-05"],
        [str(run.pk), "'=HYPERLINK(1), ok", "train/loss", "0", "1.0"],
        [str(run.pk), "'=HYPERLINK(1), ok", "train/loss", "1", ""],
        [str(run.pk), "'=HYPERLINK(1), ok", "train/loss", "2", "0.25"],
    ]
    assert bob_api.get(f"/api/runs/{run.pk}/metrics.csv").status_code == 404


def test_chart_prefs_take_json_bodies_only(api, project):
    # a form body cannot say "expand is a list": schemathesis's multipart `expand: {}` was a 200
    r = api.patch(prefs_url(project), {"pin": "x"}, format="multipart")
    assert r.status_code in (400, 415) and "multipart" in r.content.decode()
    # and names are JSON strings, not numbers turned into strings
    r = api.patch(prefs_url(project), {"expand": [0]}, format="json")
    assert r.status_code == 400 and "expand.0" in r.json()["errors"]
