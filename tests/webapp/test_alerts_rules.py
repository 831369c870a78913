"""Health rules fire on real ingest (POST /api/runs/{id}/metrics/ and metric_store.metrics_record on
PostgreSQL): each kind, once per episode, the run filter, mutes, presets on TRL's and verl's names,
stalled through the housekeeping task."""

from __future__ import annotations

import datetime as dt
import time

import numpy as np
import pytest
from django.utils import timezone

from webapp.alerts import engine, services
from webapp.alerts.models import Event, Rule, RunPulse
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    engine.forget()
    yield
    engine.forget()


@pytest.fixture
def run(project, alice):
    return Run.objects.create(
        project=project, name="ext", kind="external", status="running", created_by=alice
    )


def rule(project, alice, **data):
    data.setdefault("name", data["kind"])
    return services.rule_save(project=project, user=alice, data=data)


def post(api, run, key, values, first_step=0):
    points = [{"key": key, "step": first_step + i, "value": v} for i, v in enumerate(values)]
    resp = api.post(f"/api/runs/{run.id}/metrics/", points, format="json")
    assert resp.status_code == 200, resp.json()


def record(run, key, values, first_step=0):
    steps = np.arange(first_step, first_step + len(values))
    metrics_record(run.id, {key: Columns.of(steps, values, np.zeros(len(values)))})


def events(run, **kw):
    return list(Event.objects.filter(run=run, **kw).order_by("step", "id"))


def test_threshold_fires_once_per_episode_through_the_api(api, project, alice, run):
    rule(project, alice, kind="threshold", key="loss", params={"op": ">", "value": 1.0})
    post(api, run, "loss", [0.5, 1.5, 2.0, 3.0])  # episode 1 starts at step 1
    post(api, run, "loss", [4.0, 5.0], first_step=4)  # still in it: no new event
    assert [e.step for e in events(run)] == [1]
    post(api, run, "loss", [0.2, 0.3, 1.7], first_step=6)  # clears, then a second episode at step 8
    got = events(run)
    assert [e.step for e in got] == [1, 8]
    assert got[0].key == "loss" and got[0].value == 1.5 and "loss = 1.5 > 1" in got[0].message


def test_nan_inf_fires_on_a_null_value(api, project, alice, run):
    rule(project, alice, kind="nan_inf", key="loss", severity="critical")
    post(api, run, "loss", [0.1, None, None, 0.3, None])  # null is stored as NaN
    got = events(run)
    assert [e.step for e in got] == [1, 4] and got[0].severity == "critical" and got[0].value is None


def test_zscore_fires_on_a_spike_against_the_runs_own_history(project, alice, run):
    rule(
        project,
        alice,
        kind="zscore",
        key="actor/grad_norm",
        params={"z": 5, "direction": "up", "min_points": 20},
    )
    rng = np.random.default_rng(0)
    record(run, "actor/grad_norm", 1.0 + 0.05 * rng.standard_normal(30))  # history over two batches
    record(run, "actor/grad_norm", 1.0 + 0.05 * rng.standard_normal(30), first_step=30)
    assert not events(run)
    record(run, "actor/grad_norm", [1.0, 9.0, 1.0], first_step=60)
    got = events(run)
    assert [e.step for e in got] == [61] and "z = +" in got[0].message


def test_zscore_needs_min_points_of_history(project, alice, run):
    rule(project, alice, kind="zscore", key="g", params={"z": 3, "min_points": 50})
    record(run, "g", [1.0, 1.1, 0.9, 1.0, 1.05, 100.0])
    assert not events(run)


def test_change_over_a_window(project, alice, run):
    rule(
        project,
        alice,
        kind="change",
        key="reward/mean",
        params={"window": 3, "amount": 0.5, "direction": "down"},
    )
    record(run, "reward/mean", [0.9, 0.9, 0.9, 0.85])
    record(run, "reward/mean", [0.3, 0.2, 0.2, 0.2, 0.2], first_step=4)  # 0.9 -> 0.3 three points later
    got = events(run)
    assert [e.step for e in got] == [4] and "over 3 points" in got[0].message


def test_run_filter_kind_group_tag_and_one_run(project, alice, run):
    other = Run.objects.create(
        project=project, name="b", kind="external", status="running", group="g1", tags=["x"]
    )
    rule(
        project,
        alice,
        kind="threshold",
        key="m",
        name="group",
        params={"op": ">", "value": 0},
        run_group="g1",
    )
    rule(project, alice, kind="threshold", key="m", name="tag", params={"op": ">", "value": 0}, run_tag="x")
    rule(project, alice, kind="threshold", key="m", name="one", params={"op": ">", "value": 0}, run=run)
    rule(
        project, alice, kind="threshold", key="m", name="kind", params={"op": ">", "value": 0}, run_kind="rl"
    )
    record(run, "m", [1.0])
    record(other, "m", [1.0])
    assert [e.rule_name for e in events(run)] == ["one"]
    assert sorted(e.rule_name for e in events(other)) == ["group", "tag"]


def test_mutes_for_a_run_and_for_the_whole_rule_and_until(project, alice, run):
    r = rule(project, alice, kind="threshold", key="m", params={"op": ">", "value": 0})
    services.mute_create(user=alice, rule=r, run=run, until=None)
    record(run, "m", [1.0, -1.0])
    assert not events(run)
    services.mute_delete(rule=r, run=run)
    record(run, "m", [1.0, -1.0], first_step=2)
    assert [e.step for e in events(run)] == [2]
    services.mute_create(user=alice, rule=r, run=None, until=timezone.now() + dt.timedelta(seconds=1))
    record(run, "m", [1.0, -1.0], first_step=4)
    assert len(events(run)) == 1
    time.sleep(1.1)  # the mute expired (nothing told the ingest caches: they compare `until`)
    record(run, "m", [1.0], first_step=6)
    assert [e.step for e in events(run)] == [2, 6]


def test_disabled_and_deleted_rules_stop_firing_and_events_stay(project, alice, run):
    r = rule(project, alice, kind="threshold", key="m", params={"op": ">", "value": 0})
    record(run, "m", [1.0, -1.0])
    services.rule_save(project=project, user=alice, rule=r, data={"enabled": False})
    record(run, "m", [1.0, -1.0], first_step=2)
    assert len(events(run)) == 1
    services.rule_delete(r)
    got = events(run)
    assert len(got) == 1 and got[0].rule_id is None and got[0].rule_name == "threshold"


@pytest.mark.parametrize(
    "preset, key, values",
    [
        ("length_clipping", "completions/clipped_ratio", [0.05, 0.5]),  # TRL
        ("length_clipping", "response_length/clip_ratio", [0.05, 0.5]),  # verl and orlab
        ("zero_variance_groups", "frac_reward_zero_std", [0.1, 0.7]),  # TRL
        ("reward_saturation", "critic/score/mean", [0.5, 0.99]),  # verl
        ("reward_saturation", "train/reward", [0.5, 0.99]),  # TRL through its W&B prefix
        ("kl_blowup", "actor/pg_clipfrac", [0.1, 0.4]),  # verl
        ("logprob_gap", "training/rollout_probs_diff_mean", [0.01, 0.3]),  # verl
        ("logprob_gap", "sampling/sampling_logp_difference/mean", [0.01, 0.3]),  # TRL
    ],
)
def test_presets_match_trl_and_verl_names(project, alice, run, preset, key, values):
    created = services.preset_apply(project=project, user=alice, name=preset)
    assert created and all(r.preset == preset for r in created)
    record(run, key, values)
    got = events(run)
    assert [(e.key, e.step) for e in got] == [(key, 1)], got


def test_grad_norm_preset_on_verl_and_trl_names(project, alice, run):
    services.preset_apply(project=project, user=alice, name="grad_norm_spikes")
    rng = np.random.default_rng(1)
    for key in ("actor/grad_norm", "grad_norm"):
        record(run, key, np.r_[1 + 0.05 * rng.standard_normal(40), 50.0])
    assert sorted((e.key, e.step) for e in events(run)) == [("actor/grad_norm", 40), ("grad_norm", 40)]


def test_zero_variance_preset_sums_orlabs_two_shares(project, alice, run):
    services.preset_apply(project=project, user=alice, name="zero_variance_groups")
    steps = np.arange(3)
    metrics_record(
        run.id,
        {
            "batch/solve_none_ratio": Columns.of(steps, [0.1, 0.3, 0.2], np.zeros(3)),
            "batch/solve_all_ratio": Columns.of(steps, [0.1, 0.3, 0.1], np.zeros(3)),
        },
    )
    got = events(run)
    assert [(e.key, e.step) for e in got] == [("batch/solve_none_ratio+batch/solve_all_ratio", 1)]


def test_entropy_collapse_preset_uses_the_runs_table_rule(project, alice, run):
    services.preset_apply(project=project, user=alice, name="entropy_collapse")
    r = Rule.objects.get(project=project, kind="collapse")
    assert r.key == "@entropy" and r.params["ratio"] == 0.1  # the ORLAB_COLLAPSE_* defaults
    values = np.r_[np.full(10, 1.2), np.full(90, 0.01)]  # falls to ~0 at step 10 of 100
    record(run, "actor/entropy", values[:50])
    record(run, "actor/entropy", values[50:], first_step=50)
    got = events(run)
    assert len(got) == 1 and "entropy collapse" in got[0].message and got[0].key == "actor/entropy"
    record(run, "actor/entropy", np.full(10, 0.01), first_step=100)
    assert len(events(run)) == 1  # one episode


def test_stalled_fires_through_housekeeping_and_rearms(project, alice, run):
    from workers.tasks import housekeeping

    rule(project, alice, kind="stalled", key="", params={"seconds": 60})
    record(run, "m", [1.0])
    assert RunPulse.objects.filter(run=run).exists()
    assert housekeeping()["stalled"] == 0  # logged just now
    RunPulse.objects.filter(run=run).update(last_point_at=timezone.now() - dt.timedelta(seconds=120))
    assert housekeeping()["stalled"] == 1
    assert housekeeping()["stalled"] == 0  # the same silence fires once
    got = events(run)
    assert len(got) == 1 and "no new point" in got[0].message
    engine._pulses.clear()  # a new point (past this process's pulse throttle) re-arms
    record(run, "m", [2.0], first_step=1)
    RunPulse.objects.filter(run=run).update(last_point_at=timezone.now() - dt.timedelta(seconds=90))
    assert housekeeping()["stalled"] == 1


def test_a_project_without_rules_does_no_rule_work(project, run, django_assert_max_num_queries):
    record(run, "m", [1.0])  # warms this process' run cache
    with django_assert_max_num_queries(0):
        engine.evaluate(run.id, {"m": Columns.of([5], [1.0], [0.0])})


@pytest.mark.parametrize(
    "data, field",
    [
        ({"kind": "threshold", "key": "m", "params": {"op": "!=", "value": 1}}, "params.op"),
        ({"kind": "threshold", "key": "m", "params": {"op": ">"}}, "params.value"),
        ({"kind": "threshold", "key": "m", "params": {"op": ">", "value": 1, "oops": 2}}, "params.oops"),
        ({"kind": "zscore", "key": "m", "params": {"z": "high"}}, "params.z"),
        ({"kind": "change", "key": "m", "params": {"amount": 1, "window": 5000}}, "params.window"),
        ({"kind": "threshold", "key": "@nope", "params": {"op": ">", "value": 1}}, "key"),
        ({"kind": "stalled", "key": "m", "params": {"seconds": 5}}, "key"),
        ({"kind": "threshold", "key": "", "params": {"op": ">", "value": 1}}, "key"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(project, alice, data, field):
    with pytest.raises(services.AlertError) as info:
        rule(project, alice, name="x", **data)
    assert field in info.value.field_errors


def test_run_event_markers_contract(project, alice, run):
    from webapp.alerts.markers import run_event_markers

    services.preset_apply(project=project, user=alice, name="zero_variance_groups")
    rule(project, alice, kind="threshold", key="loss", params={"op": ">", "value": 1})
    record(run, "loss", [0.0, 2.0])
    steps = np.arange(2)
    metrics_record(
        run.id,
        {
            "batch/solve_none_ratio": Columns.of(steps, [0.4, 0.4], np.zeros(2)),
            "batch/solve_all_ratio": Columns.of(steps, [0.4, 0.4], np.zeros(2)),
        },
    )
    markers = run_event_markers(run.id)
    assert [(m["kind"], m["step"], m["key"], m["severity"]) for m in markers] == [
        ("event", 1, "loss", "warning"),
        ("event", 0, None, "warning"),  # a sum alias' event: on every chart
    ]
    assert all(isinstance(m["id"], int) and m["label"] for m in markers)
