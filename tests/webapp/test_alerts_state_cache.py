"""Rule states written behind (webapp.alerts.state_cache): a batch's z-score moments reach their
row within about a second without another batch (the quiet-process flusher), and two processes
adding points to one run merge exactly (Chan's formula in the upsert), the second one a real
Python process that ingests and exits (its exit flush)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import _test_database_url, wait_for
from webapp.alerts import engine, services, state_cache
from webapp.alerts.models import Event, RuleState
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)  # the flusher thread and the child read commits

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _fresh_cache():
    engine.forget()
    yield
    engine.forget()


def _batch(first: int, values) -> dict:
    steps = np.arange(first, first + len(values))
    return {"m": Columns.of(steps, values, np.zeros(len(values)))}


def _moments(values):
    v = np.asarray(values, dtype=float)
    return len(v), float(v.mean()), float(((v - v.mean()) ** 2).sum())


def _row(rule_id, run_id):
    return (
        RuleState.objects.filter(rule_id=rule_id, run_id=run_id, key="m")
        .values_list("n", "mean", "m2")
        .first()
    )


def test_combine_is_exact_in_any_order():
    rng = np.random.default_rng(1)
    a, b, c = rng.normal(3, 2, 50), rng.normal(-1, 5, 7), rng.normal(0, 1, 1)
    left = state_cache.combine(*state_cache.combine(*_moments(a), *_moments(b)), *_moments(c))
    right = state_cache.combine(*_moments(c), *state_cache.combine(*_moments(b), *_moments(a)))
    expected = _moments(np.r_[a, b, c])
    assert left[0] == right[0] == expected[0]
    assert np.allclose(left[1:], expected[1:]) and np.allclose(right[1:], expected[1:])


def test_moments_reach_the_row_behind_the_batch_and_two_processes_merge(project, alice):
    run = Run.objects.create(project=project, name="ext", kind="external", status="running", created_by=alice)
    rule = services.rule_save(
        project=project,
        user=alice,
        data={"name": "z", "kind": "zscore", "key": "m", "params": {"z": 50, "min_points": 5}},
    )
    rng = np.random.default_rng(7)
    first, second, third = rng.normal(0, 1, 100), rng.normal(0.5, 2, 60), rng.normal(-1, 1, 40)

    metrics_record(run.id, _batch(0, first))
    # no flush on the request path yet (the last one is < 1 s old) and no other batch: the idle
    # flusher writes it
    row = wait_for(lambda: _row(rule.id, run.id), timeout=15, message="the state row")
    assert row[0] == 100 and np.allclose(row[1:], _moments(first)[1:])

    # another process adds points to the same run (it reads the row, ingests, exits: its exit flush)
    code = (
        "import django, numpy as np; django.setup();"
        "from webapp.runs.metric_store import Columns, metrics_record;"
        f"v = np.array({second.tolist()!r});"
        f"metrics_record({run.id}, {{'m': Columns.of(np.arange(100, 160), v, np.zeros(60))}})"
    )
    env = dict(os.environ, DATABASE_URL=_test_database_url(), DJANGO_SETTINGS_MODULE="webapp.settings")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=120)
    assert _row(rule.id, run.id)[0] == 160

    # this process still holds its older copy (n = 100): its next points merge, none lost or doubled
    metrics_record(run.id, _batch(160, third))
    state_cache.flush()
    n, mean, m2 = _row(rule.id, run.id)
    expected = _moments(np.r_[first, second, third])
    assert n == expected[0] == 200
    assert np.allclose((mean, m2), expected[1:])
    assert not Event.objects.filter(run=run).exists()  # z >= 50: nothing fired, only the moments moved
