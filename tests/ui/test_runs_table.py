"""The runs table page and its API (Django test client): config filters (page and GET
/api/runs/table/), bad filters (400 naming the parameter; a notice on the page), metric and config
columns, sorting by them, saved views, the entropy-collapse flag, and the API token page."""

from __future__ import annotations

import re

import numpy as np
import pytest
from django.urls import reverse

from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Run, SavedView

pytestmark = pytest.mark.django_db


def make(project, user, name, config, **fields) -> Run:
    return Run.objects.create(
        project=project, name=name, kind="external", config=config, created_by=user, **fields
    )


def log(run, key, values):
    steps = np.arange(len(values))
    metrics_record(run.id, {key: Columns.of(steps, values, 1.7e9 + steps)})


@pytest.fixture
def sweep(alice, project):
    """Four runs of a sweep over lr and entropy.target; r3's entropy collapses early."""
    runs = [
        make(project, alice, "r0", {"lr": 1e-6, "entropy": {"target": 0.2}, "seed": 0}, group="sweep"),
        make(
            project,
            alice,
            "r1",
            {"lr": 3e-6, "entropy": {"target": 0.2}, "seed": 1},
            group="sweep",
            tags=["x"],
        ),
        make(project, alice, "r2", {"lr": 1e-5, "entropy": {"target": 0.3}, "seed": 2}, status="failed"),
        make(project, alice, "r3", {"lr": 1e-5, "entropy": {"target": 0.0}, "seed": 3}),
    ]
    for i, run in enumerate(runs):
        log(run, "train/loss", np.linspace(2.0, 0.5 + 0.1 * i, 100))
    healthy = np.linspace(1.2, 0.9, 100)
    collapsed = np.r_[np.full(5, 1.2), np.linspace(1.2, 0.01, 5), np.full(90, 0.01)]
    for run in runs[:3]:
        log(run, "policy/entropy", healthy)
    log(runs[3], "policy/entropy", collapsed)
    return runs


def names(html: str) -> list[str]:
    return re.findall(r'data-testid="run-link">([^<]+)</a>', html)


def page(client, project, params=None) -> str:
    response = client.get(f"/projects/{project.pk}/", params or {})
    assert response.status_code == 200
    return response.content.decode()


def test_page_filters_by_config_values(client_alice, project, sweep):
    assert names(page(client_alice, project, {"config.lr__gt": "1e-6"})) == ["r3", "r2", "r1"]
    assert names(page(client_alice, project, {"config.entropy.target": "0.2"})) == ["r1", "r0"]
    html = page(
        client_alice,
        project,
        {"config.lr__gte": "3e-6", "config.entropy.target__ne": "0.3", "group": "sweep"},
    )
    assert names(html) == ["r1"]
    # the active filters show as removable chips and are kept as hidden inputs of the form
    assert 'data-testid="config-chip">lr ≥ 3e-6' in html
    assert '<input type="hidden" name="config.lr__gte" value="3e-6">' in html
    # a bad operator is reported and ignored, never a server error
    html = page(client_alice, project, {"config.lr__foo": "1", "status": "failed"})
    assert names(html) == ["r2"]
    assert "config.lr__foo: unknown operator &#x27;foo&#x27;" in html and 'data-testid="table-errors"' in html


def test_builder_inputs_redirect_to_canonical_parameters(client_alice, project, sweep):
    url = f"/projects/{project.pk}/"
    r = client_alice.get(url, {"status": "", "cf_path": "lr", "cf_op": "gt", "cf_value": "1e-6"})
    assert r.status_code == 302 and r["Location"] == f"{url}?config.lr__gt=1e-6"
    r = client_alice.get(
        url, {"cf_path": ["lr", "seed", ""], "cf_op": ["lt", "exact", "exact"], "cf_value": ["1e-5", "3", ""]}
    )
    assert r["Location"] == f"{url}?config.lr__lt=1e-5&config.seed=3"
    # adding a column keeps the columns in view
    r = client_alice.get(
        url,
        {
            "col": "config:lr",
            "add_col": "metric",
            "add_col_key": "train/loss",
            "add_col_agg": "mean_last",
            "add_col_n": "10",
        },
    )
    assert r["Location"] == f"{url}?col=config%3Alr&col=metric%3Atrain%2Floss%3Amean_last_10"
    r = client_alice.get(url, {"add_col": "config", "add_col_key": "entropy.target"})
    assert r["Location"] == f"{url}?col=config%3Aentropy.target"  # external runs: no default columns


def test_page_columns_and_sorting(client_alice, project, sweep):
    params = {
        "col": [
            "metric:train/loss:last",
            "metric:train/loss:best_min",
            "metric:train/loss:mean_last_10",
            "config:entropy.target",
        ]
    }
    html = page(client_alice, project, params)
    heads = re.findall(r'data-testid="sort-col">([^<]+)</a>', html)
    assert heads == ["train/loss · last", "train/loss · min", "train/loss · mean last 10", "entropy.target"]
    row = re.search(rf'data-run-id="{sweep[2].id}".*?</tr>', html, re.S).group(0)
    cells = re.findall(r'<td class="(?:num )?mono"[^>]*>([^<]*)</td>', row)
    expected_mean = np.linspace(2.0, 0.7, 100)[-10:].mean()
    assert cells == ["0.7", "0.7", f"{expected_mean:.4g}", "0.3"]
    assert 'title="step 99">0.7</td>' in row
    # sort by a metric column (database) and by a mean column (Python), both directions
    by = lambda o: names(page(client_alice, project, {**params, "ordering": o}))  # noqa: E731
    assert by("metric:train/loss:last") == ["r0", "r1", "r2", "r3"]
    assert by("-metric:train/loss:last") == ["r3", "r2", "r1", "r0"]
    assert by("-metric:train/loss:mean_last_10") == ["r3", "r2", "r1", "r0"]
    assert by("config:entropy.target") == ["r3", "r0", "r1", "r2"]  # ties: by id
    # the header link of the current sort column flips it
    html = page(client_alice, project, {**params, "ordering": "metric:train/loss:last"})
    assert "ordering=-metric%3Atrain%2Floss%3Alast" in html
    # a column can be removed from its header
    assert re.search(r'class="remove-col"', html)


def test_collapse_is_flagged_in_the_table(client_alice, project, sweep):
    html = page(client_alice, project)
    flagged = re.findall(r'data-run-id="(\d+)"[^>]*class="collapsed-run"', html)
    assert flagged == [str(sweep[3].id)]
    assert "1 with entropy collapse" in html
    assert re.search(
        r'data-testid="collapse-flag" title="entropy collapse: policy/entropy fell from 1.2 to 0.\d+ \(below 0.12\) by step 1\d"',
        html,
    )


def test_saved_views_save_list_apply_delete(client_alice, client, alice, bob, project, sweep):
    url = f"/projects/{project.pk}/"
    query = "config.lr__gt=1e-6&col=config%3Alr"
    r = client_alice.post(url, {"action": "save-view", "name": "big lr", "query": query})
    assert r.status_code == 302 and r["Location"] == f"{url}?{query}"
    view = SavedView.objects.get()
    assert (view.name, view.user, view.project, view.query) == ("big lr", alice, project, query)
    html = page(client_alice, project, {"config.lr__gt": "1e-6", "col": "config:lr"})
    assert re.search(
        r'class="chip active"><a href="\?config.lr__gt=1e-6&amp;col=config%3Alr" data-testid="saved-view">big lr</a>',
        html,
    )
    # saving the same name replaces it
    client_alice.post(url, {"action": "save-view", "name": "big lr", "query": "status=failed"})
    assert SavedView.objects.get().query == "status=failed"
    # someone else's view cannot be deleted
    other = SavedView.objects.create(project=project, user=bob, name="bob's", query="")
    client_alice.post(url, {"action": "delete-view", "view": other.pk})
    assert SavedView.objects.filter(pk=other.pk).exists()
    client_alice.post(url, {"action": "delete-view", "view": view.pk})
    assert not SavedView.objects.filter(pk=view.pk).exists()
    assert "bob&#x27;s" not in page(client_alice, project)


def test_table_page_stays_within_its_query_budget(
    client_alice, project, sweep, django_assert_max_num_queries
):
    params = {"col": ["metric:train/loss:last", "config:lr"], "config.lr__gt": "0"}
    page(client_alice, project, params)
    # session, user, project, lost-run sweep, count, rows, series (columns + entropy keys), chunks
    # of the collapse windows (ids), saved views, kinds/groups (the chunk payloads: raw, not counted)
    with django_assert_max_num_queries(10):
        page(client_alice, project, params)


# --- API ---------------------------------------------------------------------------------------------


def test_api_table_filters_columns_and_collapse(api, project, sweep):
    r = api.get(
        "/api/runs/table/",
        {
            "project": project.pk,
            "config.lr__gt": "1e-6",
            "col": ["metric:train/loss:last", "config:entropy.target"],
            "ordering": "-metric:train/loss:last",
        },
    )
    assert r.status_code == 200, r.content
    body = r.json()
    assert [x["name"] for x in body["results"]] == ["r3", "r2", "r1"]
    assert body["count"] == 3
    assert [c["spec"] for c in body["columns"]] == ["metric:train/loss:last", "config:entropy.target"]
    r3 = body["results"][0]
    assert r3["columns"]["metric:train/loss:last"] == {"value": pytest.approx(0.8), "step": 99}
    assert r3["columns"]["config:entropy.target"] == {"value": 0.0}
    assert r3["collapse"]["flagged"] is True and r3["collapse"]["key"] == "policy/entropy"
    assert body["results"][1]["collapse"]["flagged"] is False
    # ids, status lists, search
    r = api.get("/api/runs/table/", {"ids": f"{sweep[0].id},{sweep[2].id}", "status": "failed,queued"})
    assert [x["name"] for x in r.json()["results"]] == ["r2", "r0"]
    r = api.get("/api/runs/table/", {"search": "r1"})
    assert [x["name"] for x in r.json()["results"]] == ["r1"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"config.lr__bogus": "1"}, "config.lr__bogus"),
        ({"config.lr__gt": "true"}, "config.lr__gt"),
        ({"col": "metric:x:median"}, "col"),
        ({"ordering": "nope"}, "ordering"),
        ({"status": "sleeping"}, "status"),
        ({"ids": "1,x"}, "ids"),
        ({"project": "x"}, "project"),
    ],
)
def test_api_table_bad_parameters_answer_400_naming_them(api, project, params, field):
    r = api.get("/api/runs/table/", params)
    assert r.status_code == 400, r.content
    body = r.json()
    assert set(body) == {"detail", "errors"} and field in body["errors"], body


def test_api_table_is_scoped_to_your_projects(api, bob_api, project, sweep):
    assert api.get("/api/runs/table/").json()["count"] == 4
    assert bob_api.get("/api/runs/table/").json()["count"] == 0


def test_api_fields_offer_config_paths_and_metric_keys(api, bob_api, project, sweep):
    r = api.get("/api/runs/fields/", {"project": project.pk})
    assert r.json() == {
        "config": ["entropy.target", "lr", "seed"],
        "metrics": ["policy/entropy", "train/loss"],
    }
    assert bob_api.get("/api/runs/fields/", {"project": project.pk}).status_code == 404
    assert api.get("/api/runs/fields/").status_code == 400


def test_api_saved_views(api, bob_api, project):
    r = api.post(
        "/api/views/", {"project": project.pk, "name": "v1", "query": "?kind=external"}, format="json"
    )
    assert r.status_code == 201 and r.json()["query"] == "kind=external"
    vid = r.json()["id"]
    r = api.post("/api/views/", {"project": project.pk, "name": "v1", "query": "kind=tabular"}, format="json")
    assert r.status_code == 200 and r.json()["id"] == vid and r.json()["query"] == "kind=tabular"
    assert [v["name"] for v in api.get("/api/views/", {"project": project.pk}).json()] == ["v1"]
    assert bob_api.get(f"/api/views/{vid}/").status_code == 404
    assert bob_api.post("/api/views/", {"project": project.pk, "name": "x"}, format="json").status_code == 400
    assert bob_api.delete(f"/api/views/{vid}/").status_code == 404
    assert api.delete(f"/api/views/{vid}/").status_code == 204
    assert api.get("/api/views/").json() == []
    r = api.post("/api/views/", {"project": project.pk, "name": ""}, format="json")
    assert r.status_code == 400 and "name" in r.json()["errors"]


# --- API token page --------------------------------------------------------------------------------


def test_api_token_page_creates_regenerates_and_revokes(client_alice, alice, project):
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    url = reverse("api-token")
    html = client_alice.get(url).content.decode()
    assert 'data-testid="no-token"' in html and 'data-testid="nav-api-token"' in html
    assert client_alice.post(url, {"action": "create"}).status_code == 302
    key = Token.objects.get(user=alice).key
    html = client_alice.get(url).content.decode()
    assert f'value="{key}"' in html and f"Authorization: Token {key}" in html

    def works(k: str) -> bool:
        c = APIClient()
        c.credentials(HTTP_AUTHORIZATION=f"Token {k}")
        return c.get("/api/runs/").status_code == 200

    assert works(key)
    client_alice.post(url, {"action": "regenerate"})
    new = Token.objects.get(user=alice).key
    assert new != key and works(new) and not works(key)
    client_alice.post(url, {"action": "revoke"})
    assert not Token.objects.filter(user=alice).exists() and not works(new)
    assert 'data-testid="no-token"' in client_alice.get(url).content.decode()


def test_api_token_page_needs_login_and_csrf(client, alice):
    from django.test import Client

    assert client.get(reverse("api-token")).status_code == 302
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(alice)
    assert strict.post(reverse("api-token"), {"action": "create"}).status_code == 403
