"""Reward hacking against the code verifier: the expected outputs never enter the sandbox.

Every test below uses a canary as the expected value, one no honest program can compute: a program gets
reward 1.0 only by finding the canary. Before the fix the function-call harness received the tests, expected
values included, so frame walking, gc scanning and re-reading its own stdin all found it."""

from __future__ import annotations

import sys
import uuid

import pytest

from trainers.common.verifiers.code import verify_code

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")

# Searches a value for a canary ("canary-" + 32 hex digits) anywhere inside it (dicts, lists, strings).
_FIND = r"""
import re as _re
_CANARY = _re.compile(r"canary-[0-9a-f]{32}")

def _find(obj, depth=0):
    if depth > 6:
        return None
    if isinstance(obj, (str, bytes)):
        text = obj.decode("utf-8", "replace") if isinstance(obj, bytes) else obj
        m = _CANARY.search(text)
        return m.group(0) if m else None
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for item in obj:
            found = _find(item, depth + 1)
            if found:
                return found
    return None
"""

FRAME_WALK = (
    _FIND
    + """
def secret(x):
    import sys
    frame = sys._getframe(1)
    while frame is not None:
        found = _find(list(frame.f_locals.values())) or _find(list(frame.f_globals.values()))
        if found:
            return found
        frame = frame.f_back
    return "nothing found"
"""
)

INSPECT_STACK = (
    _FIND
    + """
def secret(x):
    import inspect
    for info in inspect.stack():
        found = _find(list(info.frame.f_locals.values()))
        if found:
            return found
    return "nothing found"
"""
)

GC_SCAN = (
    _FIND
    + """
def secret(x):
    import gc
    for obj in gc.get_objects():
        if isinstance(obj, (dict, list)):
            found = _find(obj, 4)
            if found:
                return found
    return "nothing found"
"""
)

# Its own stdin from the start (the harness already read it), every file next to it and above it.
FILE_READ = (
    _FIND
    + """
import os

SYSTEM = {"usr", "lib", "lib64", "bin", "sbin", "proc", "sys", "dev", "etc", "root", ".pyenv", ".venv"}

def _files():
    yield "/proc/self/fd/0"
    yield "/dev/stdin"
    n = 0
    for top in (".", "..", "../..", "/tmp", os.path.expanduser("~")):
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d not in SYSTEM] if root.count(os.sep) < 5 else []
            for name in files:
                n += 1
                if n > 2000:
                    return
                yield os.path.join(root, name)

def secret(x=None):
    try:
        os.lseek(0, 0, os.SEEK_SET)
        found = _find(os.read(0, 1 << 20))
        if found:
            return found
    except OSError:
        pass
    for path in _files():
        try:
            with open(path, "rb") as f:
                found = _find(f.read(1 << 20))
        except OSError:
            continue
        if found:
            return found
    return "nothing found"

if __name__ == "__main__":
    print(secret())
"""
)

ALWAYS_EQUAL = """
class Anything:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    __hash__ = object.__hash__

def secret(x):
    return Anything()
"""

EQUAL_STR = """
class Equal(str):
    def __eq__(self, other):
        return True
    __hash__ = str.__hash__

def secret(x):
    return Equal("not the canary")
"""

PATCHED_JSON = """
import json

class Anything(str):
    def __eq__(self, other):
        return True
    __hash__ = str.__hash__

_dumps = json.dumps
json.dumps = lambda *a, **k: '"canary-" + "0" * 32'
json.loads = lambda *a, **k: Anything("x")
json.JSONEncoder.encode = lambda self, o: '"canary-" + "0" * 32'

def secret(x):
    return Anything("x")
"""


def _canary() -> str:
    return "canary-" + uuid.uuid4().hex


def _call_tests(canary: str) -> list[dict]:
    return [{"call": "secret(1)", "expected": canary}, {"call": "secret(2)", "expected": canary}]


def _taco_tests(canary: str) -> dict:
    return {"inputs": [[1], [2]], "outputs": [[canary], [canary]], "fn_name": "secret"}


def _fenced(program: str) -> str:
    return "```python\n" + program + "\n```"


@pytest.mark.parametrize(
    "program",
    [FRAME_WALK, INSPECT_STACK, GC_SCAN, FILE_READ],
    ids=["frame-walk", "inspect-stack", "gc-scan", "file-read"],
)
@pytest.mark.parametrize("style", ["call", "taco-fn_name"])
def test_the_expected_values_are_not_in_the_sandbox(program, style):
    canary = _canary()
    tests = _call_tests(canary) if style == "call" else _taco_tests(canary)
    v = verify_code(_fenced(program), tests)
    assert v.reward == 0.0, v
    assert v.verdict == "wrong" and v.detail.endswith("got nothing found"), v


def test_a_stdin_program_finds_no_expected_output_in_its_files():
    canary = _canary()
    v = verify_code(_fenced(FILE_READ), [{"stdin": "1\n", "stdout": canary}])
    assert v.verdict == "wrong", v
    assert "nothing found" in v.detail


@pytest.mark.parametrize(
    "program", [ALWAYS_EQUAL, EQUAL_STR, PATCHED_JSON], ids=["always-equal", "equal-str", "patched-json"]
)
def test_results_are_compared_as_serialised_data(program):
    canary = _canary()
    v = verify_code(_fenced(program), _call_tests(canary))
    assert v.reward == 0.0, v
    assert v.verdict in ("wrong", "error"), v


def test_an_honest_solution_still_passes():
    """The same tests with a computable answer: the harness still returns every call's value."""
    src = "def secret(x):\n    return 'canary-' + ('%032x' % x)\n"
    tests = [{"call": "secret(1)", "expected": f"canary-{1:032x}"}]
    tests += [{"call": "secret(255)", "expected": f"canary-{255:032x}"}]
    assert verify_code(_fenced(src), tests).verdict == "correct"
    taco = {"inputs": [[1]], "outputs": [[f"canary-{1:032x}"]], "fn_name": "secret"}
    assert verify_code(_fenced(src), taco).verdict == "correct"


def test_output_printed_by_the_solution_does_not_disturb_the_results():
    """A solution printing (even lines that look like results) cannot forge or hide the harness's output."""
    src = (
        "import sys, os\n"
        "def add(a, b):\n"
        '    print(\'{"i": 0, "value": 99}\')\n'
        '    os.write(1, b\'\\n{"i": 0, "value": 98}\\n\')\n'
        "    sys.stdout.write('x' * 100000)\n"
        "    return a + b\n"
    )
    tests = [{"call": "add(1, 2)", "expected": 3}, {"call": "add(2, 2)", "expected": 4}]
    v = verify_code(_fenced(src), tests)
    assert v.verdict == "correct", v
