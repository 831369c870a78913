"""The compare page through Django's test client: the page state read from the URL, legend labels
from the differing config fields, the config diff, grouping options, the entropy-collapse warning
and the evaluations (page data and GET /api/compare/evaluations/)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from webapp.datasets.models import Dataset
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Evaluation, Run
from webapp.ui.compare_views import config_diff, run_labels

pytestmark = pytest.mark.django_db


def make(project, user, name, config, **fields) -> Run:
    return Run.objects.create(
        project=project, name=name, kind="external", config=config, created_by=user, **fields
    )


def log(run, key, values):
    steps = np.arange(len(values))
    metrics_record(run.id, {key: Columns.of(steps, values, 1.7e9 + 10.0 * steps)})


@pytest.fixture
def seeds(alice, project):
    base = {"lr": 1e-6, "optim": {"name": "adam", "beta": 0.9}, "data": {"name": "gsm8k"}}
    runs = [make(project, alice, f"seed-{s}", {**base, "seed": s}, group="g") for s in range(3)]
    for i, run in enumerate(runs):
        log(run, "train/loss", np.linspace(1.0, 0.1 * (i + 1), 50))
        log(run, "tokens", np.arange(50) * 1000.0)
    return runs


def page_data(html: str) -> dict:
    m = re.search(r'<script id="compare-data" type="application/json">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def get(client, runs, **params) -> str:
    response = client.get("/compare/", {"runs": ",".join(str(r.id) for r in runs), **params})
    assert response.status_code == 200
    return response.content.decode()


def test_state_comes_from_the_url(client_alice, seeds):
    html = get(
        client_alice, seeds, key=["tokens", "train/loss", "nope"], smooth="0.9", x="key", xkey="tokens",
        log="1", group="~seed", band="std", legend="name", all="1", hide=f"{seeds[0].id}",
    )  # fmt: skip
    state = page_data(html)["state"]
    assert state == {
        "keys": ["tokens", "train/loss"],
        "smooth": 0.9,
        "x": "key",
        "xkey": "tokens",
        "log": True,
        "logx": False,
        "group": "~seed",
        "band": "std",
        "legend": "name",
        "all": True,
        "evals": "both",
        "hide": [seeds[0].id],
    }
    # the controls show it without JS
    assert '<option value="key:tokens" selected>' in html
    assert 'value="0.9" data-testid="smooth"' in html
    assert '<option value="~seed" selected>' in html and '<option value="std" selected>' in html
    assert 'id="log-toggle" data-testid="log-toggle" checked' in html
    assert 'class="table compact config-diff show-all"' in html
    charts = re.findall(r'data-testid="compare-chart" data-key="([^"]+)"', html)
    assert charts == ["tokens", "train/loss"]
    # nonsense falls back to the defaults
    state = page_data(get(client_alice, seeds, smooth="nan", x="sideways", xkey="nope", group="bogus"))[
        "state"
    ]
    assert (state["smooth"], state["x"], state["group"]) == (0.6, "step", "")
    state = page_data(get(client_alice, seeds, x="key", xkey="nope"))["state"]
    assert (state["x"], state["xkey"]) == ("step", "")


def test_legend_labels_name_runs_by_the_differing_fields(client_alice, alice, project, seeds):
    data = page_data(get(client_alice, seeds))
    assert [r["label"] for r in data["runs"]] == ["seed=0", "seed=1", "seed=2"]
    assert data["differing"] == ["seed"]
    assert [o["value"] for o in data["group_options"]] == ["@group", "seed", "~seed"]
    other = make(
        project,
        alice,
        "other",
        {"lr": 3e-6, "optim": {"name": "sgd", "beta": 0.9}, "data": {"name": "math"}, "seed": 0},
    )
    runs = [*seeds, other]
    _, differing = config_diff(runs)
    assert differing == ["data.name", "lr", "optim.name", "seed"]
    labels = run_labels(runs, differing)
    # two paths end in "name": they keep their full path; a fourth differing field is elided
    assert labels[other.id] == "data.name=math, lr=3e-06, optim.name=sgd…"
    assert labels[seeds[0].id] == f"data.name=gsm8k, lr=1e-06, optim.name=adam… #{seeds[0].id}"
    same = [make(project, alice, f"same-{i}", {"lr": 1}) for i in range(2)]
    assert run_labels(same, config_diff(same)[1]) == {same[0].id: "same-0", same[1].id: "same-1"}


def test_config_diff_shows_differing_fields_first(client_alice, seeds):
    html = get(client_alice, seeds)
    table = re.search(r'data-testid="config-diff".*?</table>', html, re.S).group(0)
    rows = re.findall(r'<tr class="(differs|same)" data-path="([^"]+)">', table)
    assert rows == [
        ("differs", "seed"),
        ("same", "data.name"),
        ("same", "lr"),
        ("same", "optim.beta"),
        ("same", "optim.name"),
    ]
    seed_row = re.search(r'data-path="seed">(.*?)</tr>', table, re.S).group(1)
    assert re.findall(r'<td class="mono">([^<]*)</td>', seed_row) == ["seed", "0", "1", "2"]
    assert "1 field differs of 5" in html


def test_compare_warns_about_entropy_collapse(client_alice, seeds):
    log(seeds[1], "policy/entropy", np.r_[np.full(5, 1.0), np.full(95, 0.001)])
    log(seeds[2], "policy/entropy", np.linspace(1.0, 0.8, 100))
    html = get(client_alice, seeds)
    assert 'data-testid="collapse-warning"' in html and "Entropy collapse</strong> in 1 run" in html
    flags = re.findall(r'data-collapse-run="(\d+)"', html)
    assert flags == [str(seeds[1].id)]
    data = page_data(html)
    assert data["runs"][1]["collapse"]["flagged"] and data["runs"][1]["collapse"]["step"] == 9
    assert data["runs"][0]["collapse"] is None and data["runs"][2]["collapse"] is None


def test_evaluations_on_the_page_and_through_the_api(client_alice, api, bob_api, alice, project, seeds):
    bench = Dataset.objects.create(project=project, name="aime24", kind="problems", status="ready")
    for step in (100, 200):
        Evaluation.objects.create(
            run=seeds[0], benchmark=bench, step=step, k=8, status="succeeded",
            metrics={"avg@k": step / 1000, "pass@k": step / 500, "note": "text"},
        )  # fmt: skip
    Evaluation.objects.create(run=seeds[1], benchmark=bench, step=100, k=8, status="running")
    # a generated benchmark has no dataset, only a name
    Evaluation.objects.create(
        run=seeds[2], benchmark=None, benchmark_name="arith-gen", step=50, k=4, status="succeeded",
        metrics={"avg@4": 0.5, "pass@1": 0.4, "pass@4": 0.75},
    )  # fmt: skip
    data = page_data(get(client_alice, seeds))
    assert [(e["run"], e["step"], e["benchmark_name"]) for e in data["evaluations"]] == [
        (seeds[0].id, 100, "aime24 v1"),
        (seeds[0].id, 200, "aime24 v1"),
        (seeds[2].id, 50, "arith-gen"),
    ]
    assert data["evaluations"][0]["metrics"] == {"avg@k": 0.1, "pass@k": 0.2}  # numbers only
    ids = ",".join(str(r.id) for r in seeds)
    r = api.get("/api/compare/evaluations/", {"runs": ids})
    assert r.status_code == 200 and r.json()["evaluations"] == data["evaluations"]
    assert bob_api.get("/api/compare/evaluations/", {"runs": ids}).status_code == 404
    assert api.get("/api/compare/evaluations/", {"runs": "x"}).status_code == 400
    assert api.get("/api/compare/evaluations/").status_code == 400


def test_compare_without_metrics_or_runs(client_alice, alice, project):
    run = make(project, alice, "empty", {})
    html = get(client_alice, [run])
    assert 'data-testid="no-keys"' in html and "logged no metrics yet" in html
    assert client_alice.get("/compare/?runs=99999999999999999999999").status_code == 404
    assert "Select runs" in client_alice.get("/compare/").content.decode()


def test_page_names_the_events_api(client_alice, seeds):
    """compare.js asks for alert events (marks on the charts) only through the URL the page names,
    which it names only where the route exists (compare_views.events_api)."""
    assert page_data(get(client_alice, seeds))["events_api"] == "/api/compare/events/"
