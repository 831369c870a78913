"""The launch form's pickers and pre-filled JSON box, server side (Django test client): pickers
typed to the field's dataset kind and scoped to the project, a cloned config's id the list lacks
kept as a choice, the pre-filled box left as it was is not an edit (the fields are the config), an
edited box is, and a picked label posts the id."""

from __future__ import annotations

import json
import re

import pytest

from tests.ui.test_launch_browser import dataset, policy_run
from trainers.base import get_spec
from webapp.projects.models import Project
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


def options(html: str, name: str) -> list[str]:
    select = re.search(rf'<select[^>]*name="{re.escape(name)}"[^>]*>(.*?)</select>', html, re.S).group(1)
    return re.findall(r"<option[^>]*>([^<]*)</option>", select)


def box(html: str) -> tuple[str, str]:
    import html as h

    text = re.search(r'data-testid="config-json">(.*?)</textarea>', html, re.S).group(1)
    base = re.search(r'name="config_json_base" id="f-config-json-base" value="([^"]*)"', html).group(1)
    return h.unescape(text), h.unescape(base)


def test_reward_pickers_list_preference_sets_of_this_project_only(client_alice, project, bob):
    mine = dataset(project, "ultrafeedback", kind="preference", version=3)
    dataset(project, "gsm8k", kind="problems")
    dataset(Project.objects.create(name="other", owner=bob), "bobs-prefs", kind="preference")
    html = client_alice.get(f"/projects/{project.pk}/launch/?kind=reward").content.decode()
    label = f"ultrafeedback v3 · preference · 10 rows · #{mine.id}"
    assert options(html, "config.train_dataset") == ["— choose —", label]  # required: no "(none)"
    assert options(html, "config.eval_dataset") == ["(none)", label]
    assert "config.init_from_run" not in html  # a reward model starts from a base model only


def test_box_is_prefilled_and_only_an_edit_overrides_the_fields(client_alice, project, alice):
    url = f"/projects/{project.pk}/launch/?kind=rl&preset=tiny-cpu-demo"
    html = client_alice.get(url).content.decode()
    text, base = box(html)
    spec = get_spec("rl")
    assert json.loads(text) == spec.validate(spec.presets["tiny-cpu-demo"]).model_dump(mode="json")
    assert text == base
    # the box as pre-filled + a field edited: the field wins
    post = {
        "kind": "rl",
        "preset": "tiny-cpu-demo",
        "queue": "cpu",
        "config_json": text,
        "config_json_base": base,
    }
    fields = {f"config.{k}": str(v) for k, v in {"steps": 7, "seed": 3, "model_path": "tiny"}.items()}
    r = client_alice.post(f"/projects/{project.pk}/launch/", {**post, **fields})
    assert r.status_code == 302, r.content.decode()[:2000]
    assert Run.objects.get().config["steps"] == 7
    # an edited box is the config (the fields are ignored)
    edited = json.dumps({**json.loads(text), "steps": 9})
    r = client_alice.post(f"/projects/{project.pk}/launch/", {**post, **fields, "config_json": edited})
    assert r.status_code == 302 and Run.objects.latest("id").config["steps"] == 9


def test_a_picked_label_posts_its_id_and_an_unknown_one_is_a_field_error(client_alice, project, alice):
    ds = dataset(project, "gsm8k", kind="problems", version=2)
    parent = policy_run(project, alice, "sft-1", checkpoint_step=5, status="succeeded")
    html = client_alice.get(f"/projects/{project.pk}/launch/?kind=rl&preset=tiny-cpu-demo").content.decode()
    train, init = options(html, "config.train_dataset")[1], options(html, "config.init_from_run")[1]
    post = {"kind": "rl", "preset": "tiny-cpu-demo", "queue": "cpu", "config.model_path": "tiny"}
    r = client_alice.post(
        f"/projects/{project.pk}/launch/",
        {**post, "config.train_dataset": train, "config.init_from_run": init},
    )
    assert r.status_code == 302, r.content.decode()[:2000]
    run = Run.objects.get(kind="rl")
    assert (run.config["train_dataset"], run.config["init_from_run"]) == (ds.id, parent.id)
    r = client_alice.post(f"/projects/{project.pk}/launch/", {**post, "config.train_dataset": "gsm8k v9"})
    html = r.content.decode()
    assert r.status_code == 200 and 'data-testid="error-summary"' in html
    assert re.search(
        r'data-field="config.train_dataset".*?must be the id of a dataset in this project', html, re.S
    )


def test_a_clone_keeps_an_id_the_pickers_lack(client_alice, project, alice):
    source = Run.objects.create(
        project=project, name="old", kind="rl", created_by=alice,
        config={**get_spec("rl").presets["tiny-cpu-demo"], "train_dataset": 987654},
    )  # fmt: skip
    html = client_alice.get(f"/projects/{project.pk}/launch/?clone={source.pk}").content.decode()
    labels = options(html, "config.train_dataset")
    assert labels[-1] == "987654 (not among the choices of this project)"
    assert re.search(r'<option value="987654 \(not among[^"]*" selected>', html)
    text, base = box(html)
    assert json.loads(text)["train_dataset"] == 987654 and text == base
