"""Batch reward scoring in a process pool: order kept, and no item can take the batch down."""

from __future__ import annotations

import os
import time

import pytest

from trainers.common.rewards import RewardPool, score
from trainers.common.verifiers.verdict import Verdict

ADD = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
ADD_TESTS = [{"stdin": "1 2", "stdout": "3"}, {"stdin": "5 5", "stdout": "10"}]


def hostile_scorer(domain, completion, reference):
    """Module-level (the pool pickles it by reference): misbehaves on request, else scores normally."""
    if completion == "CRASH":
        os._exit(13)  # the worker process dies mid-item
    if completion == "HANG":
        time.sleep(3600)
    if completion == "RAISE":
        raise ValueError("scorer blew up")
    if completion == "NOT_A_VERDICT":
        return 1.0
    if completion.startswith("SLOW "):  # "SLOW <seconds> <completion>"
        _, seconds, completion = completion.split(" ", 2)
        time.sleep(float(seconds))
    return score(domain, completion, reference)


def test_score_picks_the_verifier_by_domain():
    assert score("math", r"\boxed{\frac{1}{2}}", "0.5").verdict == "correct"
    assert score("code", ADD, ADD_TESTS).verdict == "correct"
    unknown = score("chemistry", "H2O", "water")
    assert unknown.verdict == "error" and "unknown domain" in unknown.detail
    assert score("code", ADD, "not json").verdict == "error"  # a bad reference: a verdict, no exception


def test_pool_scores_a_mixed_batch_in_order():
    items = [
        ("math", r"\boxed{42.0}", "42"),
        ("code", ADD, ADD_TESTS),
        ("math", r"\boxed{41}", "42"),
        ("code", ADD.replace("a + b", "a * b"), ADD_TESTS),
        ("math", "no idea", "1"),
        ("code", "no code, sorry", ADD_TESTS),
        ("math", r"The answer is \boxed{[1,2)}", "[1,2)"),
    ]
    with RewardPool(processes=2, item_timeout_s=60) as pool:
        first = pool.score_batch(items)
        second = pool.score_batch(items)
    assert [v.verdict for v in first] == [
        "correct",
        "correct",
        "wrong",
        "wrong",
        "no_answer",
        "no_answer",
        "correct",
    ]
    assert [v.reward for v in first] == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert [v.to_dict() for v in second] == [v.to_dict() for v in first]  # deterministic
    assert pool.restarts == 0


def test_a_crashing_item_is_an_error_and_the_rest_still_score():
    items = [
        ("math", r"\boxed{0.5}", "1/2"),
        ("math", "CRASH", "1"),
        ("code", ADD, ADD_TESTS),
        ("math", r"\boxed{3}", "4"),
        ("math", "RAISE", "1"),
        ("math", "NOT_A_VERDICT", "1"),
    ]
    with RewardPool(processes=2, item_timeout_s=60, scorer=hostile_scorer) as pool:
        out = pool.score_batch(items)
        assert [v.verdict for v in out] == ["correct", "error", "correct", "wrong", "error", "error"], out
        assert "worker process died" in out[1].detail
        assert "ValueError: scorer blew up" in out[4].detail
        assert pool.restarts >= 1
        # The pool was replaced: the next batch works.
        again = pool.score_batch([("math", r"\boxed{7}", "7"), ("math", "CRASH", "7")])
        assert [v.verdict for v in again] == ["correct", "error"]


@pytest.mark.slow
def test_a_hanging_item_times_out_and_the_rest_still_score():
    items = [
        ("math", "HANG", "1"),
        ("math", r"\boxed{2}", "2"),
        ("code", ADD, ADD_TESTS),
        ("math", r"\boxed{5}", "6"),
    ]
    t0 = time.monotonic()
    with RewardPool(processes=2, item_timeout_s=3, scorer=hostile_scorer) as pool:
        out = pool.score_batch(items)
    assert [v.verdict for v in out] == ["timeout", "correct", "correct", "wrong"], out
    assert all(isinstance(v, Verdict) for v in out)
    assert out[0].reward == 0.0
    assert time.monotonic() - t0 < 20


def test_an_empty_batch():
    with RewardPool(processes=1) as pool:
        assert pool.score_batch([]) == []


def test_unpicklable_reference_is_an_error():
    with RewardPool(processes=1, item_timeout_s=60) as pool:
        out = pool.score_batch([("math", r"\boxed{1}", lambda: 1), ("math", r"\boxed{1}", "1")])
    assert [v.verdict for v in out] == ["error", "correct"], out


def _math_batch(n: int) -> list[tuple[str, str, str]]:
    """n math items of every verdict: correct (exact and by math_verify), wrong, no answer."""
    forms = [r"\boxed{%d}", r"so the answer is %d.", r"\boxed{%d.0}", "no idea", r"x = \frac{%d}{2}"]
    items = []
    for i in range(n):
        form = forms[i % len(forms)]
        items.append(("math", form % (i % 7) if "%d" in form else form, str(i % 3)))
    return items


def test_math_items_go_in_chunks_and_score_as_in_the_trainer_process():
    items = _math_batch(60)
    items[30:30] = [("code", ADD, ADD_TESTS)]  # code goes alone, the chunks around it still form
    with RewardPool(processes=2, item_timeout_s=60) as pool:
        out = pool.score_batch(items)
        assert pool.tasks < len(items) // 3, pool.tasks  # chunks, not one task per item
        assert pool.score_batch(items) == out
    assert out == [score(*item) for item in items]  # same verdicts, same order
    assert {v.verdict for v in out} == {"correct", "wrong", "no_answer"}
    assert out[30].verdict == "correct"


def test_the_time_limit_is_per_item_not_per_chunk():
    # one process: the first chunk holds 6 items of 0.5 s, 3 s in all, over the 2 s limit of one item
    items = [("math", rf"SLOW 0.5 \boxed{{{i}}}", str(i)) for i in range(12)]
    with RewardPool(processes=1, item_timeout_s=2, scorer=hostile_scorer) as pool:
        out = pool.score_batch(items)
        assert pool.tasks < len(items)
        assert pool.restarts == 0
    assert [v.verdict for v in out] == ["correct"] * len(items), out


@pytest.mark.slow
def test_a_hanging_item_inside_a_chunk_times_out_alone():
    items = _math_batch(40)
    items[5] = ("math", "HANG", "1")  # in the middle of the first chunk (10 items)
    with RewardPool(processes=2, item_timeout_s=3, scorer=hostile_scorer) as pool:
        out = pool.score_batch(items)
        assert pool.restarts == 1
    assert out[5].verdict == "timeout" and "longer than 3s" in out[5].detail, out[5]
    expected = [score(*item) for item in items]
    assert out[:5] + out[6:] == expected[:5] + expected[6:]  # its chunk's other items were scored again


def test_a_crash_inside_a_chunk_is_an_error_for_that_item_only():
    items = _math_batch(40)
    items[13] = ("math", "CRASH", "1")  # in the middle of the second chunk
    items[24] = ("math", "RAISE", "1")
    items[33] = ("math", r"\boxed{1}", lambda: 1)  # cannot be pickled: its chunk is resent one per task
    with RewardPool(processes=2, item_timeout_s=60, scorer=hostile_scorer) as pool:
        out = pool.score_batch(items)
        assert pool.restarts >= 1
        again = pool.score_batch(_math_batch(8))  # the replaced pool works
    assert out[13].verdict == "error" and "worker process died" in out[13].detail, out[13]
    assert out[24].verdict == "error" and "ValueError: scorer blew up" in out[24].detail
    assert out[33].verdict == "error", out[33]
    expected = [score(*item) for item in items]
    others = [i for i in range(len(items)) if i not in (13, 24, 33)]
    assert [out[i] for i in others] == [expected[i] for i in others]
    assert again == [score(*item) for item in _math_batch(8)]
