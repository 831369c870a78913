"""Retention of rollout samples (webapp.runs.retention, issue 14 point 9): every sample of the last K
steps and a seeded fraction of older groups kept, whole groups; the per-(prompt, step) aggregates
never deleted; client keys outlive deleted rows; per-run override; a pass after ingest."""

from __future__ import annotations

import pytest

from webapp.runs import services
from webapp.runs.models import PromptStepStat, RolloutPrompt, Sample, SampleKeptKey, SampleTokens
from webapp.runs.retention import SamplePolicy, sample_policy_of, samples_retention_apply
from webapp.runs.samples import samples_record

pytestmark = pytest.mark.django_db

STEPS, GROUPS, N = 12, 6, 2


def rows(step):
    return [
        {"step": step, "prompt": f"p{g}", "completion": f"{step}-{g}-{m}", "reward": float(m), "group_index": g,
         "member_index": m, "verdict": "correct" if m else "wrong", "client_key": f"k{step}-{g}-{m}",
         **({"tokens": {"offsets": [0, 1], "logprobs": [-1.0, -2.0]}} if m == 0 else {})}
        for g in range(GROUPS) for m in range(N)
    ]  # fmt: skip


@pytest.fixture
def run(alice, project):
    return services.run_create(user=alice, project=project, name="ext", kind="external", config={})


def stats(run):
    return sorted(
        PromptStepStat.objects.filter(run=run).values_list("prompt_id", "step", "phase", "n", "correct")
    )


def test_keeps_the_last_k_steps_and_whole_groups_of_a_seeded_fraction(run):
    samples_record(run, [r for step in range(STEPS) for r in rows(step)])
    before = stats(run)
    prompts = dict(RolloutPrompt.objects.filter(run=run).values_list("id", "first_solved_step"))
    policy = SamplePolicy(keep_last_steps=4, keep_fraction=0.5, seed=1)
    deleted = samples_retention_apply(run.id, policy)
    assert deleted > 0
    left = Sample.objects.filter(run=run)
    # the last K steps (newest 11: steps 8..11) whole; older steps: whole groups, about half of them
    assert left.filter(step__gte=8).count() == 4 * GROUPS * N
    groups = {}
    for step, g in left.filter(step__lt=8).values_list("step", "group_index"):
        groups[(step, g)] = groups.get((step, g), 0) + 1
    assert set(groups.values()) == {N}
    assert 0.25 < len(groups) / (8 * GROUPS) < 0.75
    assert deleted == (8 * GROUPS - len(groups)) * N
    # their token arrays went with them; aggregates and prompts stay
    assert SampleTokens.objects.filter(sample__run=run).count() == left.count() // N
    assert stats(run) == before
    assert dict(RolloutPrompt.objects.filter(run=run).values_list("id", "first_solved_step")) == prompts
    # the selection is stable: a second pass deletes nothing, a different seed other groups
    assert samples_retention_apply(run.id, policy) == 0
    assert SampleKeptKey.objects.filter(run=run).count() == deleted


def test_client_keys_outlive_deleted_rows(api, run):
    for step in range(STEPS):
        resp = api.post(f"/api/runs/{run.id}/samples/", {"samples": rows(step)}, format="json")
        assert resp.json()["written"] == GROUPS * N
    before = stats(run)
    deleted = samples_retention_apply(run.id, SamplePolicy(keep_last_steps=2, keep_fraction=0.0, seed=0))
    assert deleted == (STEPS - 2) * GROUPS * N
    assert not Sample.objects.filter(run=run, step__lt=STEPS - 2).exists()
    # an offline client re-sends everything: nothing is stored twice, nothing counted twice
    for step in range(STEPS):
        resp = api.post(f"/api/runs/{run.id}/samples/", {"samples": rows(step)}, format="json")
        assert resp.json() == {"received": GROUPS * N, "written": 0, "skipped": GROUPS * N}
    assert stats(run) == before
    assert Sample.objects.filter(run=run).count() == 2 * GROUPS * N


def test_policy_from_settings_and_the_run_config(settings):
    settings.ORLAB_SAMPLE_KEEP_LAST_STEPS = 0
    assert sample_policy_of({}) is None
    settings.ORLAB_SAMPLE_KEEP_LAST_STEPS = 100
    settings.ORLAB_SAMPLE_KEEP_FRACTION = 0.2
    assert sample_policy_of({}) == SamplePolicy(100, 0.2, 0)
    override = {"retention": {"samples_keep_last_steps": 10, "samples_keep_fraction": 0.5, "keep_last": 2}}
    assert sample_policy_of(override) == SamplePolicy(10, 0.5, 0)
    assert sample_policy_of({"retention": {"samples_keep_last_steps": 0}}) is None  # this run keeps all


def test_a_pass_runs_after_ingest_once_the_newest_step_moves_on(
    alice, project, django_capture_on_commit_callbacks
):
    config = {"retention": {"samples_keep_last_steps": 4, "samples_keep_fraction": 0.0}}
    run = services.run_create(user=alice, project=project, name="kept", kind="external", config=config)
    for step in range(STEPS):
        with django_capture_on_commit_callbacks(execute=True):
            samples_record(run, rows(step))
    # stride max(1, 4 // 4) = 1: each new step triggers a pass; steps 0..7 are older than the last 4
    assert sorted(set(Sample.objects.filter(run=run).values_list("step", flat=True))) == [8, 9, 10, 11]
    assert PromptStepStat.objects.filter(run=run).count() == STEPS * GROUPS
    # without a policy nothing is ever deleted
    other = services.run_create(user=alice, project=project, name="all", kind="external", config={})
    for step in range(STEPS):
        with django_capture_on_commit_callbacks(execute=True):
            samples_record(other, rows(step))
    assert Sample.objects.filter(run=other).count() == STEPS * GROUPS * N
