"""A health rule fires on the points a real Celery worker's sink stores (synthetic trainer, Redis,
PostgreSQL): the rule is evaluated in the worker process, after each flushed batch commits."""

import pytest

from tests.conftest import wait_for
from webapp.alerts import services
from webapp.alerts.models import Event
from webapp.runs.models import Run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_rule_fires_once_on_a_worker_runs_points(worker, api, project, alice):
    # train/lr is constant (1e-6) from step 0: one episode from the first point to the last
    services.rule_save(
        project=project, user=alice,
        data={"name": "lr set", "kind": "threshold", "key": "train/lr", "params": {"op": ">=", "value": 1e-7}},
    )  # fmt: skip
    services.rule_save(
        project=project, user=alice,
        data={"name": "nan loss", "kind": "nan_inf", "key": "train/loss"},
    )  # fmt: skip
    resp = api.post(
        "/api/runs/",
        {"project": project.id, "name": "w", "kind": "synthetic", "config": {"steps": 300, "keys": 4}},
        format="json",
    )
    assert resp.status_code == 201, resp.content
    run_id = resp.json()["id"]
    wait_for(
        lambda: Run.objects.get(pk=run_id).status == "succeeded",
        120,
        message=f"success:\n{worker.log()[-3000:]}",
    )
    events = list(Event.objects.filter(run_id=run_id))
    assert [(e.rule_name, e.key, e.step) for e in events] == [("lr set", "train/lr", 0)]
