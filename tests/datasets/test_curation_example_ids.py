"""The curate page's example recipes name the project's own benchmark and reward checkpoint (issue 16
point 1: the demo's example named dataset 1, the very dataset being curated, and a synthetic run's
checkpoint, and kept 0 of 2,048 pairs). A step with no id to fill is left out and says why."""

import pytest

from tests.datasets.test_curation_service import curate_and_run, make_checkpoint, pair, score, upload
from webapp.datasets.curation import recipes
from webapp.datasets.models import Dataset, PreferencePair

pytestmark = pytest.mark.django_db

ROWS = [pair(f"train prompt {i} about topic {i}") for i in range(6)]
BENCH = [pair("a benchmark prompt nobody trains on")]


def steps_of(examples, name):
    return {s["step"]: s for s in next(e for e in examples if e["name"] == name)["recipe"]["steps"]}


def test_examples_name_the_projects_benchmark_and_scoring_checkpoint(api, project):
    src = upload(api, project, ROWS, name="prefs")
    bench = upload(api, project, BENCH, name="prefs-heldout")
    upload(api, project, [pair("another set")], name="other-prefs")
    rm = make_checkpoint(project)
    score(src, rm, {i: (1.0, 0.0) for i in range(6)})
    body = api.get(f"/api/curation/steps/?dataset={src}").json()
    sky = steps_of(body["examples"], "skywork-style")
    assert sky["contamination"]["benchmark"] == bench != src  # the held-out set, never itself
    assert sky["consistency"]["checkpoint"] == rm.id
    # and the filled recipe keeps the pairs it should (the demo's kept none)
    recipe = next(e for e in body["examples"] if e["name"] == "skywork-style")["recipe"]
    recipe_steps = [s for s in recipe["steps"] if s["step"] not in ("top_slice",)]
    ds = curate_and_run(api, src, recipe_steps)
    assert PreferencePair.objects.filter(dataset=ds, kept=True).count() == 6


def test_a_step_with_nothing_to_name_is_left_out_and_says_why(api, project):
    src = upload(api, project, ROWS, name="prefs")
    body = api.get(f"/api/curation/steps/?dataset={src}").json()
    sky = next(e for e in body["examples"] if e["name"] == "skywork-style")
    names = [s["step"] for s in sky["recipe"]["steps"]]
    assert "contamination" not in names and "consistency" not in names
    assert "no other ready preference dataset" in sky["description"]
    assert "has scored this dataset" in sky["description"]
    for example in body["examples"]:  # what is offered still validates
        recipes.recipe_validate(example["recipe"])
    # a curated version of the dataset is not its benchmark either
    Dataset.objects.filter(pk=upload(api, project, [pair("v2")], name="prefs-v2")).update(parent_id=src)
    sky = steps_of(api.get(f"/api/curation/steps/?dataset={src}").json()["examples"], "skywork-style")
    assert "contamination" not in sky


def test_without_a_dataset_the_placeholders_stay_and_bad_input_is_refused(api, bob_api, project):
    src = upload(api, project, ROWS, name="prefs")
    plain = steps_of(api.get("/api/curation/steps/").json()["examples"], "skywork-style")
    assert plain["contamination"]["benchmark"] == recipes.PLACEHOLDER_ID
    resp = api.get("/api/curation/steps/?dataset=x")
    assert resp.status_code == 400 and "dataset" in resp.json()["errors"]
    assert bob_api.get(f"/api/curation/steps/?dataset={src}").status_code == 404


def test_the_curate_page_offers_the_filled_example(client, alice, api, project):
    client.force_login(alice)
    src = upload(api, project, ROWS, name="prefs")
    bench = upload(api, project, BENCH, name="prefs-heldout")
    page = client.get(f"/datasets/{src}/curate/?example=skywork-style").content.decode()
    assert f"&quot;benchmark&quot;: {bench}" in page or f'"benchmark": {bench}' in page


def test_filled_examples_do_not_ask_to_replace_ids(api, project):
    src = upload(api, project, ROWS, name="prefs")
    upload(api, project, BENCH, name="prefs-heldout")
    for example in api.get(f"/api/curation/steps/?dataset={src}").json()["examples"]:
        assert "your ids" not in example["description"] and "replace its id" not in example["description"]
    placeholders = api.get("/api/curation/steps/").json()["examples"]
    assert any("your ids" in e["description"] for e in placeholders)
