"""Code answers: extract the program of a completion and run it against every test case in the sandbox.

Binary, as in Skywork-OR1 training (seeds spec 1.6): reward 1 only when every test passes. Tests are either

* stdin/stdout pairs, {"stdin": ..., "stdout": ...} (aliases "input"/"output"): one sandboxed run per test;
  the outputs are compared line by line after stripping, trailing whitespace ignored; or
* function calls, {"call": "f(1, 2)", "expected": <JSON value>}: all of them in one sandboxed run, the
  solution loaded as a module and each call evaluated by a small harness that prints the JSON of the result
  (each call under its own alarm); results are compared as JSON (floats to 1e-9).

The TACO/APPS ground truth {"inputs": [...], "outputs": [...], "fn_name"?: ...} (a JSON string or a dict; None
values dropped, spec 1.5) is accepted too: without fn_name it becomes stdin tests, with it call tests on
`fn_name` (a method of `class Solution` when there is one), a result also matching `outputs[i][0]` as in LCB.

Expected outputs never enter the sandbox: a run receives the program and the test inputs only (stdin, or the
calls and their arguments), its outputs come back as text or as JSON data (bounded in size), and they are compared
here, in the verifier's process. A solution that walks the harness's frames, scans the heap or reads every file it
can reach finds inputs only; an object whose `__eq__` says yes serialises as its data (or its repr) and compares as
that. The harness runs in the solution's process, so the solution can forge result lines: it gains nothing without
the expected values. The result lines carry a random marker, and the solution's own prints go to stderr, so that
what it prints cannot be mistaken for (or crowd out) a result."""

from __future__ import annotations

import ast
import json
import math
import re
import secrets
import time
from typing import Any

from trainers.common.sandbox import DEFAULT_MAX_OUTPUT, SandboxResult, run_python
from trainers.common.verifiers.verdict import Verdict, after_think

__all__ = ["extract_code", "normalize_tests", "verify_code"]

DEFAULT_TEST_TIMEOUT_S = 6.0
MAX_GLOBAL_TIMEOUT_S = 300.0
_FENCE = re.compile(r"```[ \t]*(?P<lang>[A-Za-z0-9_+.-]*)[^\n]*\n(?P<body>.*?)```", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3", "py3"}


def extract_code(completion: str) -> str | None:
    """The last ```python block after "</think>"; else the last untagged ``` block; else the whole text if it
    parses as a Python program (and is more than a bare name or constant). None when there is no code."""
    text = after_think(completion or "")
    blocks = [(m.group("lang").lower(), m.group("body")) for m in _FENCE.finditer(text)]
    for wanted in (lambda lang: lang in _PYTHON_TAGS, lambda lang: lang == ""):
        tagged = [body for lang, body in blocks if wanted(lang)]
        if tagged and tagged[-1].strip():
            return tagged[-1]
    if blocks or not text.strip():
        return None
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    trivial = all(
        isinstance(node, ast.Expr) and isinstance(node.value, ast.Name | ast.Constant) for node in tree.body
    )
    return None if trivial else text


def normalize_tests(tests: Any) -> list[dict]:
    """Tests as a list of {"stdin", "stdout"} or {"call"|"fn_name"+"args", "expected"} dicts."""
    if isinstance(tests, str | bytes):
        tests = json.loads(tests)
    if isinstance(tests, dict):
        tests = {k: v for k, v in tests.items() if v is not None}
        if "inputs" not in tests or "outputs" not in tests:
            raise ValueError(f"unsupported test specification with keys {sorted(tests)}")
        inputs, outputs = tests["inputs"], tests["outputs"]
        if len(inputs) != len(outputs):
            raise ValueError("inputs and outputs differ in length")
        if tests.get("fn_name"):
            return [
                {"fn_name": tests["fn_name"], "args": args, "expected": out, "unwrap": True}
                for args, out in zip(inputs, outputs, strict=True)
            ]
        return [{"stdin": _text(i), "stdout": _text(o)} for i, o in zip(inputs, outputs, strict=True)]
    out = []
    for t in tests:
        if "call" in t or "fn_name" in t:
            out.append(dict(t))
        elif ("stdin" in t or "input" in t) and ("stdout" in t or "output" in t):
            out.append(
                {
                    "stdin": _text(t.get("stdin", t.get("input"))),
                    "stdout": _text(t.get("stdout", t.get("output"))),
                }
            )
        else:
            raise ValueError(f"unsupported test case with keys {sorted(t)}")
    return out


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(map(str, value))
    return "" if value is None else str(value)


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines()]


def _short(value: Any, n: int = 120) -> str:
    s = value if isinstance(value, str) else json.dumps(value, default=repr)
    return s if len(s) <= n else s[: n - 3] + "..."


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return a == b


def _failed_run(res: SandboxResult, where: str, code: str | None = None) -> Verdict:
    """The verdict for a run that did not end normally (the last stderr line says why)."""
    if res.status == "timeout":
        return Verdict.fail("timeout", f"{where}: {res.detail}", code)
    last = res.stderr.strip().splitlines()[-1:] or [res.detail]
    return Verdict.fail("error", f"{where}: {res.status} ({res.detail}): {_short(last[0], 200)}", code)


def verify_code(
    completion: str,
    tests: Any,
    *,
    timeout_s: float = DEFAULT_TEST_TIMEOUT_S,
    global_timeout_s: float | None = None,
    memory_mb: int = 512,
) -> Verdict:
    """Run the completion's program on every test; reward 1 only if all pass. Never raises.

    Verdicts: correct; wrong (a test's output differs); no_answer (no code); timeout (a test, or the whole set,
    ran out of time: `timeout_s` per test, `global_timeout_s` overall, by default min((timeout_s + 1) * n + 5,
    300) as in LiveCodeBench); error (syntax error, runtime error, memory, bad test specification). The
    detail names the first failing test."""
    code = None
    try:
        code = extract_code(completion)
        if code is None:
            return Verdict.fail("no_answer", "no Python code block found")
        try:
            ast.parse(code)
        except SyntaxError as e:
            return Verdict.fail("error", f"syntax error: {e.msg} (line {e.lineno})", code)
        cases = normalize_tests(tests)
        if not cases:
            return Verdict.fail("error", "no test cases", code)
        if global_timeout_s is None:
            global_timeout_s = min((timeout_s + 1) * len(cases) + 5, MAX_GLOBAL_TIMEOUT_S)
        deadline = time.monotonic() + global_timeout_s
        calls = [(i, t) for i, t in enumerate(cases) if "stdin" not in t]
        n = len(cases)
        for i, case in enumerate(cases):
            if "stdin" not in case:
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                return Verdict.fail(
                    "timeout", f"global time limit of {global_timeout_s:g}s reached at test {i + 1}/{n}", code
                )
            res = run_python(
                code,
                stdin=case["stdin"],
                timeout_s=min(timeout_s, left),
                memory_mb=memory_mb,
                max_output_bytes=max(DEFAULT_MAX_OUTPUT, 2 * len(case["stdout"].encode()) + 4096),
            )
            if res.status != "ok":
                return _failed_run(res, f"test {i + 1}/{n}", code)
            if _lines(res.stdout) != _lines(case["stdout"]):
                got = "\n".join(_lines(res.stdout))
                want = "\n".join(_lines(case["stdout"]))
                return Verdict.fail(
                    "wrong", f"test {i + 1}/{n} failed: expected {_short(want)!r}, got {_short(got)!r}", code
                )
        if calls:
            verdict = _run_calls(code, calls, n, timeout_s, deadline, memory_mb)
            if verdict is not None:
                verdict.answer = code
                return verdict
        return Verdict.ok(code, f"all {n} tests passed")
    except Exception as e:
        return Verdict.fail("error", f"{type(e).__name__}: {e}", code)


_HARNESS = r"""
import json as _json, signal as _signal, sys as _sys

def _main(source):
    import os as _os

    cfg = _json.loads(_sys.stdin.readline())
    marker = cfg["marker"]
    # Results go to the real stdout; whatever the solution prints goes to stderr.
    _sys.stdout.flush()
    out = _os.fdopen(_os.dup(1), "w", encoding="utf-8")
    _os.dup2(2, 1)

    def emit(obj):
        out.write("\n" + marker + _json.dumps(obj) + "\n")
        out.flush()

    def plain(value):
        if isinstance(value, (set, frozenset)):
            try:
                return sorted(value)
            except TypeError:
                return list(value)
        if isinstance(value, (tuple, range)):
            return list(value)
        return repr(value)

    ns = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        exec(compile(source, "solution.py", "exec"), ns)
    except BaseException as e:
        emit({"load_error": "%s: %s" % (type(e).__name__, e)})
        return

    class CallTimeout(BaseException):
        pass

    def on_alarm(signum, frame):
        raise CallTimeout()

    _signal.signal(_signal.SIGALRM, on_alarm)
    for i, t in enumerate(cfg["tests"]):
        try:
            _signal.setitimer(_signal.ITIMER_REAL, cfg["timeout"])
            try:
                if "call" in t:
                    value = eval(t["call"], ns)
                else:
                    fn = None
                    if isinstance(ns.get("Solution"), type):
                        fn = getattr(ns["Solution"](), t["fn_name"], None)
                    if fn is None:
                        fn = ns[t["fn_name"]]
                    args = t["args"]
                    value = fn(*args) if isinstance(args, list) else fn(args)
            finally:
                _signal.setitimer(_signal.ITIMER_REAL, 0)
            emit({"i": i, "value": _json.loads(_json.dumps(value, default=plain))})
        except CallTimeout:
            emit({"i": i, "timeout": True})
            return
        except BaseException as e:
            emit({"i": i, "error": "%s: %s" % (type(e).__name__, e)})
            return

_main(SOURCE)
"""


def _run_calls(
    code: str, calls: list[tuple[int, dict]], n: int, timeout_s: float, deadline: float, memory_mb: int
) -> Verdict | None:
    """All function-call tests in one sandboxed run; None when they all pass."""
    left = deadline - time.monotonic()
    first = calls[0][0] + 1
    if left <= 0:
        return Verdict.fail("timeout", f"global time limit reached at test {first}/{n}")
    marker = "@@orlab-" + secrets.token_hex(16) + "@@"
    program = "SOURCE = " + repr(code) + "\n" + _HARNESS
    # The inputs only: the call, or the function's name and arguments. The expected values stay here.
    inputs = [{k: t[k] for k in ("call", "fn_name", "args") if k in t} for _, t in calls]
    stdin = json.dumps({"marker": marker, "timeout": timeout_s, "tests": inputs}) + "\n"
    budget = min(timeout_s * len(calls) + 1.0, left)
    # Room for every result, bounded: a value far larger than the expected one cannot match it anyway.
    cap = DEFAULT_MAX_OUTPUT + 2 * sum(len(json.dumps(t.get("expected"))) for _, t in calls)
    res = run_python(program, stdin=stdin, timeout_s=budget, memory_mb=memory_mb, max_output_bytes=cap)
    results: dict[int, dict] = {}
    for line in res.stdout.splitlines():
        if line.startswith(marker):
            try:
                obj = json.loads(line[len(marker) :])
            except ValueError:
                continue
            if "load_error" in obj:
                return Verdict.fail("error", f"loading the solution failed: {_short(obj['load_error'], 200)}")
            results[obj["i"]] = obj
    for k, (i, case) in enumerate(calls):
        where = f"test {i + 1}/{n}"
        got = results.get(k)
        if got is None:
            if res.status != "ok":
                return _failed_run(res, where)
            if res.stdout_truncated:
                return Verdict.fail("error", f"{where}: the results exceeded {cap} bytes")
            return Verdict.fail("error", f"{where}: the harness reported no result")
        if got.get("timeout"):
            return Verdict.fail("timeout", f"{where}: the call ran longer than {timeout_s:g}s")
        if "error" in got:
            return Verdict.fail("error", f"{where}: {_short(got['error'], 200)}")
        value, expected = got["value"], json.loads(json.dumps(case["expected"]))
        ok = _json_equal(value, expected)
        if not ok and case.get("unwrap") and isinstance(expected, list) and len(expected) >= 1:
            ok = _json_equal(value, expected[0])
        if not ok:
            what = case.get("call") or f"{case.get('fn_name')}(*{_short(case.get('args'), 60)})"
            return Verdict.fail(
                "wrong",
                f"{where} failed: {_short(what, 80)} expected {_short(expected)}, got {_short(value)}",
            )
    if res.status != "ok":
        return _failed_run(res, f"test {first}/{n}")
    return None
