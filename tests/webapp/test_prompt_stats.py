"""Issue 14 points 5, 6 and 8 (webapp.selectors.prompts, its pages and API): golden definitions of the
solve matrix (ordering by first-solved step, unsolved / learning / saturated counts, zero-variance share,
bucketing, CSV), a prompt's history (training and evaluation apart) and the distributions (a fully
truncated step reads 100 %, none 0 %; histogram counts sum to the step's samples; the stated bin
edges), on rows stored by the ingest path; access (other teams' runs and prompts are 404s) and bad
parameters (400s naming them)."""

from __future__ import annotations

import csv
import io

import pytest

from webapp.runs import services
from webapp.runs.samples import samples_record

pytestmark = pytest.mark.django_db


def record(run, step: int, groups: dict[str, list], phase: str = "train") -> None:
    """Log one step: ``groups`` maps a prompt to its members, each (verdict, reward, length, truncated)."""
    rows = []
    for g, (prompt, members) in enumerate(groups.items()):
        for m, (verdict, reward, length, truncated) in enumerate(members):
            rows.append(
                {
                    "step": step, "prompt": prompt, "completion": f"{prompt} answer {verdict} {m} at step {step}",
                    "verdict": verdict, "reward": reward, "length": length, "truncated": truncated,
                    "group_index": g, "member_index": m, "phase": phase, "expected_answer": f"ans-{prompt}",
                    "finish_reason": "length" if truncated else "stop",
                }
            )  # fmt: skip
    samples_record(run, rows)


def ok(n: int = 1) -> list:
    return [("correct", 1.0, 10, False)] * n


def bad(n: int = 1) -> list:
    return [("wrong", 0.0, 10, False)] * n


@pytest.fixture
def client_alice(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def client_bob(bob):
    from django.test import Client

    c = Client()
    c.force_login(bob)
    return c


@pytest.fixture
def run(alice, project):
    """Four prompts over steps 0..3 (training) and one evaluation step:

    a: 1/2 at 0, 2/2 at 1 and 2, not sampled at 3      -> first solved 0, saturated from 1
    b: 0/4 at 0 and 1, 1/4 at 2, 0/4 at 3             -> first solved 2, learning from 2 (regressed at 3)
    c: 0/2 at every step                               -> never solved, last
    d: first sampled at 2 (2/2), 2/2 at 3              -> first solved 2 (tie with b: by prompt id)
    """
    run = services.run_create(user=alice, project=project, name="rl", kind="external", config={})
    record(run, 0, {"a": ok() + bad(), "b": bad(4), "c": bad(2)})
    record(run, 1, {"a": ok(2), "b": bad(4), "c": bad(2)})
    record(run, 2, {"a": ok(2), "b": ok() + bad(3), "c": bad(2), "d": ok(2)})
    record(run, 3, {"b": bad(4), "c": bad(2), "d": ok(2)})
    record(run, 2, {"a": ok(3) + bad(), "c": bad(4)}, phase="eval")
    return run


def prompt_ids(run) -> dict[str, int]:
    from webapp.runs.models import RolloutPrompt

    return dict(RolloutPrompt.objects.filter(run=run).values_list("text", "pk"))


def test_matrix_orders_by_first_solved_step_and_counts_prompts_over_time(api, run):
    ids = prompt_ids(run)
    data = api.get(f"/api/runs/{run.id}/prompts/").json()
    assert data["phase"] == "train" and data["steps"] == [0, 1, 2, 3]
    assert [r["prompt"] for r in data["rows"]] == [ids["a"], ids["b"], ids["d"], ids["c"]]
    assert [r["first_solved_step"] for r in data["rows"]] == [0, 2, 2, None]
    assert data["rows"][0]["expected_answer"] == "ans-a" and data["rows"][0]["preview"] == "a"
    assert data["z"] == [
        [0.5, 1.0, 1.0, None],
        [0.0, 0.0, 0.25, 0.0],
        [None, None, 1.0, 1.0],
        [0.0, 0.0, 0.0, 0.0],
    ]
    assert data["n"][1] == [4, 4, 4, 4] and data["n"][2] == [0, 0, 2, 2]
    counts = data["counts"]
    assert counts["unsolved"] == [2, 2, 1, 1]  # b, c; b, c; c; c
    assert counts["learning"] == [1, 0, 1, 1]  # a at 1/2; -; b at 1/4; b regressed to 0/4
    assert counts["saturated"] == [0, 1, 2, 2]  # -; a; a, d; a (latest 2/2 at step 2), d
    assert counts["seen"] == [3, 3, 4, 4]
    # zero variance (all rewards equal): step 0: b (4) and c (2) of 8; 1: all 8; 2: a, c, d (2 each) of 10;
    # 3: all 8
    assert data["zero_variance_share"] == [0.75, 1.0, 0.6, 1.0]
    assert data["rollouts"] == [8, 8, 10, 8]


def test_evaluation_rollouts_are_a_matrix_of_their_own(api, run):
    ids = prompt_ids(run)
    data = api.get(f"/api/runs/{run.id}/prompts/?phase=eval").json()
    assert data["steps"] == [2] and [r["prompt"] for r in data["rows"]] == [ids["a"], ids["c"]]
    assert data["z"] == [[0.75], [0.0]]
    assert data["counts"] == {"unsolved": [1], "learning": [1], "saturated": [0], "seen": [2]}


def test_matrix_buckets_rows_and_columns_for_the_browser(api, run):
    data = api.get(f"/api/runs/{run.id}/prompts/?rows=2&cols=2").json()
    assert data["row_width"] == 2 and data["col_width"] == 2
    assert [(r["rank"], r["count"]) for r in data["rows"]] == [(0, 2), (2, 2)]
    assert data["columns"] == [{"first": 0, "last": 1}, {"first": 2, "last": 3}]
    # a+b over steps 0-1: (1+2+0+0) / (2+2+4+4); over 2-3: (2+1+0) / (2+4+4)
    assert data["z"][0] == [0.25, 0.3] and data["n"][0] == [12, 10]
    # d+c: steps 0-1 only c: 0/4; steps 2-3: (2+2) / (2+2+2+2)
    assert data["z"][1] == [0.0, 0.5]
    # a window of the ordered prompts (what a click on a bucket opens)
    zoom = api.get(f"/api/runs/{run.id}/prompts/?offset=1&limit=2").json()
    assert [r["rank"] for r in zoom["rows"]] == [1, 2] and zoom["row_width"] == 1


def test_an_empty_matrix_and_a_window_past_the_end(api, alice, project, run):
    empty = services.run_create(user=alice, project=project, name="e", kind="external", config={})
    for path in (f"/api/runs/{empty.id}/prompts/", f"/api/runs/{run.id}/prompts/?offset=10&limit=5"):
        data = api.get(path).json()
        assert data["rows"] == [] and data["z"] == [], path
    data = api.get(f"/api/runs/{empty.id}/prompts/").json()
    assert data["prompts_total"] == 0 and data["columns"] == [] and data["counts"]["unsolved"] == []
    assert api.get(f"/api/runs/{empty.id}/prompts/matrix.csv").content == b"prompt_id,first_solved_step\n"
    assert api.get(f"/api/runs/{empty.id}/distributions/").json()["steps"] == []


def test_the_postgresql_readings_match_the_portable_ones(run):
    import numpy as np

    from webapp.selectors import prompts as sel

    for phase in sel.PHASES:
        fast, slow = sel.stat_rows(run.id, phase), sel.stat_rows_portable(run.id, phase)
        order_f, order_s = (
            np.lexsort((fast["step"], fast["prompt"])),
            np.lexsort((slow["step"], slow["prompt"])),
        )
        assert len(fast) and (fast[order_f] == slow[order_s]).all(), phase

        def samples(arrays):  # (step, length, truncated, reward: None for NaN), sorted
            step, length, truncated, reward = (a.tolist() for a in arrays)
            reward = [None if r != r else r for r in reward]
            return sorted(zip(step, length, truncated, reward, strict=True), key=repr)

        fast_s, slow_s = (
            samples(sel.sample_rows(run.id, phase)),
            samples(sel.sample_rows_portable(run.id, phase)),
        )
        assert fast_s and fast_s == slow_s, phase


def test_csv_is_every_prompt_by_every_step_in_matrix_order(api, client_alice, run):
    ids = prompt_ids(run)
    resp = api.get(f"/api/runs/{run.id}/prompts/matrix.csv")
    assert resp.status_code == 200 and resp["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(resp.content.decode())))
    assert rows[0] == ["prompt_id", "first_solved_step", "0", "1", "2", "3"]
    assert rows[1:] == [
        [str(ids["a"]), "0", "0.5", "1", "1", ""],
        [str(ids["b"]), "2", "0", "0", "0.25", "0"],
        [str(ids["d"]), "2", "", "", "1", "1"],
        [str(ids["c"]), "", "0", "0", "0", "0"],
    ]
    page = client_alice.get(f"/runs/{run.id}/prompts/?format=csv")
    assert page.status_code == 200 and page.content == resp.content


def test_prompt_history_keeps_training_and_evaluation_apart(api, client_alice, run):
    ids = prompt_ids(run)
    data = api.get(f"/api/runs/{run.id}/prompts/{ids['a']}/").json()
    assert data["prompt"]["text"] == "a" and data["prompt"]["expected_answer"] == "ans-a"
    assert data["train"]["steps"] == [0, 1, 2] and data["train"]["rate"] == [0.5, 1.0, 1.0]
    assert data["eval"]["steps"] == [2] and data["eval"]["rate"] == [0.75]
    assert data["first_solved"] == {"train": 0, "eval": 2}
    # the page: the diff of a completion at step 0 against one at step 2 (the first correct of each)
    page = client_alice.get(f"/runs/{run.id}/prompts/{ids['a']}/?a=0&b=2")
    html = page.content.decode()
    assert page.status_code == 200 and 'data-testid="diff-summary"' in html
    assert "answer correct 0 at step <del" in html and "<ins" in html
    assert 'data-testid="expected-answer">ans-a<' in html


def test_distributions_golden_definitions(api, alice, project):
    run = services.run_create(user=alice, project=project, name="d", kind="external", config={})
    lengths = {0: [10, 20, 30, 40], 1: [10, 12, 40]}
    record(run, 0, {"p": [("wrong", 0.0, n, True) for n in lengths[0]]})  # every rollout truncated
    record(
        run, 1, {"p": [("correct", 1.0, 10, False), ("wrong", 0.5, 12, False), ("wrong", None, 40, False)]}
    )
    data = api.get(f"/api/runs/{run.id}/distributions/?bins=3").json()
    assert data["steps"] == [0, 1] and data["samples"] == [4, 3]
    assert data["truncation"]["rate"] == [1.0, 0.0]  # fully truncated reads 100 %, none 0 %
    assert data["truncation"]["source"] == ["aggregates", "aggregates"]
    # lengths 10..40 in 3 whole-token bins: width ceil(31 / 3) = 11 -> [10, 21), [21, 32), [32, 43)
    assert data["length"]["edges"] == [10, 21, 32, 43]
    assert data["length"]["counts"] == [[2, 1, 1], [2, 0, 1]]
    assert [sum(c) for c in data["length"]["counts"]] == data["samples"]
    # rewards 0..1 in 3 bins, the last closed: 1.0 is in the last one; a sample with no reward is missing
    assert data["reward"]["edges"] == [0.0, 0.333333, 0.666667, 1.0]
    assert data["reward"]["counts"] == [[4, 0, 0], [0, 1, 1]]
    assert data["reward"]["missing"] == [0, 1]
    assert [sum(c) + m for c, m in zip(data["reward"]["counts"], data["reward"]["missing"], strict=True)] == [
        4,
        3,
    ]
    assert api.get(f"/api/runs/{run.id}/distributions/?phase=eval").json()["steps"] == []


def test_pages_render_and_stay_within_the_project(client_alice, client_bob, api, bob_api, run, bob):
    from django.test import Client

    ids = prompt_ids(run)
    for path in (
        f"/runs/{run.id}/prompts/",
        f"/runs/{run.id}/prompts/{ids['b']}/",
        f"/runs/{run.id}/distributions/",
    ):
        assert client_alice.get(path).status_code == 200, path
        assert client_bob.get(path).status_code == 404, path
    for path in (
        f"/api/runs/{run.id}/prompts/",
        f"/api/runs/{run.id}/prompts/{ids['b']}/",
        f"/api/runs/{run.id}/prompts/matrix.csv",
        f"/api/runs/{run.id}/distributions/",
    ):
        assert bob_api.get(path).status_code == 404, path
    # bob's own run cannot reach alice's prompt through its id
    from webapp.projects.services import project_create

    theirs = services.run_create(
        user=bob, project=project_create(user=bob, name="bob-lab"), name="b", kind="external", config={}
    )
    assert bob_api.get(f"/api/runs/{theirs.id}/prompts/{ids['b']}/").status_code == 404
    assert client_bob.get(f"/runs/{theirs.id}/prompts/{ids['b']}/").status_code == 404
    # out-of-range ids and steps are "not there", not errors
    huge = "9" * 25
    assert client_alice.get(f"/runs/{run.id}/prompts/{huge}/").status_code == 404
    assert (
        client_alice.get(f"/runs/{run.id}/prompts/{ids['b']}/?a={huge}&b=eval:-{huge}&sa=x").status_code
        == 200
    )
    assert client_alice.get(f"/runs/{run.id}/prompts/?phase=x&rows=-1&offset={huge}").status_code == 200
    assert Client().get(f"/runs/{run.id}/prompts/").status_code == 302  # to the login page
    assert Client().get(f"/api/runs/{run.id}/prompts/").status_code in (401, 403)


@pytest.mark.parametrize(
    "path, name",
    [
        ("prompts/?phase=test", "phase"),
        ("prompts/?phase=", "phase"),
        ("prompts/?phase=train&phase=eval", "phase"),
        ("prompts/?rows=0", "rows"),
        ("prompts/?cols=x", "cols"),
        ("prompts/?offset=-1", "offset"),
        ("prompts/matrix.csv?phase=x", "phase"),
        ("distributions/?bins=0", "bins"),
        ("distributions/?bins=201", "bins"),
    ],
)
def test_bad_parameters_are_400s_naming_them(api, run, path, name):
    resp = api.get(f"/api/runs/{run.id}/{path}")
    assert resp.status_code == 400, resp.content
    assert name in resp.json()["errors"]
