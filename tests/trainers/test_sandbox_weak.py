"""Weak mode (no namespaces, opted in): best effort, but the known ways around the old audit-hook fallback are
closed, the hook cannot be switched off from inside, ordinary programs still run, and the run says it was weak.

Every attempt runs in one program (one sandbox start) and prints "blocked" or "OPEN" for each."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from trainers.common.sandbox import run_python

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")
NO_NAMESPACES = ("netns", "pidns", "mntns", "userns")

ATTEMPTS = r"""
import json, os, sys
results = {{}}

def attempt(name, fn):
    try:
        fn()
        results[name] = "OPEN"
    except BaseException as e:
        results[name] = "blocked" if "sandbox" in str(e) else "blocked (%s: %s)" % (type(e).__name__, e)

OUTSIDE = "{outside}"
SECRET = "{secret}"

def posixsubprocess():
    import _posixsubprocess  # the path the old fallback left open
    _posixsubprocess.fork_exec

def subprocess_run():
    import subprocess
    subprocess.run(["/bin/sh", "-c", "echo pwned > " + OUTSIDE])

def posix_spawn():
    os.posix_spawn("/bin/sh", ["sh", "-c", "echo pwned > " + OUTSIDE], {{}})

def fork():
    if os.fork() == 0:
        os._exit(0)

def forkpty():
    pid, fd = os.forkpty()
    if pid == 0:
        os._exit(0)

def system():
    os.system("echo pwned > " + OUTSIDE)

def execv():
    os.execv("/bin/sh", ["sh", "-c", "echo pwned > " + OUTSIDE])

def ctypes_load():
    import ctypes
    ctypes.CDLL(None)

def ctypes_private():
    import _ctypes

def socket_create():
    import socket
    socket.socket(socket.AF_INET, socket.SOCK_STREAM)

def socket_lookup():
    import socket
    socket.getaddrinfo("localhost", 80)

def write_outside():
    open(OUTSIDE, "w").write("pwned")

def read_secret():
    open(SECRET).read()

def list_root():
    os.listdir("/")

def read_other_process():
    open("/proc/%d/environ" % os.getppid(), "rb").read()

def write_own_memory():
    open("/proc/self/mem", "r+b")

def symlink_out():
    os.symlink(OUTSIDE, "link")
    open("link", "w").write("pwned")

def hardlink_out():
    os.link(SECRET, "hard")

def dir_fd_escape():
    fd = os.open(os.path.dirname(OUTSIDE), os.O_RDONLY)
    os.open(os.path.basename(OUTSIDE), os.O_WRONLY | os.O_CREAT, dir_fd=fd)

def pathlike_swap():
    class Sneaky:
        n = 0
        def __fspath__(self):
            Sneaky.n += 1
            return "inside.txt" if Sneaky.n == 1 else OUTSIDE
    open(Sneaky(), "w").write("pwned")
    if not os.path.exists(OUTSIDE):
        raise RuntimeError("no escape, but no refusal either: not in this sandbox's way")

def str_subclass():
    class S(str):
        pass
    open(S(OUTSIDE), "w").write("pwned")

def patched_helpers():
    import builtins, os.path, posixpath
    saved = os.path.realpath, builtins.isinstance, builtins.type, builtins.any
    os.path.realpath = posixpath.realpath = lambda p, **k: os.getcwd() + "/x"
    builtins.isinstance = builtins.any = lambda *a: True
    builtins.type = lambda *a: str
    try:
        open(OUTSIDE, "w").write("pwned")
    finally:
        os.path.realpath = posixpath.realpath = saved[0]
        builtins.isinstance, builtins.type, builtins.any = saved[1:]

def signal_parent():
    os.kill(os.getppid(), 0)

def gc_scan():
    import gc
    gc.get_objects()

def _guard_globals():
    frame = sys._getframe()
    while "_resolve" not in frame.f_globals:
        frame = frame.f_back
    return frame.f_globals

def rewrite_guard_code():
    _guard_globals()["_resolve"].__code__ = (lambda path, *a: os.getcwd()).__code__

def rewrite_guard_defaults():
    resolve = _guard_globals()["_resolve"]
    resolve.__defaults__ = (lambda: os.getcwd(),) + resolve.__defaults__[1:]

def patched_guard_globals():
    g = _guard_globals()
    for name in list(g):
        if name.startswith("_DENY") or name.startswith("_PATH"):
            g[name] = frozenset()
    if os.fork() == 0:
        os._exit(0)

def build_code():
    compile("1", "x", "eval").replace(co_consts=(2,))

def unmarshal():
    import marshal
    marshal.loads(marshal.dumps(compile("1", "x", "eval")))

def trace():
    sys.settrace(lambda *a: None)

def subinterpreter():
    import _xxsubinterpreters

def shared_memory():
    from multiprocessing import shared_memory

for name, fn in list(globals().items()):
    if callable(fn) and getattr(fn, "__module__", None) == "__main__" and not name.startswith(("attempt", "_")):
        attempt(name, fn)
print(json.dumps(results))
"""

ORDINARY = r"""
import collections, dataclasses, decimal, fractions, functools, heapq, itertools, json, math, re, random, string
import sys, tempfile
Point = collections.namedtuple("Point", "x y")

@dataclasses.dataclass
class Box:
    n: int

@functools.lru_cache(None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

with open("scratch.txt", "w") as f:
    f.write("kept")
with tempfile.TemporaryFile() as t:
    t.write(b"x")
nums = [int(x) for x in sys.stdin.read().split()]
print(sum(nums), fib(30), Point(1, 2).x, Box(3).n, str(fractions.Fraction(1, 3)), open("scratch.txt").read(),
      heapq.nsmallest(1, nums)[0], re.sub("a", "b", "aa"), str(decimal.Decimal("1.5") * 2))
"""


@pytest.fixture
def outside():
    """A file outside the work directory the program must not create, and a secret it must not read."""
    folder = Path(tempfile.mkdtemp(prefix="orlab-weak-"))
    os.chmod(folder, 0o777)
    secret = folder / "expected.json"
    secret.write_text(json.dumps({"expected": uuid.uuid4().hex}))
    os.chmod(secret, 0o644)
    yield folder / f"pwned-{uuid.uuid4().hex}", secret
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()


def test_weak_mode_closes_the_known_bypasses(outside):
    target, secret = outside
    res = run_python(
        ATTEMPTS.format(outside=target, secret=secret), disable=NO_NAMESPACES, allow_weak=True, timeout_s=15
    )
    assert res.status == "ok", res
    results = json.loads(res.stdout)
    assert len(results) >= 30
    assert {name: r for name, r in results.items() if r != "blocked"} == {}
    assert not target.exists()
    assert res.guards["mode"] == "weak" and res.guards["audit_hook"]
    assert res.guards["network"] == "audit hook (best effort)"


def test_weak_mode_runs_ordinary_programs():
    res = run_python(ORDINARY, stdin="5 3 9", disable=NO_NAMESPACES, allow_weak=True, timeout_s=15)
    assert res.status == "ok", res
    assert res.stdout.split() == ["17", "832040", "1", "3", "1/3", "kept", "3", "bb", "3.0"]
