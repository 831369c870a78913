"""The HTML pages through Django's test client: access control, the schema-driven launch form,
run actions, the runs list and the compare page."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.conftest import NPG_CONFIG
from webapp.projects.services import project_add_member, project_create
from webapp.runs import services
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Checkpoint, Run

pytestmark = pytest.mark.django_db

GARNET_POST = {
    "kind": "tabular",
    "name": "npg run",
    "config.method": "softmax_npg",
    "config.step_size": "1.0",
    "config.tau": "0.1",
    "config.iterations": "50",
    "config.renormalize": "on",
    "config.checkpoint_every": "0",
    "config.mdp:variant": "garnet",
    "config.mdp.kind": "garnet",
    "config.mdp.states": "10",
    "config.mdp.actions": "3",
    "config.mdp.branching": "2",
    "config.mdp.seed": "0",
    "config.mdp.gamma": "0.9",
}


def make_run(project, user, name="r", **fields) -> Run:
    run = services.run_create(user=user, project=project, name=name, kind="tabular", config=NPG_CONFIG)
    if fields:
        Run.objects.filter(pk=run.pk).update(**fields)
        run.refresh_from_db()
    return run


def log_points(run, key, steps, values):
    metrics_record(run.id, {key: Columns.of(steps, values, [0.0] * len(steps))})


def field_errors(html: str, name: str) -> list[str]:
    """The error messages rendered inside the .field wrapper of input ``name``."""
    m = re.search(rf'<div class="field[^"]*" data-field="{re.escape(name)}">(.*?)</div>', html, re.S)
    assert m, f"no field {name} in the page"
    return re.findall(r'<p class="error"[^>]*>(.*?)</p>', m.group(1), re.S)


# --- access -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["/", "/projects/1/", "/projects/1/launch/", "/runs/1/", "/compare/?runs=1", "/runs/1/cancel/"],
)
def test_every_page_redirects_anonymous_users_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


def test_login_form_logs_in_and_logout_is_a_post(client, alice, project):
    page = client.get("/login/")
    assert page.status_code == 200 and b'name="username"' in page.content
    bad = client.post("/login/", {"username": "alice", "password": "nope"})
    assert bad.status_code == 200 and b"didn't match" in bad.content
    response = client.post("/login/", {"username": "alice", "password": "pw-alice", "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    home = client.get("/")
    assert b"alice-lab" in home.content
    assert re.search(rb'<form method="post" action="/logout/"', home.content)
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_non_member_gets_404_everywhere(client_bob, alice, project):
    run = make_run(project, alice)
    for url in [
        f"/projects/{project.pk}/",
        f"/projects/{project.pk}/launch/",
        f"/runs/{run.pk}/",
        f"/compare/?runs={run.pk}",
        f"/projects/{project.pk}/launch/?clone={run.pk}",
    ]:
        assert client_bob.get(url).status_code == 404, url
    for action in ("cancel", "resume", "clone"):
        assert client_bob.post(f"/runs/{run.pk}/{action}/").status_code == 404
    assert client_bob.post(f"/projects/{project.pk}/launch/", GARNET_POST).status_code == 404
    assert Run.objects.count() == 1
    assert b"alice-lab" not in client_bob.get("/").content


def test_member_sees_a_shared_project(client_bob, alice, bob, project):
    project_add_member(project=project, user=bob)
    run = make_run(project, alice)
    assert client_bob.get(f"/runs/{run.pk}/").status_code == 200


def test_csrf_is_enforced_on_every_form(alice, project):
    run = make_run(project, alice)
    c = Client(enforce_csrf_checks=True)
    c.force_login(alice)
    assert c.post(f"/projects/{project.pk}/launch/", GARNET_POST).status_code == 403
    assert c.post(f"/runs/{run.pk}/cancel/").status_code == 403
    assert c.post("/", {"name": "x"}).status_code == 403
    assert c.post("/logout/").status_code == 403
    run.refresh_from_db()
    assert run.status == "queued" and Run.objects.count() == 1
    # with the token from the page, the same requests go through
    page = c.get(f"/projects/{project.pk}/launch/")
    token = page.cookies["csrftoken"].value
    response = c.post(f"/projects/{project.pk}/launch/", {**GARNET_POST, "csrfmiddlewaretoken": token})
    assert response.status_code == 302
    assert c.post(f"/runs/{run.pk}/cancel/", {"csrfmiddlewaretoken": token}).status_code == 302
    run.refresh_from_db()
    assert run.status == "cancelled"


def test_plotly_is_served_locally_and_no_page_uses_a_cdn(client_alice, alice, project):
    run = make_run(project, alice)
    html = client_alice.get(f"/runs/{run.pk}/").content.decode()
    assert '<script src="/static/vendor/plotly.min.js">' in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    js = client_alice.get("/static/vendor/plotly.min.js")
    assert js.status_code == 200
    assert b"plotly" in b"".join(js.streaming_content)[:5000].lower()


# --- projects ---------------------------------------------------------------------------------------


def test_projects_list_shows_counts_and_creates_projects(client_alice, alice, bob, project):
    make_run(project, alice, name="older")
    newest = make_run(project, alice, name="newest-run")
    project_create(user=bob, name="bob-lab")
    html = client_alice.get("/").content.decode()
    assert "alice-lab" in html and "bob-lab" not in html
    assert re.search(r'<td class="num">2</td>', html)
    assert f'href="/runs/{newest.pk}/">newest-run</a>' in html
    response = client_alice.post("/", {"name": "second-lab", "description": "more"})
    assert response.status_code == 302
    created = alice.projects.get(name="second-lab")
    assert response["Location"] == f"/projects/{created.pk}/"
    duplicate = client_alice.post("/", {"name": "second-lab"})
    assert duplicate.status_code == 200 and b"already exists" in duplicate.content


# --- launch form ----------------------------------------------------------------------------------


def test_launch_form_is_generated_from_the_schema(client_alice, project):
    html = client_alice.get(f"/projects/{project.pk}/launch/?kind=tabular&preset=").content.decode()
    assert re.search(r'<input type="number" id="[^"]+" name="config.step_size"', html)
    method = re.search(r'<select id="[^"]+" name="config.method">(.*?)</select>', html, re.S)
    assert method and "softmax_npg" in method.group(1) and "projected_pg" in method.group(1)
    assert re.search(r'<input type="checkbox" id="[^"]+" name="config.renormalize" checked>', html)
    # the mdp union: a variant selector and one fieldset per variant with dotted names
    assert 'name="config.mdp:variant"' in html
    for variant in ("explicit", "garnet", "named"):
        assert f'data-variant="{variant}"' in html
    assert 'name="config.mdp.states"' in html and 'name="config.mdp.branching"' in html
    assert re.search(r'<textarea id="[^"]+" name="config.mdp.P" class="json"', html)
    assert re.search(r'<select id="[^"]+" name="config.mdp.name">', html)
    # descriptions are the help texts
    assert "constant step size eta" in html
    # the trainer kinds and presets
    assert re.search(r'<option value="tabular"[^>]*>tabular', html)
    assert '<option value="npg-garnet"' in html


def test_launch_preset_prefills_without_js(client_alice, project):
    html = client_alice.get(
        f"/projects/{project.pk}/launch/?kind=tabular&preset=chain-softmax-pg"
    ).content.decode()
    assert re.search(r'name="config.iterations" value="20000"', html)
    assert re.search(r'<option value="softmax_pg" selected>', html)
    assert re.search(r'<option value="named" selected>named</option>', html)
    # the selected variant is enabled, the others disabled (their inputs are not submitted)
    assert re.search(r'<fieldset class="variant" data-union="config.mdp" data-variant="named">', html)
    assert re.search(r'data-variant="garnet" disabled hidden>', html)
    assert re.search(r'<option value="chain" selected>chain</option>', html)


def test_launch_with_invalid_values_shows_field_errors_and_creates_nothing(client_alice, project):
    data = {**GARNET_POST, "config.step_size": "-1", "config.mdp.gamma": "1.5"}
    response = client_alice.post(f"/projects/{project.pk}/launch/", data)
    assert response.status_code == 200
    html = response.content.decode()
    assert field_errors(html, "config.step_size") == ["Input should be greater than 0"]
    # the garnet variant's gamma carries the error, not the hidden variants' gamma inputs
    assert re.search(
        r'data-variant="garnet">.*?data-field="config.mdp.gamma">.*?<p class="error"[^>]*>Input should be less than 1</p>',
        html,
        re.S,
    )
    summary = re.search(r'data-testid="error-summary".*?</div>', html, re.S).group(0)
    assert "config.step_size" in summary and "config.mdp.gamma" in summary
    # what was typed is kept
    assert 'name="config.step_size" value="-1"' in html
    assert 'name="name" value="npg run"' in html
    assert Run.objects.count() == 0


def test_launch_reports_unparseable_and_missing_values(client_alice, project):
    data = {**GARNET_POST, "config.iterations": "lots", "config.mdp.states": ""}
    html = client_alice.post(f"/projects/{project.pk}/launch/", data).content.decode()
    assert field_errors(html, "config.iterations") == [
        "Input should be a valid integer, unable to parse string as an integer"
    ]
    assert re.search(r'data-field="config.mdp.states">.*?Field required', html, re.S)
    assert Run.objects.count() == 0


def test_valid_launch_creates_a_queued_run_and_redirects(client_alice, alice, project):
    data = {**GARNET_POST, "group": "g1", "tags": "a, b", "queue": ""}
    del data["config.renormalize"]  # an unchecked checkbox is absent
    response = client_alice.post(f"/projects/{project.pk}/launch/", data)
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert run.status == "queued" and run.kind == "tabular" and run.name == "npg run"
    assert run.group == "g1" and run.tags == ["a", "b"] and run.queue == "short" and run.created_by == alice
    assert run.config["mdp"] == {
        "kind": "garnet",
        "states": 10,
        "actions": 3,
        "branching": 2,
        "seed": 0,
        "gamma": 0.9,
    }
    assert run.config["step_size"] == 1.0 and run.config["iterations"] == 50
    assert run.config["renormalize"] is False


def test_launch_named_and_explicit_mdp_variants(client_alice, project):
    base = {k: v for k, v in GARNET_POST.items() if not k.startswith("config.mdp")}
    named = {**base, "config.mdp:variant": "named", "config.mdp.kind": "named", "config.mdp.name": "chain"}
    assert client_alice.post(f"/projects/{project.pk}/launch/", named).status_code == 302
    explicit = {
        **base,
        "config.mdp:variant": "explicit",
        "config.mdp.kind": "explicit",
        "config.mdp.P": "[[[1.0], [1.0]]]",
        "config.mdp.r": "[[0.0, 1.0]]",
        "config.mdp.gamma": "0.5",
        "config.mdp.rho": "",
    }
    assert client_alice.post(f"/projects/{project.pk}/launch/", explicit).status_code == 302
    configs = [r.config["mdp"] for r in Run.objects.order_by("id")]
    assert configs[0] == {"kind": "named", "name": "chain", "gamma": 0.9}
    assert configs[1]["P"] == [[[1.0], [1.0]]] and configs[1]["gamma"] == 0.5 and configs[1]["rho"] is None
    bad = {**explicit, "config.mdp.P": "[[[0.5], [1.0]]]", "config.mdp.r": "[[0.0, 1.0"}
    html = client_alice.post(f"/projects/{project.pk}/launch/", bad).content.decode()
    assert re.search(r'data-field="config.mdp.r">.*?invalid JSON', html, re.S)
    assert re.search(r'data-field="config.mdp.P">.*?sums to 0.5', html, re.S)
    assert Run.objects.count() == 2


def test_advanced_json_takes_precedence(client_alice, project):
    data = {**GARNET_POST, "config.step_size": "-1", "config_json": '{"method": "softmax_pg", "step_size": 2, '
            '"mdp": {"kind": "named", "name": "grid"}}'}  # fmt: skip
    assert client_alice.post(f"/projects/{project.pk}/launch/", data).status_code == 302
    run = Run.objects.get()
    assert run.config["method"] == "softmax_pg" and run.config["step_size"] == 2.0
    assert run.config["mdp"]["name"] == "grid"
    bad = client_alice.post(f"/projects/{project.pk}/launch/", {**GARNET_POST, "config_json": "{oops"})
    assert bad.status_code == 200 and b"invalid JSON" in bad.content and Run.objects.count() == 1


def test_sweep_creates_the_product_of_runs_in_one_group(client_alice, project):
    data = {
        **GARNET_POST,
        "name": "sw",
        "sweep_field_1": "step_size",
        "sweep_values_1": "0.1, 1, 10",
        "sweep_field_2": "mdp.seed",
        "sweep_values_2": "0,1",
    }
    response = client_alice.post(f"/projects/{project.pk}/launch/", data)
    runs = list(Run.objects.order_by("id"))
    assert len(runs) == 6
    group = runs[0].group
    assert group and all(r.group == group for r in runs)
    assert response.status_code == 302
    assert response["Location"].startswith(f"/projects/{project.pk}/?group=")
    combos = {(r.config["step_size"], r.config["mdp"]["seed"]) for r in runs}
    assert combos == {(s, seed) for s in (0.1, 1.0, 10.0) for seed in (0, 1)}
    listing = client_alice.get(response["Location"]).content.decode()
    assert listing.count('data-testid="run-row"') == 6


def test_a_named_sweep_prefills_its_preset_and_grid(client_alice, project):
    page = client_alice.get(f"/projects/{project.pk}/launch/?kind=tabular").content.decode()
    assert 'href="?kind=tabular&amp;sweep=methods-x-step-size"' in page
    html = client_alice.get(
        f"/projects/{project.pk}/launch/?kind=tabular&sweep=methods-x-step-size"
    ).content.decode()
    assert re.search(r'name="config.iterations" value="200"', html)  # its base preset, npg-garnet
    assert (
        re.search(r'<option value="method" selected>', html)
        and 'value="projected_pg, softmax_pg, softmax_npg"' in html
    )
    assert re.search(r'<option value="mdp.seed" selected>', html) and 'value="0, 1, 2"' in html
    assert re.search(r"<details class=\"card\" id=\"sweep\" open", html)  # the sweep section starts open


def test_sweep_with_an_invalid_point_creates_nothing(client_alice, project):
    data = {**GARNET_POST, "sweep_field_1": "step_size", "sweep_values_1": "1, -1"}
    response = client_alice.post(f"/projects/{project.pk}/launch/", data)
    assert response.status_code == 200
    html = response.content.decode()
    assert "step_size=-1.0: Input should be greater than 0" in html
    assert Run.objects.count() == 0
    missing = client_alice.post(f"/projects/{project.pk}/launch/", {**GARNET_POST, "sweep_field_1": "tau"})
    assert b"choose a field and give comma-separated values" in missing.content
    assert Run.objects.count() == 0


def test_clone_prefills_the_launch_form_and_records_the_parent(client_alice, alice, project):
    source = make_run(project, alice, name="orig", group="grp", tags=["x"])
    html = client_alice.get(f"/projects/{project.pk}/launch/?clone={source.pk}").content.decode()
    assert 'name="name" value="orig (clone)"' in html and 'name="group" value="grp"' in html
    assert re.search(r'name="config.iterations" value="50"', html)
    assert re.search(r'<option value="garnet" selected>', html)
    assert f'name="clone" value="{source.pk}"' in html
    data = {**GARNET_POST, "clone": str(source.pk), "config.iterations": "77"}
    response = client_alice.post(f"/projects/{project.pk}/launch/", data)
    clone = Run.objects.exclude(pk=source.pk).get()
    assert response["Location"] == f"/runs/{clone.pk}/"
    assert clone.parent == source and clone.config["iterations"] == 77


# --- run actions ---------------------------------------------------------------------------------


def test_cancel_resume_and_clone_endpoints(client_alice, alice, project):
    run = make_run(project, alice)
    response = client_alice.post(f"/runs/{run.pk}/cancel/")
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    run.refresh_from_db()
    assert run.status == "cancelled"
    # cancelling again is refused by the service: shown as a message, nothing changes
    page = client_alice.post(f"/runs/{run.pk}/cancel/", follow=True)
    assert b"Could not cancel" in page.content
    response = client_alice.post(f"/runs/{run.pk}/resume/")
    run.refresh_from_db()
    assert response.status_code == 302 and run.status == "queued" and run.attempt == 2
    page = client_alice.post(f"/runs/{run.pk}/resume/", follow=True)
    assert b"Could not resume" in page.content
    # a running run is asked to stop
    Run.objects.filter(pk=run.pk).update(
        status="running", heartbeat_at=timezone.now(), started_at=timezone.now()
    )
    client_alice.post(f"/runs/{run.pk}/cancel/")
    run.refresh_from_db()
    assert run.status == "running" and run.cancel_requested
    response = client_alice.post(f"/runs/{run.pk}/clone/")
    clone = Run.objects.exclude(pk=run.pk).get()
    assert response["Location"] == f"/runs/{clone.pk}/"
    assert clone.parent_id == run.pk and clone.status == "queued" and clone.config == run.config
    assert client_alice.get(f"/runs/{run.pk}/cancel/").status_code == 405


def test_run_page_shows_header_buttons_config_and_checkpoints(client_alice, alice, project):
    run = make_run(project, alice, name="page-run", group="g", tags=["t1"])
    html = client_alice.get(f"/runs/{run.pk}/").content.decode()
    assert re.search(r'data-testid="status-badge">queued<', html)
    assert re.search(r'<form method="post" action="/runs/\d+/cancel/" id="cancel-form">', html)
    assert re.search(r'id="resume-form" hidden>', html)
    assert f'href="/projects/{project.pk}/launch/?clone={run.pk}"' in html
    assert "&quot;softmax_npg&quot;" in html  # the config, pretty-printed
    assert 'id="run-data"' in html

    Run.objects.filter(pk=run.pk).update(
        status="failed", error="ValueError: boom", traceback="Traceback (most recent call last):\n  ...",
        started_at=timezone.now() - timedelta(seconds=90), finished_at=timezone.now(),
    )  # fmt: skip
    Checkpoint.objects.create(run=run, step=40, path="/tmp/ckpt-40", metrics={"gap": 0.5})
    log_points(run, "gap", [0, 1, 2], [1.0, 0.5, 0.25])
    html = client_alice.get(f"/runs/{run.pk}/").content.decode()
    assert re.search(r'data-testid="status-badge">failed<', html)
    assert re.search(
        r'<pre class="error-text" id="run-error" data-testid="run-error">ValueError: boom</pre>', html
    )
    assert "Traceback (most recent call last)" in html
    assert re.search(r'id="cancel-form" hidden>', html) and re.search(r'id="resume-form">', html)
    assert "/tmp/ckpt-40" in html and "gap=0.5" in html
    assert "1m 30s" in html
    assert '"keys": ["gap"]' in html and '"log_keys": ["gap", "gap_inf", "dist_to_opt"]' in html


# --- runs list ----------------------------------------------------------------------------------------


def test_runs_list_filters_searches_and_sorts(client_alice, alice, project):
    now = timezone.now()
    a = make_run(project, alice, name="alpha", group="g1", tags=["x"], status="succeeded",
                 started_at=now - timedelta(minutes=10), finished_at=now - timedelta(minutes=9))  # fmt: skip
    b = make_run(project, alice, name="beta", group="g2", tags=["y"], status="failed",
                 started_at=now - timedelta(minutes=5), finished_at=now)  # fmt: skip
    c = make_run(project, alice, name="gamma-run", group="g1", tags=["x", "y"])
    log_points(a, "gap", [0, 1], [1.0, 0.125])
    log_points(a, "entropy", [0, 1], [0.7, 0.6])
    url = f"/projects/{project.pk}/"

    def names(params):
        html = client_alice.get(url, params).content.decode()
        return re.findall(r'data-testid="run-link">([^<]+)</a>', html)

    assert names({}) == ["gamma-run", "beta", "alpha"]  # newest first
    assert names({"status": "failed"}) == ["beta"]
    assert names({"kind": "tabular", "group": "g1"}) == ["gamma-run", "alpha"]
    assert names({"tag": "x"}) == ["gamma-run", "alpha"]
    assert names({"tag": "y", "status": "queued"}) == ["gamma-run"]
    assert names({"q": "ALP"}) == ["alpha"]
    assert names({"kind": "synthetic"}) == []
    assert names({"ordering": "name"}) == ["alpha", "beta", "gamma-run"]
    assert names({"ordering": "-name"}) == ["gamma-run", "beta", "alpha"]
    assert names({"ordering": "-started"}) == ["beta", "alpha", "gamma-run"]  # never started: last
    assert names({"ordering": "-duration"}) == ["beta", "alpha", "gamma-run"]
    assert names({"ordering": "bogus"}) == ["gamma-run", "beta", "alpha"]

    html = client_alice.get(url, {"ordering": "name", "group": "g1"}).content.decode()
    # header links keep the filters and flip the direction of the current column
    assert 'href="?group=g1&amp;ordering=-name"' in html
    # primary metrics columns with last values
    assert re.search(r'<th class="num metric-col">gap</th>\s*<th class="num metric-col">entropy</th>', html)
    assert re.search(r'title="step 1">0.125</td>\s*<td class="num mono" title="step 1">0.6</td>', html)
    assert f'value="{c.pk}" class="run-select"' in html and f'action="{reverse("compare")}"' in html
    assert re.search(r'class="badge status-succeeded"', html)
    assert b.pk


def test_runs_list_paginates_and_stays_fast_with_1000_runs(
    client_alice, alice, project, django_assert_max_num_queries
):
    base = make_run(project, alice, name="seed")
    Run.objects.bulk_create(
        [
            Run(project=project, name=f"run-{i:04d}", kind="tabular", config=base.config, created_by=alice)
            for i in range(999)
        ]
    )
    runs = list(Run.objects.order_by("id")[:200])
    for run in runs:
        log_points(run, "gap", [0, 1], [1.0, 0.5])
    url = f"/projects/{project.pk}/"
    page = client_alice.get(url).content.decode()
    assert page.count('data-testid="run-row"') == 50
    assert "page 1 of 20" in page and "1000 runs" in page
    second = client_alice.get(url, {"page": 2}).content.decode()
    assert second.count('data-testid="run-row"') == 50
    with django_assert_max_num_queries(10):
        import time

        start = time.perf_counter()
        full = client_alice.get(url, {"page_size": 1000})
        elapsed = time.perf_counter() - start
    html = full.content.decode()
    assert html.count('data-testid="run-row"') == 1000
    assert html.count(">0.5</td>") == 200
    assert elapsed < 3.0, f"runs list of 1000 runs took {elapsed:.2f}s"
    capped = client_alice.get(url, {"page_size": 5000}).content.decode()
    assert capped.count('data-testid="run-row"') == 1000


def test_runs_list_marks_lost_runs(client_alice, alice, project):
    run = make_run(project, alice, status="running", heartbeat_at=timezone.now() - timedelta(hours=1))
    html = client_alice.get(f"/projects/{project.pk}/").content.decode()
    assert re.search(r'class="badge status-lost"', html)
    run.refresh_from_db()
    assert run.status == "lost"


# --- compare ----------------------------------------------------------------------------------------


def test_compare_page_lists_the_union_of_keys(client_alice, client_bob, alice, project):
    r1 = make_run(project, alice, name="one")
    r2 = make_run(project, alice, name="two")
    log_points(r1, "gap", [0], [1.0])
    log_points(r2, "gap", [0], [1.0])
    log_points(r2, "zeta", [0], [1.0])
    html = client_alice.get("/compare/", {"runs": f"{r1.pk},{r2.pk}"}).content.decode()
    select = re.search(r'<select name="key" id="key-select".*?</select>', html, re.S).group(0)
    assert re.findall(r'<option value="([^"]+)"', select) == ["gap", "zeta"]
    assert '<option value="gap" selected>' in select  # the kind's first primary metric
    assert '"compare_api": "/api/compare/"' in html and 'data-testid="compare-chart"' in html
    assert "one" in html and "two" in html
    chosen = client_alice.get("/compare/", {"runs": f"{r1.pk},{r2.pk}", "key": "zeta"}).content.decode()
    assert '<option value="zeta" selected>' in chosen
    # the checkbox form of the runs list submits repeated ?runs=
    assert client_alice.get(f"/compare/?runs={r1.pk}&runs={r2.pk}").status_code == 200
    assert client_alice.get("/compare/?runs=abc").status_code == 404
    assert client_alice.get(f"/compare/?runs={r1.pk},999999").status_code == 404
    assert client_bob.get(f"/compare/?runs={r1.pk},{r2.pk}").status_code == 404
    assert client_alice.get("/compare/").status_code == 200


def test_launch_offers_an_integer_or_word_field_as_one_input(client_alice, project):
    """nproc_per_node is `int | "auto"`: one text input with "auto" suggested, not a JSON box, and
    what is typed arrives typed (2 as an integer, auto as the word)."""
    from trainers.rl.config import RLConfig
    from webapp.ui.forms import build_tree, iter_leaves

    html = client_alice.get(f"/projects/{project.pk}/launch/?kind=rl&preset=").content.decode()
    field = re.search(
        r'<input type="text" id="([^"]+)" name="config.nproc_per_node"[^>]*data-scalar="1"[^>]*>', html
    )
    assert field, "nproc_per_node is not a plain input"
    assert re.search(rf'<datalist id="{field.group(1)}-words"><option value="auto">', html)
    assert not re.search(r'<textarea[^>]+name="config.nproc_per_node"', html)
    leaf = next(
        leaf
        for leaf in iter_leaves(build_tree(RLConfig.model_json_schema()))
        if leaf.path == "nproc_per_node"
    )
    assert leaf.convert("2") == 2 and type(leaf.convert("2")) is int
    assert leaf.convert("auto") == "auto" and leaf.convert(" auto ") == "auto"
    assert leaf.convert("two") == "two"  # left as typed: the config's validation names the field


def test_launch_queue_choices_are_the_run_queues(client_alice, project):
    """short, cpu and gpu are offered (tabular runs default to short); housekeeping's control queue
    and the evaluations' eval queue are refused, and nothing is created."""
    from webapp.fleet.services import report_upsert

    report_upsert(
        name="w@h",
        host="h",
        queues=["control", "short", "cpu", "eval"],
        slots=1,
        gpus=[],
        packages={},
        catalogue=[],
    )
    html = client_alice.get(f"/projects/{project.pk}/launch/?kind=tabular&preset=").content.decode()
    assert 'data-queue="short"' in html
    select = re.search(r'<select id="f-queue" name="queue">(.*?)</select>', html, re.S).group(1)
    assert re.findall(r'<option value="(\w+)"', select) == ["short", "cpu", "gpu"]
    assert 'data-queue="control"' not in html and 'data-queue="eval"' not in html  # fleet panel
    html = client_alice.post(
        f"/projects/{project.pk}/launch/", {**GARNET_POST, "queue": "control"}
    ).content.decode()
    assert "must be one of short, cpu, gpu" in html and Run.objects.count() == 0
    assert (
        client_alice.post(f"/projects/{project.pk}/launch/", {**GARNET_POST, "queue": "short"}).status_code
        == 302
    )
    assert Run.objects.get().queue == "short"


def test_launch_form_json_gets_the_api_limits(client_alice, project):
    """A config typed into the form's JSON box meets the same rules as the API's body: integers beyond
    2^53, NUL, deep nesting and oversize configs are field errors, and nothing is created."""
    import json

    base = {k: v for k, v in GARNET_POST.items() if not k.startswith("config.")}
    good = {
        "method": "softmax_npg",
        "step_size": 1.0,
        "iterations": 5,
        "mdp": {"kind": "named", "name": "chain"},
    }
    deep: list = []
    for _ in range(100):
        deep = [deep]
    cases = {
        ("config.iterations", "2^53"): {**good, "iterations": 2**60},
        ("config.note", "NUL"): {**good, "note": "a\x00b"},
        ("config.deep", "nested deeper than 64"): {**good, "deep": deep},
        ("config", "at most 256 KB"): {**good, "blob": "x" * 300_000},
    }
    for (field, reason), config in cases.items():
        html = client_alice.post(
            f"/projects/{project.pk}/launch/", {**base, "config_json": json.dumps(config)}
        ).content.decode()
        summary = re.search(r'data-testid="error-summary".*?</div>', html, re.S)
        assert summary and field in summary.group(0) and reason in summary.group(0), (field, summary)
    assert Run.objects.count() == 0
