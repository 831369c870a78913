"""The code sandbox against hostile programs: time, processes, memory, files, network, secrets, output."""

from __future__ import annotations

import glob
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from trainers.common.sandbox import processes_of_uid, run_python

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="the uid drop and the per-run uid need root")
ALLOWED_ENV = {"PATH", "LANG", "HOME", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED"}


def assert_nothing_left(res) -> None:
    """No process of the run's uid survives it (the run's uid is its own when the caller is root)."""
    if ROOT:
        assert res.guards["per_run_uid"], res.guards
        assert res.uid is not None
        assert processes_of_uid(res.uid) == []


# --------------------------------------------------------------------------------------- normal programs


def test_stdin_is_fed_and_stdout_captured():
    res = run_python("import sys\nfor line in sys.stdin:\n    print(line.strip()[::-1])", stdin="abc\nxyz\n")
    assert res.status == "ok", res
    assert res.returncode == 0
    assert res.stdout == "cba\nzyx\n"
    assert res.stderr == ""
    assert res.wall_s < 5


@pytest.mark.parametrize(
    ("source", "status", "returncode", "in_stderr"),
    [
        ("print('fine')", "ok", 0, ""),
        ("import sys; sys.exit(3)", "error", 3, ""),
        ("raise ValueError('boom')", "error", 1, "ValueError: boom"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "killed", -11, ""),
    ],
)
def test_exit_status_is_reported(source, status, returncode, in_stderr):
    res = run_python(source)
    assert res.status == status, res
    assert res.returncode == returncode
    assert in_stderr in res.stderr


def test_stdlib_works_and_hashing_is_deterministic():
    src = "import collections, fractions, heapq, itertools, json\nprint(json.dumps(sorted(itertools.permutations([1, 2]))), hash('orlab'))"
    first, second = run_python(src), run_python(src)
    assert first.status == "ok", first
    assert first.stdout.startswith("[[1, 2], [2, 1]] ")
    assert first.stdout == second.stdout  # PYTHONHASHSEED=0 is honoured


def test_devices_threads_and_multiprocessing_work():
    src = (
        "import multiprocessing, os, threading\n"
        "open('/dev/null', 'w').write('x')\n"
        "print(len(open('/dev/urandom', 'rb').read(8)), len(os.urandom(4)))\n"
        "threads = [threading.Thread(target=lambda: None) for _ in range(8)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "if __name__ == '__main__':\n"
        "    with multiprocessing.Pool(2) as pool:\n"
        "        print(pool.map(abs, [-1, -2]))\n"
    )
    res = run_python(src, timeout_s=10)
    assert res.status == "ok", res
    assert res.stdout == "8 4\n[1, 2]\n"


def test_rlimits_are_applied_inside():
    src = (
        "import resource, json\n"
        "print(json.dumps({n: resource.getrlimit(getattr(resource, n))[0] for n in "
        "['RLIMIT_AS', 'RLIMIT_NPROC', 'RLIMIT_NOFILE', 'RLIMIT_FSIZE', 'RLIMIT_CORE', 'RLIMIT_CPU']}))"
    )
    res = run_python(src, memory_mb=300, max_processes=20, max_open_files=50, max_file_mb=3, timeout_s=4)
    assert res.status == "ok", res
    assert json.loads(res.stdout) == {
        "RLIMIT_AS": 300 << 20,
        "RLIMIT_NPROC": 20,
        "RLIMIT_NOFILE": 50,
        "RLIMIT_FSIZE": 3 << 20,
        "RLIMIT_CORE": 0,
        "RLIMIT_CPU": 5,
    }
    assert res.guards["rlimits"]


def test_guards_active_on_this_machine():
    res = run_python("print(1)")
    assert res.status == "ok", res
    assert res.guards["mode"] == "full" and res.guards["missing"] == [], res.guards
    assert res.guards["rlimits"] and res.guards["no_new_privs"] and res.guards["caps_dropped"]
    assert res.guards["network"] == "netns" and not res.weak_network_guard
    assert res.guards["netns"] and res.guards["pidns"] and res.guards["mntns"], res.guards
    assert res.guards["ro_root"] and res.guards["private_workdir"] and res.guards["proc_private"]
    assert not res.guards["audit_hook"]
    if ROOT:  # root drops to the per-run uid; other callers get a user namespace
        assert res.guards["uid_drop"] and res.guards["per_run_uid"]
    else:
        assert res.guards["userns"]


@needs_root
def test_program_runs_as_its_own_unprivileged_uid():
    res = run_python("import os\nprint(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())")
    assert res.status == "ok", res
    uid, euid, gid, groups = res.stdout.split(" ", 3)
    assert int(uid) == int(euid) == res.uid != 0
    assert int(gid) != 0
    assert groups.strip() == "[]"


@needs_root
def test_concurrent_runs_get_distinct_uids():
    results = []

    def one():
        results.append(run_python("import time; time.sleep(0.3); print('ok')"))

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status for r in results] == ["ok"] * 4, results
    assert len({r.uid for r in results}) == 4


def test_work_directory_is_removed():
    pattern = os.path.join(tempfile.gettempdir(), "orlab-sbx-*")
    before = set(glob.glob(pattern))
    res = run_python("open('scratch.txt', 'w').write('x' * 1000); print(open('scratch.txt').read()[:3])")
    assert res.status == "ok", res
    assert res.stdout == "xxx\n"
    assert set(glob.glob(pattern)) - before == set()


# --------------------------------------------------------------------------------------- hostile programs


@pytest.mark.slow
@pytest.mark.parametrize(
    "source", ["while True:\n    pass", "import time\ntime.sleep(3600)"], ids=["busy", "sleep"]
)
def test_endless_program_is_stopped_at_the_wall_clock_limit(source):
    t0 = time.monotonic()
    res = run_python(source, timeout_s=1.5)
    elapsed = time.monotonic() - t0
    assert res.status == "timeout", res
    assert res.timed_out
    assert 1.5 <= res.wall_s < 3.5
    assert elapsed < 4.0
    assert_nothing_left(res)


FORK_COUNTER = """
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(3600)
            os._exit(0)
        n += 1
except OSError as e:
    print("capped", n, flush=True)
time.sleep(3600)
"""

FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


@pytest.mark.slow
def test_fork_bomb_is_capped_and_every_child_killed():
    res = run_python(FORK_COUNTER, timeout_s=2, max_processes=16)
    assert res.status == "timeout", res
    assert res.stdout.startswith("capped "), res
    assert int(res.stdout.split()[1]) < 16  # RLIMIT_NPROC: the program itself counts too
    assert res.wall_s < 5
    assert_nothing_left(res)


@pytest.mark.slow
@pytest.mark.parametrize("disable", [(), ("pidns",)], ids=["pidns", "no-pidns"])
def test_classic_fork_bomb_leaves_nothing_behind(disable):
    res = run_python(FORK_BOMB, timeout_s=1.5, max_processes=16, disable=disable, allow_weak=True)
    assert res.status == "timeout", res
    assert res.wall_s < 5
    assert_nothing_left(res)
    # The host still forks fine.
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7


@pytest.mark.parametrize(
    "source",
    [
        "x = bytearray(16 * 1024 ** 3)",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024 ** 2))",
    ],
    ids=["one-huge-block", "growing"],
)
def test_memory_bomb_hits_the_memory_limit(source):
    res = run_python(source, memory_mb=256, timeout_s=10)
    assert res.status == "memory", res
    assert "MemoryError" in res.stderr
    assert res.wall_s < 8
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB: the caller did not grow
    assert usage < 2 * 1024 * 1024


@pytest.mark.parametrize("disable", [(), ("mntns",)], ids=["chroot", "fallback"])
def test_writing_outside_the_work_directory_fails(disable):
    token = uuid.uuid4().hex
    targets = [
        f"/tmp/orlab_pwned_{token}",
        f"/root/orlab_pwned_{token}",
        f"../orlab_pwned_{token}",
        f"/var/tmp/orlab_pwned_{token}",
    ]
    src = f"""
import json, os
out = {{}}
for path in {targets!r}:
    try:
        with open(path, "w") as f:
            f.write("pwned")
        out[path] = "WROTE"
    except OSError as e:
        out[path] = type(e).__name__
try:
    os.mkdir("/tmp/orlab_pwned_dir_{token}")
    out["mkdir"] = "WROTE"
except OSError as e:
    out["mkdir"] = type(e).__name__
with open("inside.txt", "w") as f:
    f.write("mine")
out["inside"] = open("inside.txt").read()
print(json.dumps(out))
"""
    res = run_python(src, disable=disable, allow_weak=True)
    assert res.status == "ok", res
    out = json.loads(res.stdout)
    assert out.pop("inside") == "mine"
    assert "WROTE" not in out.values(), out
    for path in [*targets, f"/tmp/orlab_pwned_dir_{token}"]:
        assert not os.path.exists(path)
    assert not glob.glob(os.path.join(tempfile.gettempdir(), "orlab-sbx-*", f"orlab_pwned_{token}"))
    expected = "read-only root" if not disable else "audit hook (best effort)"
    assert expected in res.guards["filesystem"]


@pytest.fixture
def local_server():
    """A TCP server on 127.0.0.1 (ephemeral port) that records every connection it accepts."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(addr)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(timeout=2)
    server.close()


def test_local_server_fixture_sees_connections(local_server):
    port, accepted = local_server
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    deadline = time.monotonic() + 2
    while not accepted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(accepted) == 1


@pytest.mark.parametrize("disable", [(), ("netns",)], ids=["netns", "fallback"])
def test_no_network_access(local_server, disable):
    port, accepted = local_server
    src = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2)
    print("CONNECTED")
except Exception as e:
    print("refused", type(e).__name__, e)
"""
    res = run_python(src, disable=disable, allow_weak=True)
    assert res.status == "ok", res
    assert res.stdout.startswith("refused"), res.stdout
    time.sleep(0.2)
    assert accepted == []
    if disable:
        assert res.guards["network"] == "audit hook (best effort)" and res.weak_network_guard
    else:
        assert res.guards["network"] == "netns" and not res.weak_network_guard


def test_environment_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("ORLAB_TEST_SECRET_TOKEN", "hunter2-" + uuid.uuid4().hex)
    secret = os.environ["ORLAB_TEST_SECRET_TOKEN"]
    src = "import json, os\nprint(json.dumps(dict(os.environ)))\nprint(open('/proc/self/environ', 'rb').read().decode(errors='replace'))"
    res = run_python(src)
    assert res.status == "ok", res
    env = json.loads(res.stdout.splitlines()[0])
    assert set(env) <= ALLOWED_ENV
    assert "ORLAB_TEST_SECRET_TOKEN" not in env
    assert secret not in res.stdout and secret not in res.stderr


def test_large_output_is_truncated():
    res = run_python(
        "import sys\nsys.stdout.write('x' * (5 << 20))\nsys.stderr.write('e' * (3 << 20))",
        max_output_bytes=1 << 20,
    )
    assert res.status == "ok", res
    assert res.stdout_truncated and res.stderr_truncated
    assert len(res.stdout) == 1 << 20 and set(res.stdout) == {"x"}
    assert len(res.stderr) == 1 << 20


def test_file_size_and_open_file_limits():
    big = run_python(
        "f = open('big.bin', 'wb')\nf.write(b'0' * (4 << 20))\nf.close()\nprint('done')", max_file_mb=1
    )
    assert big.status == "error", big
    assert "File too large" in big.stderr and "done" not in big.stdout
    fds = run_python(
        "import os\nfds = [os.open('/dev/null', os.O_RDONLY) for _ in range(200)]", max_open_files=32
    )
    assert fds.status == "error", fds
    assert "Too many open files" in fds.stderr


def _sandbox_pids() -> set[int]:
    """Host pids running as one of the sandbox's per-run uids."""
    from trainers.common.sandbox import UID_BASE, UID_SLOTS

    found = set()
    for status in glob.glob("/proc/[0-9]*/status"):
        try:
            with open(status) as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration, ValueError):
            continue
        if UID_BASE <= uid < UID_BASE + UID_SLOTS:
            found.add(int(status.split("/")[2]))
    return found


@needs_root
def test_killing_the_caller_kills_its_sandbox():
    """A reward worker killed for overrunning must not leave its sandboxed program running."""
    before = _sandbox_pids()
    dirs_before = set(glob.glob(os.path.join(tempfile.gettempdir(), "orlab-sbx-*")))
    code = (
        "from trainers.common.sandbox import run_python\n"
        "run_python('import time\\ntime.sleep(3600)', timeout_s=60)\n"
    )
    caller = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 20
        while not (_sandbox_pids() - before) and time.monotonic() < deadline:
            time.sleep(0.05)
        started = _sandbox_pids() - before
        assert started, "the sandboxed program never started"
    finally:
        caller.kill()
        caller.wait()
    deadline = time.monotonic() + 5
    while (_sandbox_pids() & started) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [p for p in _sandbox_pids() & started if os.path.exists(f"/proc/{p}")]
    assert alive == []
    # The killed caller could not remove its work directory (the next run of that uid slot would).
    for leftover in set(glob.glob(os.path.join(tempfile.gettempdir(), "orlab-sbx-*"))) - dirs_before:
        shutil.rmtree(leftover, ignore_errors=True)


BACKGROUND = {
    "fork": "import os, time\nif os.fork() == 0:\n    time.sleep(3600)\nprint('parent done')",
    "setsid": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(3600)\nprint('parent done')",
    "daemon": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(3600)\n"
        "    os._exit(0)\nprint('parent done')"
    ),
    "subprocess": "import subprocess\nsubprocess.Popen(['sleep', '3600'], start_new_session=True)\nprint('parent done')",
}


@pytest.mark.parametrize("disable", [(), ("pidns",)], ids=["pidns", "no-pidns"])
@pytest.mark.parametrize("kind", sorted(BACKGROUND))
def test_background_child_outliving_its_parent_is_killed(kind, disable):
    res = run_python(BACKGROUND[kind], timeout_s=5, disable=disable, allow_weak=True)
    if disable:  # weak mode: no new process at all
        assert res.status == "error", res
        assert "disabled in this sandbox" in res.stderr
    else:
        assert res.status == "ok", res
        assert res.stdout == "parent done\n"
    assert res.wall_s < 3  # neither waiting for the child nor for the deadline
    assert_nothing_left(res)
