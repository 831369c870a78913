"""Issue 11 (7-10): what the API refuses and what it no longer reveals. Each bad input is a 400 naming
the field (never a 500, never stored); results go only into external runs; lists carry configs only
when asked; project names are per owner and other teams' objects look like missing ones."""

from __future__ import annotations

import json

import pytest

from webapp.projects.models import Project
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


def create(api, project, config, **over):
    body = {"project": project.id, "name": "ext", "kind": "external", "config": config} | over
    return api.post("/api/runs/", body, format="json")


def post_raw(api, url: str, text: str, content_type: str = "application/json"):
    return api.generic("POST", url, text.encode("utf-8"), content_type=content_type)


def errors_of(resp) -> dict:
    assert resp.status_code == 400, (resp.status_code, resp.content[:300])
    return resp.json()["errors"]


# --- item 8: JSON that cannot be stored faithfully ---------------------------------------------------


def test_integers_beyond_2_53_are_refused_and_the_list_still_answers(api, project):
    assert "config.seed" in errors_of(create(api, project, {"seed": 2**70}))
    assert "config.n" in errors_of(create(api, project, {"n": -(2**53) - 1}))
    assert create(api, project, {"n": 2**53}).status_code == 201  # the bound itself is fine
    run = Run.objects.get()
    resp = api.post(
        f"/api/runs/{run.id}/finish/", {"status": "succeeded", "summary": {"x": 10**30}}, format="json"
    )
    assert "summary.x" in errors_of(resp)
    assert api.get("/api/runs/?fields=config").status_code == 200


def test_a_stored_integer_beyond_64_bits_never_breaks_a_read(api, project):
    """Seen under schemathesis: one external run held an integer beyond 64 bits, and every read of its
    project's runs was a 500 (orjson cannot encode it). Whatever wrote it, reads now answer, with the
    number as a string."""
    run = Run.objects.get(pk=create(api, project, {}).json()["id"])
    Run.objects.filter(pk=run.pk).update(summary={"x": 10**30, "deep": [{"y": -(2**70)}], "ok": 2**60})
    for url in ("/api/runs/", f"/api/runs/{run.id}/", f"/api/runs/?project={project.id}"):
        resp = api.get(url)
        assert resp.status_code == 200, (url, resp.content[:200])
    summary = api.get(f"/api/runs/{run.id}/").json()["summary"]
    assert summary == {"x": str(10**30), "deep": [{"y": str(-(2**70))}], "ok": 2**60}


def test_nul_and_lone_surrogates_are_refused_naming_the_field(api, project):
    assert "tags[0]" in errors_of(create(api, project, {}, tags=["a\x00b"]))
    # json.dumps escapes a lone surrogate as \ud800: valid JSON syntax, not encodable UTF-8
    body = json.dumps({"project": project.id, "kind": "external", "config": {"note": "x\ud800"}})
    assert "config.note" in errors_of(post_raw(api, "/api/runs/", body))
    body = json.dumps({"project": project.id, "kind": "external", "config": {"k\udfff": 1}})
    assert errors_of(post_raw(api, "/api/runs/", body))
    assert Run.objects.count() == 0


def test_deep_nesting_is_a_400_not_a_recursion_error(api, project):
    deep = "[" * 5000 + "]" * 5000
    body = f'{{"project": {project.id}, "kind": "external", "config": {{"a": {deep}}}}}'
    assert errors_of(post_raw(api, "/api/runs/", body))
    nested: dict = {}
    for _ in range(70):
        nested = {"a": nested}
    assert errors_of(create(api, project, nested))
    ok: dict = {}
    for _ in range(20):
        ok = {"a": ok}
    assert create(api, project, ok).status_code == 201


def test_configs_over_256_kb_are_refused(api, project):
    assert "config" in errors_of(create(api, project, {"blob": "x" * 300_000}))
    assert create(api, project, {"blob": "x" * 200_000}).status_code == 201


def test_parser_errors_are_400s(api, project):
    resp = post_raw(api, "/api/runs/", '{"project": 1,')
    assert resp.status_code == 400 and "JSON parse error" in resp.json()["detail"]
    assert post_raw(api, "/api/runs/", '{"project": NaN}').status_code == 400
    assert post_raw(api, "/api/runs/", "\xff\xfe not utf-8").status_code == 400
    assert "content_type" in errors_of(post_raw(api, "/api/runs/", "project=1", content_type="text/plain"))


def test_ids_steps_and_counts_are_bounded(api, project):
    body = {"project": 2**53 + 1, "kind": "external"}
    assert "project" in errors_of(api.post("/api/runs/", body, format="json"))
    run = Run.objects.create(project=project, name="e", kind="external", status="running")
    sample = {"step": 2**62 + 1, "prompt": "p", "completion": "c"}
    assert errors_of(api.post(f"/api/runs/{run.id}/samples/", {"samples": [sample]}, format="json"))
    sample = {"step": 1, "prompt": "p", "completion": "c", "length": 2**40}
    assert "samples.0.length" in errors_of(
        api.post(f"/api/runs/{run.id}/samples/", {"samples": [sample]}, format="json")
    )
    ev = {"step": 1, "benchmark": "b", "metrics": {"avg@1": 0.5}, "protocol": {"k": 2**40}}
    assert "protocol" in errors_of(api.post(f"/api/runs/{run.id}/evaluations/", ev, format="json"))
    assert api.get("/api/runs/?project=99999999999999999999999").status_code in (200, 400)


# --- item 7: results only into external runs ---------------------------------------------------------


def test_worker_runs_refuse_results_with_a_409(api, project):
    worker_run = Run.objects.create(project=project, name="w", kind="tabular", status="running", queue="cpu")
    external = Run.objects.create(project=project, name="e", kind="external", status="running")
    writes = {
        "metrics": [{"key": "loss", "step": 0, "value": 1.0}],
        "samples": {"samples": [{"step": 0, "prompt": "p", "completion": "c"}]},
        "evaluations": {"step": 0, "benchmark": "b", "metrics": {"avg@1": 0.5}},
    }
    for path, body in writes.items():
        resp = api.post(f"/api/runs/{worker_run.id}/{path}/", body, format="json")
        assert resp.status_code == 409, (path, resp.content)
        assert "external" in resp.json()["errors"]["run"][0]
        assert api.post(f"/api/runs/{external.id}/{path}/", body, format="json").status_code in (200, 201)
    assert not worker_run.samples.exists() and not worker_run.evaluations.exists()
    assert api.get(f"/api/runs/{worker_run.id}/metrics/").json() == {}


# --- item 9: configs only when asked -----------------------------------------------------------------


def test_lists_carry_configs_only_with_fields_config(api, project):
    assert create(api, project, {"marker": "config-value-xyz"}).status_code == 201
    for url in ("/api/runs/", "/api/runs/table/"):
        row = api.get(url).json()["results"][0]
        assert "config" not in row, url
        row = api.get(url + "?fields=config").json()["results"][0]
        assert row["config"] == {"marker": "config-value-xyz"}, url
        assert "fields" in errors_of(api.get(url + "?fields=traceback"))
    run_id = Run.objects.get().id
    assert api.get(f"/api/runs/{run_id}/").json()["config"]["marker"] == "config-value-xyz"


def test_the_html_runs_table_never_embeds_configs(client, alice, project):
    config = {"m": "zz-secret-zz", "blob": {"k": "y" * 50_000}}
    Run.objects.create(project=project, name="r", kind="external", status="running", config=config)
    client.force_login(alice)
    html = client.get(f"/projects/{project.id}/").content.decode()
    assert 'data-testid="runs-table"' in html and "zz-secret-zz" not in html
    # a config column shows a shortened value, not the sub-tree
    html = client.get(f"/projects/{project.id}/?col=config:blob").content.decode()
    assert "yyyyyyyyyy" in html and "y" * 300 not in html
    fields = client.get(f"/api/runs/fields/?project={project.id}").json()
    assert "blob.k" in fields["config"]


# --- item 10: names per owner; nothing about other teams ---------------------------------------------


def test_project_names_are_unique_per_owner_only(api, bob_api, project):
    resp = bob_api.post("/api/projects/", {"name": project.name}, format="json")
    assert resp.status_code == 201, resp.content  # alice's name tells bob nothing
    again = api.post("/api/projects/", {"name": project.name}, format="json")
    assert "name" in errors_of(again)
    assert Project.objects.filter(name=project.name).count() == 2


def test_other_teams_objects_answer_like_missing_ones(api, bob_api, project):
    run = Run.objects.create(project=project, name="e", kind="external", status="running")
    missing = max(run.id, project.id) + 1000
    for url in ("/api/runs/{}/", "/api/runs/{}/samples/", "/api/projects/{}/", "/api/compare/?runs={}"):
        theirs, nothing = (
            bob_api.get(url.format(run.id if "runs" in url else project.id)),
            bob_api.get(url.format(missing)),
        )
        assert theirs.status_code == nothing.status_code == 404, url
    for url in ("/api/runs/?project={}", "/api/datasets/?project={}"):
        theirs, nothing = bob_api.get(url.format(project.id)), bob_api.get(url.format(missing))
        assert theirs.status_code == nothing.status_code == 200, url
        assert theirs.json()["count"] == nothing.json()["count"] == 0


def test_the_schema_documents_400_404_and_409(api):
    paths = api.get("/api/schema/?format=json").json()["paths"]
    run_metrics = paths["/api/runs/{id}/metrics/"]
    assert {"400", "404", "409"} <= set(run_metrics["post"]["responses"])
    assert {"400", "404"} <= set(paths["/api/runs/{id}/"]["get"]["responses"])
    assert "400" in paths["/api/runs/"]["post"]["responses"]


def test_clones_keep_the_name_and_config_limits(api, project):
    """Found by schemathesis' stateful phase: cloning a run with a 200-character name was a 500."""
    source = create(api, project, {"blob": "x" * 200_000}, name="n" * 200).json()
    resp = api.post(f"/api/runs/{source['id']}/clone/", {}, format="json")
    assert resp.status_code == 201, resp.content
    assert len(resp.json()["name"]) <= 200 and resp.json()["name"].endswith("(clone)")
    resp = api.post(f"/api/runs/{source['id']}/clone/", {"config": {"more": "y" * 100_000}}, format="json")
    assert "config" in errors_of(resp)  # the merged config is over 256 KB


def test_unmatched_api_urls_answer_the_json_404(api, client, alice):
    resp = api.get("/api/runs/-1/")
    assert resp.status_code == 404 and resp["Content-Type"] == "application/json"
    assert resp.json()["detail"] == "not found"
    client.force_login(alice)
    page = client.get("/no-such-page/")
    assert page.status_code == 404 and "text/html" in page["Content-Type"]


def test_form_encoded_json_fields_have_the_same_limits(api, project):
    """A config sent as a form field is parsed by the API too: deep nesting was a RecursionError."""
    deep = "[" * 5000 + "]" * 5000
    for config in (deep, '{"n": 100000000000000000000}', '{"a": "x\\u0000"}'):
        body = {"project": project.id, "kind": "external", "config": config}
        assert "config" in errors_of(api.post("/api/runs/", body, format="multipart"))
    body = {"project": project.id, "kind": "external", "config": '{"lr": 0.1}'}
    assert api.post("/api/runs/", body, format="multipart").status_code == 201


def test_a_bad_page_size_is_a_400_not_the_default_page(api, project):
    """Found by schemathesis (negative_data_rejection): DRF answered 200 with 50 runs to page_size=null."""
    for raw in ("null", "0", "-3", "1e3", "\u00e9"):
        assert "page_size" in errors_of(api.get("/api/runs/", {"page_size": raw})), raw
    assert api.get("/api/runs/?page_size=100000").status_code == 200  # capped at 1,000


def test_schema_violations_found_by_schemathesis_are_400s(api, project):
    """Requests the schema calls invalid were answered 200/201: a number where a string is due, a page
    that is empty or given twice, an empty ?fields=, a boolean parameter set to 0.05."""
    run_id = create(api, project, {}).json()["id"]
    assert "name" in errors_of(api.post(f"/api/runs/{run_id}/clone/", {"name": 222141}, format="json"))
    assert "name" in errors_of(create(api, project, {}, name=12))
    # a name padded past 200 characters with whitespace-like \x1c: DRF trimmed it, then measured (201)
    padded = post_raw(
        api,
        f"/api/runs/{run_id}/clone/",
        "name=" + "x" * 150 + "%1C" * 100,
        "application/x-www-form-urlencoded",
    )
    assert "name" in padded.json()["errors"], padded.content
    for query in ("page=", "page=0", "page=1&page=2", "page_size=5&page_size=6"):
        assert list(errors_of(api.get(f"/api/projects/?{query}"))) == [query.split("=")[0]], query
    assert api.get("/api/projects/?page=1&page_size=5").status_code == 200
    assert "fields" in errors_of(api.get("/api/runs/?fields="))
    assert "with_wall" in errors_of(api.get(f"/api/runs/{run_id}/metrics/?with_wall=0.05"))
    assert api.get(f"/api/runs/{run_id}/metrics/?with_wall=true").status_code == 200


def test_bodies_that_are_not_forms_and_empty_choices_are_400s(api, project):
    """More that schemathesis' negative_data_rejection found accepted: a multipart body with content
    but no part (a non-object body sent as multipart) and an urlencoded body that is not name=value
    pairs were read as an empty form (201 where every field is optional); an empty ?kind= or ?status=
    on the datasets list was no filter (200) where the schema lists the values."""
    run_id = create(api, project, {}).json()["id"]
    url = f"/api/runs/{run_id}/clone/"
    multipart = f"multipart/form-data; boundary={'b' * 32}"
    for body in ("[1, 2]", "'text'", "{'name': 'x'}"):
        resp = post_raw(api, url, f"--{'b' * 32}\r\n{body}--{'b' * 32}--\r\n", multipart)
        assert resp.status_code == 400 and "no form field" in resp.json()["detail"], resp.content
        resp = post_raw(api, url, body, "application/x-www-form-urlencoded")
        assert resp.status_code == 400 and "name=value" in resp.json()["detail"], resp.content
    # an empty form and real forms still are forms
    assert post_raw(api, url, f"--{'b' * 32}--\r\n", multipart).status_code == 201
    assert api.post(url, {"name": "copy"}).status_code == 201  # the test client's multipart
    assert post_raw(api, url, "name=copy2&x=", "application/x-www-form-urlencoded").status_code == 201
    for name in ("kind", "status", "project"):
        assert name in errors_of(api.get(f"/api/datasets/?{name}=")), name
        assert name in errors_of(api.get(f"/api/datasets/?{name}=1&{name}=2")), name
    assert api.get("/api/datasets/?name=").status_code == 200  # an empty string is a string
    assert api.get("/api/datasets/?kind=preference&status=ready").status_code == 200


def test_integer_query_parameters_are_one_integer_when_given(api, project):
    """schemathesis' stateful phase found ?max_points given as a list and ?project= empty answered 200
    (the first value taken, or the filter dropped) where the schema says one integer."""
    run_id = create(api, project, {}).json()["id"]
    url = f"/api/runs/{run_id}/metrics/"
    for query in ("max_points=5&max_points=6", "since_step=", "since_step=1&since_step=2", "max_points=M"):
        assert list(errors_of(api.get(f"{url}?{query}"))) == [query.split("=")[0]], query
    assert api.get(f"{url}?max_points=5&since_step=-1").status_code == 200
    for query in ("project=", f"project={project.id}&project={project.id}"):
        assert list(errors_of(api.get(f"/api/views/?{query}"))) == ["project"], query
    assert api.get(f"/api/views/?project={project.id}").status_code == 200


def test_api_query_parameters_are_given_once_unless_repeatable(api, project):
    """A string parameter given several times was read as its last value (200): schemathesis counts a
    list where the schema says one value as a violation accepted. Only ``col`` repeats."""
    for query in ("tag=a&tag=b", "q=x&q=y", "status=running&status=failed"):
        assert list(errors_of(api.get(f"/api/runs/?{query}"))) == [query.split("=")[0]], query
    assert api.get("/api/runs/?tag=a").status_code == 200
    resp = api.get(f"/api/runs/table/?project={project.id}&col=config:a&col=config:b")
    assert resp.status_code == 200, resp.content[:300]


@pytest.mark.django_db
def test_a_project_name_must_be_a_string(api):
    # schemathesis's stateful phase: a number as the name was stored as its text (201)
    resp = api.post("/api/projects/", {"name": 12345, "description": 7}, format="json")
    assert resp.status_code == 400 and {"name", "description"} <= set(resp.json()["errors"])
    assert api.post("/api/projects/", {"name": "ok"}, format="json").status_code == 201
