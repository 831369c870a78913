"""Math answers: extract the final answer of a completion and check it against the reference with math_verify.

Follows Skywork-OR1's scorer (seeds spec 1.6): the text after the first "</think>" is scored; an exact string
match is correct; otherwise both sides go through `math_verify.parse` and `math_verify.verify` (so 0.5, 1/2
and \\frac{1}{2} agree, 42 and 42.0 agree, sets and intervals compare as sets and intervals).

math_verify bounds its own parsing and comparison time with SIGALRM, which only works in the main thread. Off
the main thread the timeouts are passed as None and the caller must bound the time itself (the RewardPool
runs scoring in worker processes, in their main thread, and also kills a worker that overruns)."""

from __future__ import annotations

import contextlib
import math
import re
import signal
import threading
import time
from collections.abc import Iterator, Sequence

from trainers.common.verifiers.verdict import Verdict, after_think

__all__ = ["Verdict", "extract_answer", "verify_math"]

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE = re.compile(r"\\boxed[ \t]+([^\s$]+)")  # "\boxed 5"
_ANSWER_FORMS = (
    re.compile(r"final\s+answer\s*(?:is|:|=)\s*:?\s*(?P<x>[^\n]+)", re.IGNORECASE),
    re.compile(r"the\s+answer\s+is\s*:?\s*(?P<x>[^\n]+)", re.IGNORECASE),
    re.compile(r"\banswer\s*:\s*(?P<x>[^\n]+)", re.IGNORECASE),
    re.compile(r"^[ \t]*####[ \t]*(?P<x>[^\n]+)", re.MULTILINE),
)
_MATH_DELIMS = (
    re.compile(r"\$\$(.+?)\$\$", re.DOTALL),
    re.compile(r"\$(.+?)\$", re.DOTALL),
    re.compile(r"\\\((.+?)\\\)", re.DOTALL),
    re.compile(r"\\\[(.+?)\\\]", re.DOTALL),
)


def _braced(text: str, start: int) -> int | None:
    """Index of the brace closing the group that starts just before `start` (escaped braces don't count)."""
    depth, i = 1, start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _boxed(text: str) -> list[tuple[int, str]]:
    """(position, content) of each outermost, balanced \\boxed{...} / \\fbox{...} (and bare "\\boxed X")."""
    found: list[tuple[int, int, str]] = []
    for m in _BOX_OPEN.finditer(text):
        if found and m.start() < found[-1][1]:
            continue  # nested inside the previous box
        end = _braced(text, m.end())
        if end is not None:
            found.append((m.start(), end, text[m.end() : end]))
    found += [(m.start(), m.end(), m.group(1)) for m in _BOX_BARE.finditer(text)]
    return sorted((start, content) for start, _, content in found)


def _clean(answer: str) -> str | None:
    answer = answer.strip().replace("**", "").strip()
    for delim in _MATH_DELIMS:
        m = delim.search(answer)
        if m:
            answer = m.group(1)
            break
    while True:  # \boxed{\boxed{5}} -> 5
        m = _BOX_OPEN.match(answer.strip())
        if not (m and _braced(answer.strip(), m.end()) == len(answer.strip()) - 1):
            break
        answer = answer.strip()[m.end() : -1]
    answer = answer.strip().rstrip(".,;").strip()
    if answer.startswith("\\text{") and answer.endswith("}") and _braced(answer, 6) == len(answer) - 1:
        answer = answer[6:-1].strip()
    return answer or None


def extract_answer(text: str) -> str | None:
    """The final answer of a completion, or None.

    Only the text after the first "</think>" counts (all of it when there is none). The last non-empty
    \\boxed{...} (or \\fbox{...}) wins, nested braces included; otherwise the last "final answer: X",
    "the answer is X", "answer: X" or "#### X"; otherwise a final line ending in "= X"."""
    text = after_think(text or "")
    for _, content in reversed(_boxed(text)):
        answer = _clean(content)
        if answer:
            return answer
    best: tuple[int, str] | None = None
    for form in _ANSWER_FORMS:
        for m in form.finditer(text):
            answer = _clean(m.group("x"))
            if answer and (best is None or m.start() >= best[0]):
                best = (m.start(), answer)
    if best:
        return best[1]
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if lines:
        last = lines[-1].strip().rstrip(".").replace("$", "").strip()
        if "=" in last:
            return _clean(last.rsplit("=", 1)[1])
    return None


def _norm(s: str) -> str:
    return re.sub(r"\s+", "", s).strip("$").removeprefix("\\displaystyle")


def _references(reference) -> list[str]:
    items = reference if isinstance(reference, list | tuple) else [reference]
    return [str(g).strip() for g in items if g is not None and not isinstance(g, bool) and str(g).strip()]


@contextlib.contextmanager
def _keep_itimer() -> Iterator[None]:
    """math_verify's signal.alarm() replaces any pending ITIMER_REAL (pytest-timeout, a caller's own alarm)
    and then cancels it; re-arm what was pending, less the time spent."""
    old_delay, old_interval = signal.getitimer(signal.ITIMER_REAL)
    t0 = time.monotonic()
    try:
        yield
    finally:
        if old_delay > 0:
            left = old_delay - (time.monotonic() - t0)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-3), old_interval)


def _timeout(timeout_s: float | None) -> int | None:
    """math_verify's timeout argument: whole seconds, and None off the main thread (signals can't work)."""
    if not timeout_s or timeout_s <= 0 or threading.current_thread() is not threading.main_thread():
        return None
    return max(1, math.ceil(timeout_s))


def _parse(text: str, timeout: int | None) -> list:
    from math_verify import parse

    if timeout is None:
        return parse(text, parsing_timeout=None, raise_on_error=True)
    with _keep_itimer():
        return parse(text, parsing_timeout=timeout, raise_on_error=True)


def _verify(gold: list, pred: list, timeout: int | None) -> bool:
    from math_verify import verify

    if timeout is None:
        return verify(gold, pred, timeout_seconds=None, raise_on_error=True)
    with _keep_itimer():
        return verify(gold, pred, timeout_seconds=timeout, raise_on_error=True)


def _parse_reference(gold: str, timeout: int | None) -> list:
    wrapped = gold if ("\\boxed" in gold or "$" in gold) else "\\boxed{" + gold + "}"
    parsed = _parse(wrapped, timeout)
    return parsed if len(parsed) >= 2 else _parse(gold, timeout)


def _parse_answer(answer: str, timeout: int | None) -> list:
    parsed = _parse("\\boxed{" + answer + "}", timeout)
    return parsed if len(parsed) >= 2 else _parse(answer, timeout)


def verify_math(
    completion: str, reference: str | float | Sequence[str | float], *, timeout_s: float | None = 5
) -> Verdict:
    """Score a math completion against one reference answer (or a list of acceptable ones). Never raises.

    Verdicts: correct (reward 1), wrong, no_answer (nothing extractable), timeout (math_verify ran out of time),
    error (an unusable reference, or an unexpected failure)."""
    from math_verify.errors import TimeoutException

    answer = None
    try:
        golds = _references(reference)
        if not golds:
            return Verdict.fail("error", "empty reference")
        answer = extract_answer(completion)
        if answer is None:
            return Verdict.fail("no_answer", "no \\boxed{} or final-answer statement found")
        for gold in golds:
            if _norm(answer) == _norm(gold):
                return Verdict.ok(answer, "exact match")
        timeout = _timeout(timeout_s)
        pred = _parse_answer(answer, timeout)
        if len(pred) < 2:  # math_verify found nothing it could turn into an expression
            return Verdict.fail("wrong", "the answer could not be parsed", answer)
        problems = []
        for gold in golds:
            parsed_gold = _parse_reference(gold, timeout)
            if not parsed_gold:
                problems.append(f"reference {gold!r} could not be parsed")
                continue
            try:
                if _verify(parsed_gold, pred, timeout):
                    return Verdict.ok(answer, f"equivalent to {gold!r}")
            except Exception as e:  # sympy could not compare these two: not equal
                problems.append(f"comparison with {gold!r} failed: {type(e).__name__}")
        if len(problems) == len(golds) and all("could not be parsed" in p for p in problems):
            return Verdict.fail("error", "; ".join(problems), answer)
        return Verdict.fail("wrong", "; ".join(problems) or f"not equivalent to {golds!r}", answer)
    except TimeoutException:
        return Verdict.fail("timeout", f"math_verify took longer than {timeout_s}s", answer)
    except Exception as e:
        return Verdict.fail("error", f"{type(e).__name__}: {e}", answer)
