"""The launch form in headless Chromium (issue 16 point 4): the dataset fields pick among the
project's ready datasets of the field's kind (name and version), ``init_from_run`` among its policy
runs with a checkpoint (newest first, kind and step); the JSON box opens with the effective config
(the preset merged with the trainer's defaults) and follows the fields; "changed from the preset"
lists exactly what was edited; the run launched carries the picked ids; a bad pick typed in the
JSON box comes back next to its field. Screenshot: /tmp/orlab-launch-pickers.png."""

from __future__ import annotations

import json

import pytest

from tests.ui.test_browser import login
from trainers.base import get_spec
from webapp.datasets.models import Dataset
from webapp.projects.models import Project
from webapp.runs.models import Checkpoint, Run

PRESET = "tiny-cpu-demo"


def dataset(project, name, kind="problems", version=1, status="ready", rows=10) -> Dataset:
    return Dataset.objects.create(
        project=project, name=name, kind=kind, version=version, status=status, row_count=rows
    )


def policy_run(project, user, name, kind="sft", checkpoint_step=None, **fields) -> Run:
    run = Run.objects.create(project=project, name=name, kind=kind, config={}, created_by=user, **fields)
    if checkpoint_step is not None:
        Checkpoint.objects.create(run=run, step=checkpoint_step, path=f"/ckpt/{run.pk}/{checkpoint_step}")
    return run


@pytest.fixture
def choices(live_server, alice, bob, project):
    """Datasets and runs of alice's project (and one of bob's), made before the browser starts."""
    other = Project.objects.create(name="bob-lab", owner=bob)
    ds = {
        "v1": dataset(project, "gsm8k-train", version=1),
        "v2": dataset(project, "gsm8k-train", version=2, rows=7473),
        "heldout": dataset(project, "gsm8k-test", rows=1319),
        "prefs": dataset(project, "ultrafeedback", kind="preference"),
        "importing": dataset(project, "half-imported", status="importing"),
        "bobs": dataset(other, "bob-problems"),
    }
    runs = {
        "rl_old": policy_run(project, alice, "rl-old", kind="rl", checkpoint_step=10, status="succeeded"),
        "no_ckpt": policy_run(project, alice, "sft-no-checkpoint", status="succeeded"),
        "external": policy_run(project, alice, "logged-elsewhere", kind="external", checkpoint_step=5),
        "sft": policy_run(project, alice, "sft-warm-start", checkpoint_step=40, status="succeeded"),
    }
    gone = policy_run(project, alice, "sft-retention-removed", checkpoint_step=3, status="succeeded")
    Checkpoint.objects.filter(run=gone).update(deleted_at=gone.created_at)
    Checkpoint.objects.create(run=runs["sft"], step=20, path="/ckpt/older")
    spec = get_spec("rl")
    effective = {name: spec.validate(spec.presets[name]).model_dump(mode="json") for name in spec.presets}
    return ds, runs, effective


def _labels(page, name: str) -> list[str]:
    return page.eval_on_selector_all(f'select[name="{name}"] option', "els => els.map(e => e.textContent)")


def _diff(page) -> dict[str, tuple[str, str]]:
    rows = page.eval_on_selector_all(
        '[data-testid="config-diff-row"]',
        "els => els.map(e => [...e.children].map(td => td.textContent))",
    )
    return {key: (was, now) for key, was, now in rows}


@pytest.mark.slow
def test_pickers_prefilled_editor_and_diff_then_launch(live_server, project, choices, browser):
    ds, runs, presets = choices
    effective = presets[PRESET]
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(30_000)
    login(page, live_server.url, f"/projects/{project.pk}/launch/?kind=rl&preset={PRESET}")

    # the JSON box holds what would run: the preset merged with the trainer's defaults
    assert json.loads(page.input_value('[data-testid="config-json"]')) == effective
    assert page.is_visible('[data-testid="config-diff-empty"]')
    assert not page.is_visible('[data-testid="config-diff-row"]')
    # another preset: the box becomes its effective config, the diff compares with it (nothing yet)
    box_json = lambda: json.loads(page.input_value('[data-testid="config-json"]'))  # noqa: E731
    page.select_option('[data-testid="preset-select"]', "tiny-cpu-demo-no-aec")
    page.wait_for_function(
        "() => JSON.parse(document.querySelector('[data-testid=config-json]').value).entropy.adaptive === false"
    )
    assert box_json() == presets["tiny-cpu-demo-no-aec"]
    assert _diff(page) == {} and "tiny-cpu-demo-no-aec" in page.text_content("#config-diff h2")
    page.fill('[name="config.entropy.target"]', "0.3")
    was = presets["tiny-cpu-demo-no-aec"]["entropy"]["target"]
    assert _diff(page) == {"entropy.target": (json.dumps(was), "0.3")}
    page.select_option('[data-testid="preset-select"]', PRESET)  # back: the fields are the preset's again
    page.wait_for_function(
        "() => JSON.parse(document.querySelector('[data-testid=config-json]').value).entropy.adaptive === true"
    )
    assert box_json() == effective and _diff(page) == {}

    # dataset fields: this project's ready problem sets, by name and version (ids in the labels)
    train = "config.train_dataset"
    assert _labels(page, train) == [
        "(none)",
        f"gsm8k-test v1 · problems · 1,319 rows · #{ds['heldout'].id}",
        f"gsm8k-train v2 · problems · 7,473 rows · #{ds['v2'].id}",
        f"gsm8k-train v1 · problems · 10 rows · #{ds['v1'].id}",
    ]
    assert page.input_value(f'select[name="{train}"]') == "(none)"
    # init_from_run: policy runs with a live checkpoint, newest first, with kind and newest step
    assert _labels(page, "config.init_from_run") == [
        "(none: the model above)",
        f"sft-warm-start · sft · succeeded · checkpoint at step 40 · #{runs['sft'].id}",
        f"rl-old · rl · succeeded · checkpoint at step 10 · #{runs['rl_old'].id}",
    ]

    # pick, edit a number: the box follows the fields and the diff lists exactly those keys
    page.select_option(f'select[name="{train}"]', label=_labels(page, train)[2])
    page.select_option('select[name="config.eval_dataset"]', label=_labels(page, "config.eval_dataset")[1])
    page.select_option('select[name="config.init_from_run"]', label=_labels(page, "config.init_from_run")[1])
    page.fill('[name="config.steps"]', "12")
    page.locator('[name="config.steps"]').dispatch_event("change")
    box = json.loads(page.input_value('[data-testid="config-json"]'))
    assert (box["train_dataset"], box["eval_dataset"], box["init_from_run"], box["steps"]) == (
        ds["v2"].id, ds["heldout"].id, runs["sft"].id, 12,
    )  # fmt: skip
    assert _diff(page) == {
        "eval_dataset": ("null", str(ds["heldout"].id)),
        "init_from_run": ("null", str(runs["sft"].id)),
        "steps": ("40", "12"),
        "train_dataset": ("null", str(ds["v2"].id)),
    }
    page.locator("#config-diff").scroll_into_view_if_needed()
    page.screenshot(path="/tmp/orlab-launch-pickers.png", full_page=True)

    # an edit in the JSON box shows in the diff too, and a bad id there comes back next to its field
    edited = {**box, "train_dataset": ds["importing"].id}
    page.click("#advanced summary")
    page.fill('[data-testid="config-json"]', json.dumps(edited))
    assert _diff(page)["train_dataset"] == ("null", str(ds["importing"].id))
    page.select_option("#f-queue", "cpu")  # no worker reported: accepted unchecked
    page.click('[data-testid="launch-submit"]')
    page.wait_for_selector('[data-testid="error-summary"]')
    message = page.text_content('[data-field="config.train_dataset"] .error')
    assert message == "dataset half-imported v1 is importing, not ready"

    # cleared box: the fields are the config again, and the run carries the picked ids
    page.click("#clear-json")
    page.select_option(f'select[name="{train}"]', label=_labels(page, train)[2])
    page.select_option('select[name="config.init_from_run"]', label=_labels(page, "config.init_from_run")[1])
    page.click('[data-testid="launch-submit"]')
    page.wait_for_url("**/runs/*/")
    run = Run.objects.filter(project=project, kind="rl").latest("id")
    assert run.config["train_dataset"] == ds["v2"].id and run.config["init_from_run"] == runs["sft"].id
    assert run.config["steps"] == 12 and run.config["eval_dataset"] == ds["heldout"].id
    assert run.status == "queued"  # its parent has a checkpoint: nothing to wait for
    assert not errors, errors
