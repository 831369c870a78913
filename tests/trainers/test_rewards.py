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
