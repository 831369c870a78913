"""The runs table's layout and best-per-group parameters (Django test client): ``show`` (the column
chooser: which columns, in which order; kept by saved views and links), ``best``/``best_dir``/
``best_only`` on the page and on GET /api/runs/table/ (a bad column or direction is a 400 naming it)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.ui.test_runs_table import log, make, page

pytestmark = pytest.mark.django_db


@pytest.fixture
def groups(alice, project):
    """Groups a (3 runs) and b (2 runs) and one run without a group; reward ends at `final`."""
    spec = [("a", 0.3), ("a", 0.9), ("a", 0.5), ("b", 0.2), ("b", 0.4), ("", 0.7)]
    runs = []
    for i, (group, final) in enumerate(spec):
        run = make(project, alice, f"r{i}", {"lr": 10.0**-i, "tag": f"t{i}"}, group=group)
        log(run, "reward", np.linspace(0.0, final, 20))
        runs.append(run)
    return runs


def heads(html: str) -> list[str]:
    return re.findall(r'<th[^>]*data-col="([^"]+)"', html)


def test_show_picks_and_orders_columns_and_links_keep_it(client_alice, project, groups):
    params = {
        "col": ["config:lr", "metric:reward:last"],
        "show": ["metric:reward:last", "status", "config:lr"],
    }
    html = page(client_alice, project, params)
    assert heads(html) == ["metric:reward:last", "status", "config:lr"]
    row = re.search(rf'data-run-id="{groups[1].id}".*?</tr>', html, re.S).group(0)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
    assert cells[2].strip() == "0.9" and "status-" in cells[3] and cells[4] == "0.1"
    # sort links and the saved-view query carry the layout
    assert "show=metric%3Areward%3Alast&amp;show=status&amp;show=config%3Alr" in html
    assert re.search(r'name="query" value="[^"]*show=status', html)
    # a bad id is ignored on the page with a notice, a 400 naming ``show`` in the API
    html = page(client_alice, project, {"show": ["status", "metric:reward"]})
    assert heads(html) == ["status"] and "show: metric:reward:" in html


def test_best_per_group_is_marked_or_alone(client_alice, project, groups, api):
    params = {"col": "metric:reward:last", "best": "metric:reward:last"}
    html = page(client_alice, project, params)
    marked = re.findall(r'data-run-id="(\d+)" data-best="1"', html)
    assert sorted(map(int, marked)) == sorted([groups[1].id, groups[4].id, groups[5].id])
    assert "3 groups ranked" in html
    html = page(client_alice, project, {**params, "best_dir": "min", "best_only": "true"})
    shown = re.findall(r'data-run-id="(\d+)"', html)
    assert sorted(map(int, shown)) == sorted([groups[0].id, groups[3].id, groups[5].id])
    # a config column ranks too (numbers only)
    r = api.get("/api/runs/table/", {"project": project.pk, "best": "config:lr", "best_only": "1"})
    assert r.status_code == 200, r.content
    assert sorted(x["id"] for x in r.json()["results"]) == sorted([groups[0].id, groups[3].id, groups[5].id])


def test_api_best_marks_runs_and_refuses_bad_parameters(api, project, groups):
    r = api.get("/api/runs/table/", {"project": project.pk, "best": "metric:reward:max", "best_dir": "max"})
    assert r.status_code == 200
    body = r.json()
    best = {x["id"] for x in body["results"] if x["best_in_group"]}
    assert best == {groups[1].id, groups[4].id, groups[5].id}
    assert body["best"] == {"column": "metric:reward:max", "direction": "max", "only": False}
    r = api.get("/api/runs/table/", {"project": project.pk})
    assert "best_in_group" not in r.json()["results"][0] and "best" not in r.json()
    for params, field in (
        ({"best": "metric:reward"}, "best"),
        ({"best": "reward"}, "best"),
        ({"best": "metric:reward:last", "best_dir": "up"}, "best_dir"),
        ({"show": "nonsense"}, "show"),
    ):
        r = api.get("/api/runs/table/", {"project": project.pk, **params})
        assert r.status_code == 400, (params, r.content)
        assert field in r.json()["errors"], r.json()


def test_best_is_scoped_to_the_users_runs(bob_api, project, groups):
    r = bob_api.get("/api/runs/table/", {"best": "metric:reward:last", "best_only": "true"})
    assert r.status_code == 200 and r.json()["results"] == []


def test_a_column_added_under_a_layout_shows(client_alice, project, groups):
    url = f"/projects/{project.pk}/"
    r = client_alice.get(url, {"col": "config:lr", "show": ["config:lr", "status"], "add_col_key": "reward"})
    assert r["Location"] == (
        f"{url}?col=config%3Alr&show=config%3Alr&show=status&col=metric%3Areward%3Alast"
        "&show=metric%3Areward%3Alast"
    )
    html = page(client_alice, project, {"col": "config:lr", "show": ["config:lr", "status"], "group": "a"})
    assert re.search(r'data-testid="clear-filters"', html)
    clear = re.search(r'href="([^"]*)" class="muted" data-testid="clear-filters"', html).group(1)
    assert clear == "?col=config%3Alr&amp;show=config%3Alr&amp;show=status&amp;"
