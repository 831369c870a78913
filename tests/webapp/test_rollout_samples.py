"""The RL sample record (issue 14, webapp.runs.samples): ingest through the API and the worker's sink,
prompts stored once, the per-(prompt, step, phase) aggregates against a recomputation from the rows,
each group's status, idempotency, bad input named by row and field, and older rows (legacy text in
``prompt``, group info in ``extra``) still displayed and migrated."""

from __future__ import annotations

import importlib
import math
import random

import numpy as np
import pytest
from django.apps import apps as django_apps
from django.db.models import Count, F, Max, Min, Q, Sum

from webapp.runs import services
from webapp.runs.models import PromptStepStat, RolloutPrompt, Run, Sample, SampleTokens
from webapp.runs.samples import (
    SampleError,
    decode_tokens,
    group_status,
    prompt_text,
    samples_record,
    stats_remove_after,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(alice, project):
    return services.run_create(user=alice, project=project, name="ext", kind="external", config={})


def post(api, run, samples):
    return api.post(f"/api/runs/{run.id}/samples/", {"samples": samples}, format="json")


def group(step, gi, prompt, rewards, verdicts, **more):
    return [
        {"step": step, "prompt": prompt, "completion": f"c{step}-{gi}-{m}", "reward": r, "verdict": v,
         "group_index": gi, "member_index": m, **more}
        for m, (r, v) in enumerate(zip(rewards, verdicts, strict=True))
    ]  # fmt: skip


def recomputed(run):
    """PromptStepStat as a recomputation from the sample rows."""
    rows = (
        Sample.objects.filter(run=run)
        .values("prompt_ref_id", "step", "phase")
        .annotate(
            n=Count("id"),
            correct=Count("id", filter=Q(verdict="correct")),
            truncated=Count("id", filter=Q(truncated=True)),
            n_rewarded=Count("reward"),
            reward_sum=Sum("reward"),
            reward_sq_sum=Sum(F("reward") * F("reward")),
            reward_min=Min("reward"),
            reward_max=Max("reward"),
        )
    )
    return {
        (r["prompt_ref_id"], r["step"], r["phase"]): (
            r["n"],
            r["correct"],
            r["truncated"],
            r["n_rewarded"],
            round(r["reward_sum"] or 0.0, 9),
            round(r["reward_sq_sum"] or 0.0, 9),
            r["reward_min"],
            r["reward_max"],
        )  # fmt: skip
        for r in rows
    }


def stored(run):
    return {
        (s.prompt_id, s.step, s.phase): (
            s.n,
            s.correct,
            s.truncated,
            s.n_rewarded,
            round(s.reward_sum, 9),
            round(s.reward_sq_sum, 9),
            s.reward_min,
            s.reward_max,
        )  # fmt: skip
        for s in PromptStepStat.objects.filter(run=run)
    }


# --- ingest --------------------------------------------------------------------------------------------


def test_the_api_stores_the_record_with_prompts_once(api, run):
    tokens = {"offsets": [0, 1, 3], "logprobs": [-0.5, None, -2.25], "entropies": [0.1, 1.5, 3.0]}
    rows = group(
        4, 0, "What is 6*7?", [1.0, 0.0], ["correct", "wrong"], expected_answer="42", data_source="gsm8k"
    )
    rows += group(4, 1, "What is 2+2?", [0.5, 0.5], ["correct", "wrong"], phase="eval", checkpoint_step=4)
    rows[0].update(
        finish_reason="stop", rewards={"correct": 1.0, "format": 0.0}, extracted_answer="42", length=3,
        truncated=False, advantage=0.7, tokens=tokens, seed=11, client_key="k0",
    )  # fmt: skip
    rows[1].update(finish_reason="length", truncated=True, attempt=3)
    resp = post(api, run, rows)
    assert resp.status_code == 200, resp.content
    assert resp.json() == {"received": 4, "written": 4, "skipped": 0}

    assert RolloutPrompt.objects.filter(run=run).count() == 2
    first = Sample.objects.get(run=run, client_key="k0")
    assert first.prompt == "" and prompt_text(first) == "What is 6*7?"
    assert first.prompt_ref.expected_answer == "42" and first.prompt_ref.data_source == "gsm8k"
    assert (first.group_index, first.member_index, first.finish_reason, first.extracted_answer) == (
        0,
        0,
        "stop",
        "42",
    )
    assert first.rewards == {"correct": 1.0, "format": 0.0} and first.advantage == 0.7
    assert first.extra == {"seed": 11, "group_status": "kept"}  # unknown keys into extra
    assert first.attempt == run.attempt == 1  # from the run when absent
    assert Sample.objects.get(run=run, step=4, group_index=0, member_index=1).attempt == 3
    arrays = decode_tokens(first.tokens)
    assert arrays["offsets"] == [0, 1, 3] and arrays["logprobs"] == [-0.5, None, -2.25]
    assert arrays["entropies"] == pytest.approx([0.1, 1.5, 3.0], abs=2e-3) and "engine_logprobs" not in arrays
    assert len(bytes(first.tokens.logprobs)) == 6  # float16
    evals = Sample.objects.filter(run=run, phase="eval")
    assert evals.count() == 2 and {s.checkpoint_step for s in evals} == {4}
    assert {s.extra["group_status"] for s in evals} == {"zero_variance"}

    listed = api.get(f"/api/runs/{run.id}/samples/?page_size=10").json()["results"]
    row = next(r for r in listed if r["id"] == first.id)
    assert row["prompt"] == "What is 6*7?" and row["group_index"] == 0 and row["finish_reason"] == "stop"
    assert row["rewards"] == {"correct": 1.0, "format": 0.0} and row["phase"] == "train"

    # the prompt again in a later batch: the same RolloutPrompt
    assert post(api, run, group(5, 0, "What is 6*7?", [1.0], ["correct"])).json()["written"] == 1
    assert RolloutPrompt.objects.filter(run=run).count() == 2


def test_the_aggregates_equal_a_recomputation_from_the_rows(api, run):
    rng = random.Random(5)
    prompts = [f"problem {i}" for i in range(7)]
    batches = []
    for step in range(6):
        rows = []
        for gi in range(4):
            n = rng.choice([2, 4])
            verdicts = [rng.choice(["correct", "wrong", "no_answer"]) for _ in range(n)]
            rewards = [
                None if rng.random() < 0.1 else float(v == "correct") - rng.random() / 10 for v in verdicts
            ]
            phase = "eval" if gi == 3 else "train"
            rows += group(
                step, gi, rng.choice(prompts), rewards, verdicts, phase=phase, truncated=rng.random() < 0.3
            )
        batches.append(rows)
    for rows in batches[:3]:  # through the API, in two requests each
        assert post(api, run, rows[: len(rows) // 2]).status_code == 200
        assert post(api, run, rows[len(rows) // 2 :]).status_code == 200
    samples_record(run, [r for rows in batches[3:] for r in rows])  # one batch, directly
    assert stored(run) == recomputed(run)
    assert Sample.objects.filter(run=run).count() == sum(map(len, batches))
    for prompt in RolloutPrompt.objects.filter(run=run):
        solved = Sample.objects.filter(prompt_ref=prompt, verdict="correct").aggregate(m=Min("step"))["m"]
        assert prompt.first_solved_step == solved
    # a resumed attempt redoing steps 4 and 5: their aggregates go with their samples
    Sample.objects.filter(run=run, step__gt=3).delete()
    stats_remove_after(run.id, 3)
    assert stored(run) == recomputed(run)
    for prompt in RolloutPrompt.objects.filter(run=run):
        solved = Sample.objects.filter(prompt_ref=prompt, verdict="correct").aggregate(m=Min("step"))["m"]
        assert prompt.first_solved_step == solved


@pytest.mark.parametrize(
    ("rewards", "verdicts", "status"),
    [
        ([1.0, 0.0, 1.0], ["correct", "wrong", "correct"], "kept"),
        ([1.2, 1.0], ["correct", "correct"], "kept"),  # all solved, but a length penalty differs
        ([1.0, 1.0], ["correct", "correct"], "solved_all"),
        ([0.0, 0.0, 0.0], ["wrong", "no_answer", "timeout"], "unsolved_all"),
        ([0.5, 0.5], ["correct", "wrong"], "zero_variance"),
        ([0.5, 0.5 + 1e-12], ["correct", ""], "zero_variance"),
        ([None, None], ["correct", "correct"], "solved_all"),
        ([None, None], ["", ""], "kept"),
        ([0.3, None], ["", "wrong"], "zero_variance"),
    ],
)
def test_group_status_rules(rewards, verdicts, status):
    members = [{"reward": r, "verdict": v} for r, v in zip(rewards, verdicts, strict=True)]
    assert group_status(members) == status


def test_group_status_is_derived_across_batches_and_sent_status_wins(run):
    samples_record(run, group(1, 0, "p", [1.0, 1.0], ["correct", "correct"]))
    assert {s.extra["group_status"] for s in Sample.objects.filter(run=run)} == {"solved_all"}
    # two more members of the same group arrive later: every member re-derived
    later = group(1, 0, "p", [0.0, 0.0], ["wrong", "wrong"])
    for m, row in enumerate(later):
        row["member_index"] = m + 2
    samples_record(run, later)
    assert {s.extra["group_status"] for s in Sample.objects.filter(run=run, step=1)} == {"kept"}
    # the column too (what the group-status filter reads), on the members stored before as well
    assert set(Sample.objects.filter(run=run, step=1).values_list("group_status", flat=True)) == {"kept"}
    # the same (step, group_index) in the eval phase is another group
    samples_record(run, group(1, 0, "p", [0.0], ["wrong"], phase="eval"))
    assert Sample.objects.get(run=run, phase="eval").extra["group_status"] == "unsolved_all"
    # a trainer's own reading is stored as sent
    samples_record(run, group(2, 0, "p", [1.0, 0.0], ["correct", "wrong"], group_status="zero_variance"))
    assert {s.extra["group_status"] for s in Sample.objects.filter(run=run, step=2)} == {"zero_variance"}
    assert set(Sample.objects.filter(run=run, step=2).values_list("group_status", flat=True)) == {
        "zero_variance"
    }
    # no group_index: no status
    samples_record(run, [{"step": 3, "prompt": "p", "completion": "c"}])
    assert "group_status" not in Sample.objects.get(run=run, step=3).extra
    assert Sample.objects.get(run=run, step=3).group_status == ""


def test_a_batch_is_idempotent_by_client_key_and_atomic(api, run):
    rows = group(1, 0, "p", [1.0, 0.0], ["correct", "wrong"])
    rows[0]["client_key"], rows[1]["client_key"] = "a", "b"
    assert post(api, run, rows).json() == {"received": 2, "written": 2, "skipped": 0}
    before = stored(run)
    again = rows + [{**rows[0], "client_key": "c"}, {**rows[0], "client_key": "c"}]
    assert post(api, run, again).json() == {"received": 4, "written": 1, "skipped": 3}
    assert stored(run) == recomputed(run) and stored(run) != before
    # one bad row: nothing of the batch is stored
    count = Sample.objects.filter(run=run).count()
    bad = [{**rows[0], "client_key": "d"}, {**rows[0], "client_key": "e", "finish_reason": "eos"}]
    assert post(api, run, bad).status_code == 400
    assert Sample.objects.filter(run=run).count() == count


@pytest.mark.django_db(transaction=True)
def test_concurrent_batches_with_the_same_keys_store_them_once(run):
    """Two clients send the same keyed batch at once: the second's insert waits on the first's
    uncommitted keys, conflicts once it commits, and is retried as skipped."""
    import threading

    from django.db import connection, transaction

    rows = group(1, 0, "p", [1.0, 0.0], ["correct", "wrong"])
    for i, row in enumerate(rows):
        row["client_key"] = f"same-{i}"
    results, first_in, release = {}, threading.Event(), threading.Event()

    def first():
        try:
            with transaction.atomic():
                results["first"] = samples_record(run, rows)
                first_in.set()
                release.wait(30)
        finally:
            connection.close()

    def second():
        try:
            first_in.wait(30)
            results["second"] = samples_record(run, rows)
        finally:
            connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    first_in.wait(30)
    threading.Event().wait(0.5)  # let the second reach its insert (either way it must store nothing)
    release.set()
    for t in threads:
        t.join(60)
    assert results == {"first": 2, "second": 0}
    assert Sample.objects.filter(run=run).count() == 2 and stored(run) == recomputed(run)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"finish_reason": "eos"}, "samples.1.finish_reason"),
        ({"reward": "high"}, "samples.1.reward"),
        ({"reward": True}, "samples.1.reward"),
        ({"group_index": -1}, "samples.1.group_index"),
        ({"member_index": 1.5}, "samples.1.member_index"),
        ({"phase": "test"}, "samples.1.phase"),
        ({"rewards": {"correct": "yes"}}, "samples.1.rewards.correct"),
        ({"rewards": [1.0]}, "samples.1.rewards"),
        ({"truncated": "no"}, "samples.1.truncated"),
        ({"group_status": "filtered"}, "samples.1.group_status"),
        ({"completion": 5}, "samples.1.completion"),
        ({"extra": []}, "samples.1.extra"),
        ({"data_source": "x" * 101}, "samples.1.data_source"),
        ({"tokens": {"offsets": [0, 1], "logprobs": [-1.0]}}, "samples.1.tokens.logprobs"),
        ({"tokens": {"offsets": [0, 99]}}, "samples.1.tokens.offsets"),
        ({"tokens": {"offsets": [1, 0]}}, "samples.1.tokens.offsets"),
        ({"tokens": {"logprobs": [-1.0]}}, "samples.1.tokens.offsets"),
        ({"tokens": {"offsets": [0], "surprise": [1.0]}}, "samples.1.tokens.surprise"),
        ({"step": "3"}, "samples.1.step"),
        ({"verdict": None}, "samples.1.verdict"),  # null where the schema says string
        ({"extra": None}, "samples.1.extra"),
        ({"finish_reason": ""}, "samples.1.finish_reason"),
        ({"phase": ""}, "samples.1.phase"),
        ({"group_index": 2**31}, "samples.1.group_index"),
    ],
)
def test_bad_input_is_a_400_naming_the_row_and_field(api, run, change, field):
    rows = [
        {"step": 1, "prompt": "p", "completion": "ab"},
        {"step": 1, "prompt": "p", "completion": "ab", **change},
    ]
    resp = post(api, run, rows)
    assert resp.status_code == 400, resp.content
    assert list(resp.json()["errors"]) == [field]
    assert not Sample.objects.filter(run=run).exists()


def test_missing_text_and_nan_are_refused_or_nulled(api, run):
    assert "samples.0.prompt" in post(api, run, [{"step": 1, "completion": "c"}]).json()["errors"]
    raw = '{"samples": [{"step": 1, "prompt": "p", "completion": "c", "reward": NaN}]}'
    resp = api.post(f"/api/runs/{run.id}/samples/", raw, content_type="application/json")
    assert resp.status_code == 400  # JSON has no NaN: clients send null (orlab_client does)
    with pytest.raises(SampleError) as err:
        samples_record(run, [{"step": 1, "prompt": "p", "completion": "c", "finish_reason": "eos"}])
    assert err.value.field_errors == {"samples.0.finish_reason": ["one of stop, length, error"]}
    samples_record(
        run, [{"step": 1, "prompt": "p", "completion": "c", "reward": math.nan, "rewards": {"a": math.inf}}]
    )
    sample = Sample.objects.get(run=run)
    assert sample.reward is None and sample.rewards == {"a": None}


# --- the worker's sink -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_sink_passes_the_record_through_and_never_fails_a_trainer(project, alice, settings):
    from workers.sinks import DbSink

    settings.ORLAB_SINK_FLUSH_INTERVAL = 0.1
    running = Run.objects.create(
        project=project, name="r", kind="synthetic", status="running", created_by=alice, attempt=2
    )
    sink = DbSink(running.id, 2)
    rows = group(7, 0, "p", [np.float32(1.0), float("nan")], ["correct", "wrong"], finish_reason="stop")
    rows[0].update(rewards={"acc": np.float64(1.0)}, tokens={"offsets": np.arange(3), "logprobs": np.zeros(3)},
                   step="the DAPO step text", completion="abc")  # fmt: skip
    rows[1].update(finish_reason="eos", tokens={"offsets": [0], "logprobs": [0.0, 1.0]}, values=np.ones(2))
    sink.log_samples(7, rows)
    sink.close()
    first, second = Sample.objects.filter(run=running).order_by("member_index")
    assert (first.step, first.attempt, first.client_key) == (7, 2, "orlab:a2:s7:0")
    assert first.extra["step"] == "the DAPO step text" and first.rewards == {"acc": 1.0}
    assert decode_tokens(first.tokens)["offsets"] == [0, 1, 2]
    assert second.reward is None and second.finish_reason == "" and second.extra["values"] == [1.0, 1.0]
    assert set(second.extra["invalid"]) == {"finish_reason", "tokens.logprobs"}
    assert not SampleTokens.objects.filter(sample=second).exists()
    assert stored(running) == recomputed(running)


# --- older rows ----------------------------------------------------------------------------------------


def test_legacy_rows_display_and_migrate(api, run):
    """Rows as trainers and integrations stored them before the record: text in ``prompt``, group
    info in ``extra``. The list shows them; migration 0011's backfill moves what it can."""
    legacy = [
        Sample(run=run, step=1, prompt="rl", completion="a", reward=1.0, verdict="correct", extra={"group": 0, "detail": "ok"}),
        Sample(run=run, step=1, prompt="rl", completion="b", reward=1.0, verdict="correct", extra={"group": 0}),
        Sample(run=run, step=1, prompt="trl", completion="c", reward=0.5,
               extra={"source": "trl", "mode": "eval", "group": 3, "generation": 1, "rewards": {"f": 0.5}}),
        Sample(run=run, step=2, prompt="verl", completion="d", reward=0.0, extra={"source": "verl validation"}),
        Sample(run=run, step=2, prompt="q", completion="s1", extra={"state": "s", "terminal": False, "step": "x"}),
        Sample(run=run, step=2, prompt="q", completion="s2", extra={"state": "s", "terminal": True, "step": "y"}),
    ]  # fmt: skip
    Sample.objects.bulk_create(legacy)
    listed = api.get(f"/api/runs/{run.id}/samples/?page_size=10").json()["results"]
    assert sorted(r["prompt"] for r in listed) == ["q", "q", "rl", "rl", "trl", "verl"]

    backfill = importlib.import_module("webapp.runs.migrations.0011_rollout_samples").backfill
    backfill(django_apps, None)
    rows = list(Sample.objects.filter(run=run).order_by("id"))
    assert all(r.prompt_ref_id and r.prompt == "" for r in rows)
    assert [prompt_text(r) for r in rows] == ["rl", "rl", "trl", "verl", "q", "q"]
    assert [(r.group_index, r.member_index) for r in rows[:2]] == [(0, 0), (0, 1)]
    assert rows[0].extra == {"detail": "ok", "group_status": "solved_all"}
    assert (rows[2].phase, rows[2].group_index, rows[2].member_index, rows[2].rewards) == (
        "eval",
        3,
        1,
        {"f": 0.5},
    )
    assert rows[2].extra == {"source": "trl", "group_status": "zero_variance"}
    assert (rows[3].phase, rows[3].group_index) == ("eval", None)
    assert [(r.group_index, r.member_index) for r in rows[4:]] == [(0, 0), (0, 1)]
    assert stored(run) == recomputed(run)
    assert RolloutPrompt.objects.get(run=run, text="rl").first_solved_step == 1
    listed = api.get(f"/api/runs/{run.id}/samples/?page_size=10").json()["results"]
    assert sorted(r["prompt"] for r in listed) == ["q", "q", "rl", "rl", "trl", "verl"]
    backfill(django_apps, None)  # again: nothing left to move
    assert stored(run) == recomputed(run)


def test_the_client_sends_what_json_can_carry():
    """orlab_client's log_samples body: NaN/inf as null, numpy as plain numbers and lists, the older
    ``reference`` as ``expected_answer`` (the server refuses NaN literals)."""
    import json

    from orlab_client.client import _sample_json

    sample = {"prompt": "p", "completion": "c", "reward": float("nan"), "advantage": np.float32(0.5),
              "rewards": {"acc": np.float64("inf"), "fmt": 1}, "reference": "42", "group_index": np.int64(3),
              "tokens": {"offsets": np.arange(2), "logprobs": np.array([-1.0, np.nan])}}  # fmt: skip
    out = _sample_json(sample)
    assert out == {"prompt": "p", "completion": "c", "reward": None, "advantage": 0.5,
                   "rewards": {"acc": None, "fmt": 1}, "expected_answer": "42", "group_index": 3,
                   "tokens": {"offsets": [0, 1], "logprobs": [-1.0, None]}}  # fmt: skip
    json.dumps(out, allow_nan=False)
