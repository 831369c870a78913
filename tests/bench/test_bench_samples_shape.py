"""bench/bench_samples.py's synthetic RL run (no database): the shape the issue asks for, samples the
record accepts, and the planted search terms present."""

from __future__ import annotations

from bench.bench_samples import SUBSTRING, WORD_COMMON, Shape, flat_batches


def test_shape_of_a_million_and_one_step():
    shape = Shape(1_000_000)
    assert (shape.prompts, shape.steps, shape.groups, shape.n, shape.total) == (5000, 200, 625, 8, 1_000_000)
    small = Shape(16_000)
    step = small.step_samples(3)
    assert len(step) == small.groups * small.n == 80
    assert step == small.step_samples(3)  # deterministic: every loader process builds the same run
    groups = {}
    for s in step:
        groups.setdefault(s["group_index"], []).append(s)
    assert all(len(m) == 8 and len({x["prompt"] for x in m}) == 1 for m in groups.values())
    assert len({m[0]["prompt"] for m in groups.values()}) == len(groups)  # a prompt once per step
    for s in step:
        assert s["truncated"] == (s["finish_reason"] == "length") or s["finish_reason"] == "error"
        if s["truncated"]:
            assert s["verdict"] == "no_answer" and "\\boxed{" not in s["completion"]
        else:
            assert s["completion"].endswith(f"\\boxed{{{s['extracted_answer']}}}.")
            assert (s["verdict"] == "correct") == (s["extracted_answer"] == s["expected_answer"])
        assert 300 <= len(s["completion"]) <= 4100
        assert s["reward"] == s["rewards"]["accuracy"] + s["rewards"]["format"]


def test_planted_terms_and_ingest_batches():
    shape = Shape(50_000)
    rows = [s for step in range(0, 200, 20) for s in shape.step_samples(step)]
    assert any(WORD_COMMON in s["completion"].split() for s in rows)
    assert any(SUBSTRING in s["completion"] for s in rows)
    batches = flat_batches(shape, 3, 1000, seed=1)
    assert [len(b) for b in batches] == [1000, 1000, 1000]
    assert [b[0]["step"] for b in batches] == [0, 1, 2]
    assert batches[0][17]["group_index"] == 2 and batches[0][17]["member_index"] == 1
