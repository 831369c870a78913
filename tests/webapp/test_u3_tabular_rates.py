"""Issue 16 point 9: the theory-rate checks on a tabular run's page. The web app's fits
(webapp/runs/tabular_rates.py) must give the numbers trainers/tabular/rates.py gives on the same logged
gap (the web app may not import the trainer module, so the arithmetic is repeated there)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from trainers.base import MemorySink
from trainers.tabular import rates
from trainers.tabular.config import TabularConfig
from trainers.tabular.train import train
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Run
from webapp.runs.tabular_rates import tabular_rates

pytestmark = pytest.mark.django_db

GARNET = {"kind": "garnet", "states": 10, "actions": 3, "branching": 3, "seed": 0, "gamma": 0.9}


def tabular_run(project, config: dict, gap) -> Run:
    run = Run.objects.create(
        project=project, name=config["method"], kind="tabular", status="succeeded", config=config
    )
    steps = np.arange(len(gap))
    metrics_record(run.pk, {"gap": Columns.of(steps, gap, np.full(len(gap), time.time()))})
    return run


def trained(project, tmp_path, **fields) -> tuple[Run, np.ndarray]:
    config = {"mdp": GARNET, **fields}
    sink = MemorySink(workdir=tmp_path / fields["method"])
    train(TabularConfig.model_validate(config), sink)
    gap = np.array(sink.series("gap"))
    return tabular_run(project, config, gap), gap


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"method": "softmax_npg", "step_size": 1.0, "iterations": 300}, "linear"),
        ({"method": "softmax_pg", "step_size": 1.0, "iterations": 3000}, "sublinear"),
        ({"method": "soft_pi", "tau": 0.1, "iterations": 12}, "quadratic"),
    ],
)
def test_the_page_fits_equal_the_trainer_fits_and_agree_with_the_theory(project, tmp_path, fields, expected):
    run, e = trained(project, tmp_path, **fields)
    got = tabular_rates(run)
    assert got["expected"] == expected and got["agrees"] is True, got
    last = len(e) - 1
    assert got["linear_rate"] == pytest.approx(rates.linear_rate(e, floor=1e-12), rel=1e-9)
    start = math.ceil(last / 2)
    if np.all(e[start:] > 1e-12):  # the trainer's fit takes the whole window; the page's leaves out the floor
        assert got["loglog_slope"] == pytest.approx(rates.loglog_slope(e, start, last + 1), rel=1e-9)
    else:
        above = np.flatnonzero(e > 1e-12)
        above = above[above >= start]
        if len(above) < 2:  # converged before the second half: no slope to show
            assert got["loglog_slope"] is None
        else:
            k = above.astype(float)
            assert got["loglog_slope"] == pytest.approx(
                np.polyfit(np.log(k), np.log(e[above]), 1)[0], rel=1e-9
            )
    try:
        order = rates.convergence_order(e, floor=1e-13, pairs=2)
    except ValueError:
        order = None
    assert got["order"] == (pytest.approx(order, rel=1e-9) if order is not None else None)
    assert (got["first_step"], got["last_step"], got["points"]) == (0, last, last + 1)


def test_a_gap_that_contradicts_the_theory_is_said_to(project):
    # soft_pi should converge quadratically; a gap halving each step is linear (order 1)
    run = tabular_run(project, {"method": "soft_pi", "tau": 0.1, "mdp": GARNET}, 0.5 ** np.arange(30))
    got = tabular_rates(run)
    assert got["order"] == pytest.approx(1.0, abs=1e-9) and got["agrees"] is False
    assert got["linear_rate"] == pytest.approx(0.5, rel=1e-9)


def test_the_run_page_shows_the_rates_for_tabular_runs_only(client, alice, project, tmp_path):
    client.force_login(alice)
    run, _ = trained(project, tmp_path, method="soft_pi", tau=0.1, iterations=12)
    html = client.get(f"/runs/{run.pk}/").content.decode()
    assert 'data-testid="rates-section"' in html and 'data-testid="rates-verdict">agrees' in html
    assert "locally quadratic" in html
    other = Run.objects.create(project=project, name="s", kind="synthetic", status="succeeded", config={})
    metrics_record(other.pk, {"gap": Columns.of([0, 1], [1.0, 0.5], [time.time()] * 2)})
    assert 'data-testid="rates-section"' not in client.get(f"/runs/{other.pk}/").content.decode()
    empty = Run.objects.create(
        project=project, name="e", kind="tabular", status="queued", config={"method": "soft_pi"}
    )
    assert 'data-testid="rates-section"' not in client.get(f"/runs/{empty.pk}/").content.decode()
