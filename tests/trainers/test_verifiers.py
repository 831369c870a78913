"""Reward verifiers: math answers (extraction + math_verify equivalence) and code (tests run in the sandbox)."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

import pytest

from trainers.common.rewards import score_batch
from trainers.common.verifiers.code import extract_code, normalize_tests, verify_code
from trainers.common.verifiers.math import Verdict, extract_answer, verify_math

# ------------------------------------------------------------------------------------------------ math


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"So the result is \boxed{\frac{1}{2}}.", r"\frac{1}{2}"),
        (r"\boxed{\frac{a}{\sqrt{b^{2}+1}}}", r"\frac{a}{\sqrt{b^{2}+1}}"),  # nested braces
        (r"first \boxed{3}, then corrected: \boxed{4}", "4"),  # the last box wins
        (r"\boxed{\boxed{5}}", "5"),
        (r"\fbox{10}", "10"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),
        (r"<think>maybe \boxed{7}</think>The answer is \boxed{8}.", "8"),  # after </think> only
        (r"<think>\boxed{7} wait</think> So the answer is 9.", "9"),
        ("The final answer is $\\frac{3}{4}$.", r"\frac{3}{4}"),
        ("**Final Answer:** 42", "42"),
        ("Natalia sold 48 clips.\n#### 72", "72"),
        ("Adding them up, x + y = 12.", "12"),
        (r"Put it in \boxed{}. Answer: 9", "9"),  # an empty box (the prompt's template) is skipped
        ("\\boxed 5", "5"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "I am not sure what to do here.",
        r"<think>I think \boxed{7}</think> and that is all",  # the box is inside the thinking
        r"truncated \boxed{\frac{1}{2",  # unbalanced: not an answer
        "",
    ],
)
def test_extract_answer_none(text):
    assert extract_answer(text) is None


@pytest.mark.parametrize(
    ("answer", "reference"),
    [
        ("0.5", "1/2"),
        ("1/2", r"\frac{1}{2}"),
        (r"\frac12", "0.5"),
        ("42.0", "42"),
        ("42", "42.0"),
        (r"2\sqrt{2}", r"\sqrt{8}"),
        (r"\{2,1\}", r"\{1,2\}"),
        ("[1,2)", "[1, 2)"),
        (r"\pi/2", r"\frac{\pi}{2}"),
        (r"10\%", "0.1"),
    ],
)
def test_equivalent_answers_are_correct(answer, reference):
    v = verify_math(f"Work... so \\boxed{{{answer}}}", reference)
    assert v.verdict == "correct", v
    assert v.reward == 1.0
    assert v.answer == answer


@pytest.mark.parametrize(
    ("answer", "reference"),
    [
        ("43", "42"),
        ("0.51", "1/2"),
        ("[1,2]", "[1,2)"),
        (r"\{1,3\}", r"\{1,2\}"),
        ("-42", "42"),
        (r"\sqrt{2}", "2"),
    ],
)
def test_wrong_answers_are_rejected(answer, reference):
    v = verify_math(f"\\boxed{{{answer}}}", reference)
    assert v.verdict == "wrong", v
    assert v.reward == 0.0


def test_math_verdicts():
    no = verify_math("I give up.", "3")
    assert (no.verdict, no.reward, no.answer) == ("no_answer", 0.0, None)
    exact = verify_math(r"\boxed{\text{Monday}}", "Monday")
    assert exact.verdict == "correct" and exact.detail == "exact match"
    several = verify_math(r"\boxed{6}", ["5", "6"])  # any of several references
    assert several.verdict == "correct"
    assert verify_math(r"\boxed{5}", "").verdict == "error"  # an unusable reference
    assert verify_math(None, "5").verdict == "no_answer"  # never raises
    thought = verify_math(r"<think>\boxed{5}</think> final: \boxed{6}", "5")
    assert thought.verdict == "wrong" and thought.answer == "6"


@pytest.mark.slow
def test_a_pathological_answer_is_a_timeout_verdict():
    """math_verify's own SIGALRM timeout can be swallowed (it fired inside a weakref finalizer in a full
    suite run and sympy went on expanding for minutes), so the guarantee is the reward pool's: the
    verifier's timeout when it works, the pool killing the worker when it does not."""
    t0 = time.monotonic()
    [v] = score_batch([("math", r"\boxed{(x+1)^{100000}}", "2")], processes=1, item_timeout_s=8)
    assert v.verdict == "timeout" and v.reward == 0.0, v
    assert time.monotonic() - t0 < 30


def test_verdict_reward_follows_the_verdict():
    assert Verdict(1.0, "wrong").reward == 0.0
    assert Verdict(0.0, "correct").reward == 1.0
    with pytest.raises(ValueError):
        Verdict(0.0, "maybe")


def test_math_verify_off_the_main_thread():
    """math_verify's SIGALRM timeouts can't work in a thread: they are switched off there, not crashing."""
    out = []
    thread = threading.Thread(target=lambda: out.append(verify_math(r"\boxed{0.5}", r"\frac{1}{2}")))
    thread.start()
    thread.join(timeout=60)
    assert [v.verdict for v in out] == ["correct"]


def test_a_pending_alarm_survives_math_verify():
    """math_verify's signal.alarm() would cancel a caller's ITIMER_REAL (pytest-timeout's, say)."""
    fired = []
    old_handler = signal.signal(signal.SIGALRM, lambda *a: fired.append(1))
    old_timer = signal.setitimer(signal.ITIMER_REAL, 100.0)
    try:
        assert verify_math(r"\boxed{0.5}", "1/2").verdict == "correct"
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 90 < left <= 100
        assert signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_timer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *old_timer)
    assert fired == []


# ------------------------------------------------------------------------------------------------ code

ADD_STDIN = "Here is my solution:\n```python\nimport sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\n```\n"
ADD_TESTS = [
    {"stdin": "1 2\n", "stdout": "3\n"},
    {"stdin": "10 -4", "stdout": "6   \n\n"},  # trailing whitespace and blank lines are ignored
    {"input": "100 200\n", "output": "300"},  # the "input"/"output" spelling
]


def test_extract_code():
    two = "```python\nprint(1)\n```\nbetter:\n```python\nprint(2)\n```"
    assert extract_code(two) == "print(2)\n"
    assert extract_code("<think>```python\nprint(0)\n```</think>```py\nprint(3)\n```") == "print(3)\n"
    assert extract_code("```\nprint(4)\n```") == "print(4)\n"  # untagged block as a fallback
    assert extract_code("x = int(input())\nprint(x * 2)") == "x = int(input())\nprint(x * 2)"  # bare program
    assert extract_code("I cannot solve this problem.") is None
    assert extract_code("Hello") is None  # parses, but is not a program
    assert extract_code("```cpp\nint main() {}\n```") is None


def test_correct_stdin_solution_passes_all_tests():
    v = verify_code(ADD_STDIN, ADD_TESTS)
    assert v.verdict == "correct", v
    assert v.reward == 1.0
    assert v.detail == "all 3 tests passed"
    assert "a + b" in v.answer


def test_one_wrong_test_fails_the_whole():
    tests = [*ADD_TESTS, {"stdin": "2 2", "stdout": "5"}, {"stdin": "1 1", "stdout": "2"}]
    v = verify_code(ADD_STDIN, tests)
    assert v.verdict == "wrong", v
    assert v.reward == 0.0
    assert v.detail.startswith("test 4/5 failed")
    assert "'5'" in v.detail and "'4'" in v.detail


def test_internal_whitespace_still_matters():
    v = verify_code("```python\nprint('1  2')\n```", [{"stdin": "", "stdout": "1 2"}])
    assert v.verdict == "wrong", v


def test_call_style_tests():
    good = "```python\ndef add(a, b):\n    return a + b\n\nprint('module-level output is ignored')\n```"
    tests = [
        {"call": "add(1, 2)", "expected": 3},
        {"call": "add([1], [2])", "expected": [1, 2]},
        {"call": "add(0.1, 0.2)", "expected": 0.3},  # floats compare to 1e-9
        {"call": "tuple(map(str, (add(1, 1),)))", "expected": ["2"]},  # tuples compare as JSON lists
    ]
    ok = verify_code(good, tests)
    assert ok.verdict == "correct", ok
    bad = verify_code("```python\ndef add(a, b):\n    return a - b\n```", tests)
    assert bad.verdict == "wrong" and bad.detail.startswith("test 1/4 failed"), bad
    raises = verify_code("```python\ndef add(a, b):\n    return a / 0\n```", tests)
    assert raises.verdict == "error" and "ZeroDivisionError" in raises.detail, raises
    assert verify_code(good, [{"call": "add(True, 0)", "expected": True}]).verdict == "wrong"  # 1 is not true


def test_mixed_stdin_and_call_tests():
    src = "```python\ndef double(x):\n    return 2 * x\n\nif __name__ == '__main__':\n    print(double(int(input())))\n```"
    tests = [{"stdin": "4", "stdout": "8"}, {"call": "double(21)", "expected": 42}]
    assert verify_code(src, tests).verdict == "correct"
    assert verify_code(src, [*tests, {"call": "double(1)", "expected": 3}]).detail.startswith(
        "test 3/3 failed"
    )


def test_taco_ground_truth():
    method = "```python\nclass Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n        for i, x in enumerate(nums):\n            if target - x in seen:\n                return [seen[target - x], i]\n            seen[x] = i\n```"
    gt = json.dumps(
        {
            "inputs": [[[2, 7, 11], 9], [[3, 3], 6]],
            "outputs": [[[0, 1]], [0, 1]],
            "fn_name": "twoSum",
            "url": None,
        }
    )
    assert normalize_tests(gt)[0] == {
        "fn_name": "twoSum",
        "args": [[2, 7, 11], 9],
        "expected": [[0, 1]],
        "unwrap": True,
    }
    assert verify_code(method, gt).verdict == "correct"
    stdin_gt = {"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"], "fn_name": None}
    assert verify_code(ADD_STDIN, stdin_gt).verdict == "correct"
    assert verify_code(ADD_STDIN, {"inputs": ["1 2\n"], "outputs": ["4\n"]}).verdict == "wrong"


def test_syntax_error_is_error():
    v = verify_code("```python\ndef f(:\n    pass\n```", ADD_TESTS)
    assert v.verdict == "error", v
    assert v.detail.startswith("syntax error")


def test_runtime_error_is_error():
    v = verify_code("```python\nraise RuntimeError('nope')\n```", ADD_TESTS)
    assert v.verdict == "error", v
    assert "RuntimeError: nope" in v.detail and v.detail.startswith("test 1/3")


def test_infinite_loop_is_timeout():
    t0 = time.monotonic()
    v = verify_code("```python\nwhile True:\n    pass\n```", ADD_TESTS, timeout_s=1.0)
    assert v.verdict == "timeout", v
    assert v.reward == 0.0
    assert time.monotonic() - t0 < 4  # the first test's timeout ends it: binary reward


def test_call_that_never_returns_is_timeout():
    v = verify_code(
        "```python\ndef f(x):\n    while True:\n        pass\n```",
        [{"call": "f(1)", "expected": 1}],
        timeout_s=1.0,
    )
    assert v.verdict == "timeout", v


def test_global_timeout():
    slow = "```python\nimport time\ntime.sleep(0.4)\nprint(input())\n```"
    tests = [{"stdin": str(i), "stdout": str(i)} for i in range(10)]
    v = verify_code(slow, tests, timeout_s=2.0, global_timeout_s=1.0)
    assert v.verdict == "timeout", v


def test_no_code_block_is_no_answer():
    v = verify_code("<think>```python\nprint(3)\n```</think>I could not find an algorithm, sorry.", ADD_TESTS)
    assert v.verdict == "no_answer", v
    assert v.answer is None


def test_bad_test_specification_is_error():
    assert verify_code(ADD_STDIN, [{"foo": 1}]).verdict == "error"
    assert verify_code(ADD_STDIN, []).verdict == "error"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")
def test_code_is_scored_in_the_sandbox(monkeypatch):
    monkeypatch.setenv("ORLAB_VERIFIER_SECRET", "s3cret-value")
    src = "```python\nimport os\nprint(os.environ.get('ORLAB_VERIFIER_SECRET', 'none'))\n```"
    assert verify_code(src, [{"stdin": "", "stdout": "none"}]).verdict == "correct"
