"""A corpus of hostile programs against the full guards: 0 escapes, as root (the reward workers) and as a caller
that is not root (a user namespace with a mapped uid).

Each program tries its attack and prints "ESCAPED: ..." when it believes it worked; the test also looks from
outside: files next to and far from the work directory, connections its servers accepted, a sentinel process
the program tries to signal and trace, processes left behind. The programs run concurrently (a thread each:
most of their time is spent waiting on the kernel)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from trainers.common.sandbox import processes_of_uid, run_python

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")
ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parents[2]
NON_ROOT_UID = 1989999999  # the caller's uid in the non-root run (outside the sandboxes' uid range)

# ------------------------------------------------------------------------------------------------ corpus
# Format fields: {token} {victim} {secret_file} {canary_reversed} {ports} {abstract} {sentinel}

FILE_WRITES = r"""
import os
hits = []
targets = ["{victim}", "/tmp/orlab_pwned_{token}", "/var/tmp/orlab_pwned_{token}", "/root/orlab_pwned_{token}",
           "/work/orlab_pwned_{token}", "../orlab_pwned_{token}", "../../orlab_pwned_{token}", "/orlab_pwned_{token}",
           "/etc/orlab_pwned_{token}", "/usr/orlab_pwned_{token}", "/dev/orlab_pwned_{token}",
           "/proc/orlab_pwned_{token}", "/etc/ld.so.cache"]
for path in targets:
    try:
        with open(path, "a") as f:
            f.write("pwned")
        hits.append(path)
    except OSError:
        pass
for target in ("{victim}", "/etc/ld.so.cache", "/usr/bin/env"):
    for kind, make in (("symlink", os.symlink), ("hardlink", os.link)):
        try:
            make(target, "link")
            with open("link", "a") as f:
                f.write("pwned")
            hits.append(kind + " to " + target)
        except OSError:
            pass
        try:
            os.unlink("link")
        except OSError:
            pass
# Through a new executable (the old fallback's audit hook did not see _posixsubprocess).
import subprocess
try:
    subprocess.run(["/bin/sh", "-c", "echo pwned >> {victim}; echo pwned > /tmp/orlab_pwned_{token}"], timeout=5,
                   stderr=subprocess.DEVNULL)
except Exception:
    pass
for path in ("/", "/usr", "/etc", "/tmp", "/dev"):
    try:
        os.mkdir(path + "/orlab_pwned_dir_{token}")
        hits.append("mkdir in " + path)
    except OSError:
        pass
print("ESCAPED: wrote " + ", ".join(hits) if hits else "contained")
"""

FILE_READS = r"""
import os
canary = "{canary_reversed}"[::-1].encode()  # (the canary itself is not in this program's text)
found = []
for path in ("{secret_file}", "/etc/shadow", "/etc/hostname", "/root/.bash_history", "/work/main/pyproject.toml",
             "/proc/1/environ", "/proc/1/cmdline", "/proc/1/root/etc/hostname", "/proc/1/mem",
             "/var/run/postgresql/15-main.pid", "/sys/kernel/notes", "/dev/vda", "/dev/mem"):
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 16)
        found.append(path if canary not in data else path + " (the canary)")
    except OSError:
        pass
listed = {{}}
for d in ("/work", "/home", "/tmp", "/var", "/root", "/srv", "/mnt", "/media", "/opt", "/run"):
    try:
        listed[d] = os.listdir(d)
    except OSError:
        pass
root_listing = sorted(os.listdir("/"))
# Everything readable, searched for the canary (bounded).
seen = 0
for top, dirs, files in os.walk("/"):
    dirs[:] = [d for d in dirs if (top, d) not in (("/", "proc"), ("/", "sys"), ("/", "dev"), ("/", "usr"))]
    for name in files:
        seen += 1
        if seen > 3000:
            break
        try:
            with open(os.path.join(top, name), "rb") as f:
                if canary in f.read(1 << 16):
                    found.append(os.path.join(top, name) + " (the canary)")
        except OSError:
            pass
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    for what in ("environ", "cmdline"):
        try:
            with open("/proc/%s/%s" % (pid, what), "rb") as f:
                if canary in f.read():
                    found.append("/proc/%s/%s (the canary)" % (pid, what))
        except OSError:
            pass
if canary.decode() in repr(dict(os.environ)):
    found.append("environment (the canary)")
bad = [f for f in found if "canary" in f or not f.startswith(("/proc/1/cmdline",))]
print(("ESCAPED: read " + ", ".join(bad)) if bad else "contained", listed, root_listing)
"""

NETWORK = r"""
import socket
hits = []
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    for port in {ports}:
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(1)
            s.connect((host, port))
            hits.append("%s:%d" % (host, port))
        except OSError:
            pass
for path in ("/var/run/postgresql/.s.PGSQL.5432", "/run/mysqld/mysqld.sock", "/tmp/.s.PGSQL.5432", "{abstract}"):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(1)
        s.connect(path)
        hits.append("unix " + repr(path))
    except OSError:
        pass
try:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.sendto(b"x", ("127.0.0.1", {ports}[-1]))
    hits.append("udp sent")
except OSError:
    pass
up = [name for _, name in socket.if_nameindex()]
print("ESCAPED: connected to " + ", ".join(hits) if hits else "contained", up)
"""

SIGNALS = r"""
import os, signal
hits = []
# The namespace's init (our parent) ignores what it has no handler for: judged from outside (the run's report).
for pid, sig in ((os.getppid(), signal.SIGKILL), (1, signal.SIGTERM), ({sentinel}, signal.SIGKILL)):
    try:
        os.kill(pid, sig)
        if pid == {sentinel}:
            hits.append("kill(%d, %d)" % (pid, sig))
    except OSError:
        pass
try:
    os.kill(-1, signal.SIGKILL)  # everything it may signal (never itself)
except OSError:
    pass
print("ESCAPED: signalled " + ", ".join(hits) if hits else "contained")
"""

PTRACE = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_ATTACH, PTRACE_SEIZE, PTRACE_DETACH = 16, 0x4206, 17
hits = []
for pid in {{os.getppid(), 1, {sentinel}}}:
    for req in (PTRACE_ATTACH, PTRACE_SEIZE):
        if libc.ptrace(req, pid, None, None) == 0:
            hits.append("ptrace(%d, %d)" % (req, pid))
            libc.ptrace(PTRACE_DETACH, pid, None, None)
for pid in (os.getppid(), 1):
    try:
        with open("/proc/%d/mem" % pid, "rb") as f:
            f.read(1)
        hits.append("/proc/%d/mem" % pid)
    except OSError:
        pass
print("ESCAPED: " + ", ".join(hits) if hits else "contained")
"""

NAMESPACES = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
hits = []
for name, flag in (("user", 0x10000000), ("user+mnt", 0x10020000), ("mnt", 0x20000), ("net", 0x40000000),
                   ("pid", 0x20000000), ("uts", 0x04000000), ("cgroup", 0x02000000)):
    if libc.unshare(flag) == 0:
        hits.append("unshare(" + name + ")")
for ns in ("mnt", "net", "pid", "user", "uts", "ipc", "cgroup"):
    try:
        fd = os.open("/proc/1/ns/" + ns, os.O_RDONLY)
        if libc.setns(fd, 0) == 0:
            hits.append("setns(" + ns + ")")
        os.close(fd)
    except OSError:
        pass
if libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None) == 0:
    hits.append("mount tmpfs")
if libc.mount(None, b"/", None, 32 | 4096, None) == 0:  # MS_REMOUNT | MS_BIND: read-write again
    hits.append("remount /")
if libc.umount2(b"/sandbox", 2) == 0:
    hits.append("umount /sandbox")
try:
    os.chroot("/usr")
    hits.append("chroot")
except OSError:
    pass
for path in ("/..", "/../..", "/sandbox/../../.."):
    if sorted(os.listdir(path)) != sorted(os.listdir("/")):
        hits.append("a root above / via " + path)
try:
    os.setuid(0)
    hits.append("setuid(0)")
except OSError:
    pass
print("ESCAPED: " + ", ".join(hits) if hits else "contained")
"""

FORK_BOMB = r"""
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""

MEMORY_TREE = r"""
import os, time
for i in range(6):
    if os.fork() == 0:
        block = bytearray(b"x") * (200 << 20)
        print("holding", i, flush=True)
        time.sleep(30)
        os._exit(0)
    time.sleep(0.2)
time.sleep(30)
"""

DAEMON = r"""
import os, signal, time
if os.fork() == 0:
    os.setsid()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.fork() == 0:
        for fd in (0, 1, 2):
            os.close(fd)
        time.sleep(5)
        os._exit(0)
    os._exit(0)
print("parent done")
"""

CORPUS = {
    "file-writes": (FILE_WRITES, {}),
    "file-reads": (FILE_READS, {"timeout_s": 15}),
    "network": (NETWORK, {}),
    "signals": (SIGNALS, {}),
    "ptrace": (PTRACE, {}),
    "namespaces": (NAMESPACES, {}),
    "fork-bomb": (FORK_BOMB, {"timeout_s": 1.5, "max_processes": 16}),
    "memory-tree": (MEMORY_TREE, {"timeout_s": 10, "memory_mb": 256}),
    "daemon": (DAEMON, {"timeout_s": 8}),
}
EXPECTED_STATUS = {"fork-bomb": "timeout", "memory-tree": "memory"}


# ------------------------------------------------------------------------------------------ host fixtures


class Host:
    """What the programs attack from outside: files, servers, a sentinel process; and the checks after."""

    def __init__(self, owner: int | None = None):
        self.token = uuid.uuid4().hex
        self.canary = "canary-" + uuid.uuid4().hex
        self.dir = Path(tempfile.mkdtemp(prefix="orlab-hostile-"))
        os.chmod(self.dir, 0o755)
        self.victim = self.dir / "victim.txt"
        self.victim.write_text("original")
        self.secret = self.dir / "expected.json"
        self.secret.write_text(json.dumps({"expected": self.canary}))
        os.chmod(self.secret, 0o644)
        if owner is not None:
            os.chown(self.dir, owner, owner)
            os.chown(self.victim, owner, owner)
        self.accepted: list = []
        self._stop = threading.Event()
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.abstract_name = f"\0orlab-hostile-{self.token}"
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind(self.abstract_name)
        self.unix.listen(4)
        self._threads = [
            threading.Thread(target=self._serve, args=(s,), daemon=True) for s in (self.tcp, self.unix)
        ]
        for t in self._threads:
            t.start()
        self.sentinel = subprocess.Popen(
            ["sleep", "120"], user=owner if owner is not None else None, start_new_session=True
        )

    def _serve(self, server: socket.socket) -> None:
        server.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, addr = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(addr)
            conn.close()

    def params(self) -> dict:
        return {
            "token": self.token,
            "victim": str(self.victim),
            "secret_file": str(self.secret),
            "canary_reversed": self.canary[::-1],
            "ports": [6379, 5432, self.tcp.getsockname()[1]],
            "abstract": self.abstract_name.replace("\0", "\\0"),
            "sentinel": self.sentinel.pid,
        }

    def programs(self) -> dict:
        p = self.params()
        return {name: (src.format(**p), kwargs) for name, (src, kwargs) in CORPUS.items()}

    def escapes(self, results: dict) -> list[str]:
        """Every sign of an escape, from the programs' own reports and from outside."""
        out = []
        for name, res in results.items():
            if "ESCAPED" in res["stdout"]:
                out.append(f"{name}: {res['stdout'].strip()[:500]}")
            want = EXPECTED_STATUS.get(name, "ok")
            if res["status"] != want:
                out.append(
                    f"{name}: status {res['status']} ({res['detail']}), expected {want}: {res['stderr'][-800:]}"
                )
            if self.canary in res["stdout"] + res["stderr"]:
                out.append(f"{name}: the canary came out")
            if res["guards"].get("mode") != "full":
                out.append(f"{name}: ran without the full guards: {res['guards'].get('missing')}")
        if self.victim.read_text() != "original":
            out.append("the victim file was changed")
        for path in (
            f"/tmp/orlab_pwned_{self.token}",
            f"/var/tmp/orlab_pwned_{self.token}",
            f"/root/orlab_pwned_{self.token}",
            f"/work/orlab_pwned_{self.token}",
            f"/orlab_pwned_{self.token}",
            f"/tmp/orlab_pwned_dir_{self.token}",
        ):
            if os.path.exists(path):
                out.append(f"{path} was created")
        out += [
            f"a stray file {p}"
            for p in Path(tempfile.gettempdir()).glob(f"orlab-sbx-*/**/orlab_pwned_{self.token}")
        ]
        time.sleep(0.1)
        if self.accepted:
            out.append(f"the host's servers accepted {self.accepted}")
        if self.sentinel.poll() is not None:
            out.append("the sentinel process was killed")
        else:
            with open(f"/proc/{self.sentinel.pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            if state in ("t", "T"):
                out.append("the sentinel process was stopped (traced)")
        memory = results.get("memory-tree", {})
        if memory and memory["stdout"].count("holding") >= 6:
            out.append("six children held 1.2 GB")
        return out

    def close(self) -> None:
        self._stop.set()
        self.sentinel.kill()
        self.sentinel.wait()
        for t in self._threads:
            t.join(timeout=2)
        self.tcp.close()
        self.unix.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _result_dict(res) -> dict:
    return {
        "status": res.status,
        "detail": res.detail,
        "stdout": res.stdout,
        "stderr": res.stderr,
        "guards": res.guards,
        "uid": res.uid,
    }


def run_corpus(programs: dict) -> dict:
    """Every program of the corpus, four at a time."""
    with ThreadPoolExecutor(4) as pool:
        futures = {name: pool.submit(run_python, src, **kwargs) for name, (src, kwargs) in programs.items()}
        return {name: _result_dict(f.result()) for name, f in futures.items()}


def test_hostile_corpus_has_no_escape_under_the_full_guards(monkeypatch):
    host = Host()
    try:
        monkeypatch.setenv("ORLAB_HOSTILE_CANARY", host.canary)  # the caller's environment holds it too
        results = run_corpus(host.programs())
        escapes = host.escapes(results)
        assert escapes == [], "\n".join(escapes)
        if ROOT:  # every run had its own uid, and nothing of it is left
            uids = {r["uid"] for r in results.values()}
            assert None not in uids and len(uids) == len(results)
            assert [processes_of_uid(uid) for uid in uids] == [[]] * len(uids)
    finally:
        host.close()
    # The host still forks fine after the fork bomb.
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7


# ------------------------------------------------------------------------------------------------ not root

_NON_ROOT_RUNNER = r"""
import json, sys
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, sys.argv[1])
from trainers.common.sandbox import run_python

programs = json.load(sys.stdin)
with ThreadPoolExecutor(4) as pool:
    futures = {name: pool.submit(run_python, src, **kwargs) for name, (src, kwargs) in programs.items()}
    out = {}
    for name, f in futures.items():
        r = f.result()
        out[name] = {"status": r.status, "detail": r.detail, "stdout": r.stdout, "stderr": r.stderr,
                     "guards": r.guards, "uid": r.uid}
print(json.dumps(out))
"""


def _system_python() -> str | None:
    """An interpreter every user may run (the test's own may live under /root)."""
    for candidate in (os.path.realpath(sys.executable), shutil.which("python3") or "", "/usr/bin/python3"):
        path = Path(candidate)
        if candidate and path.exists() and all(p.stat().st_mode & 0o001 for p in [path, *path.parents]):
            return candidate
    return None


def _copy_sandbox_package(into: Path) -> None:
    """The sandbox modules (standard library only) where an unprivileged user can read them."""
    common = into / "trainers" / "common"
    common.mkdir(parents=True)
    (into / "trainers" / "__init__.py").write_text("")
    (common / "__init__.py").write_text("")
    for path in (REPO / "trainers" / "common").glob("sandbox*.py"):
        shutil.copy(path, common / path.name)
    for path in [into, *into.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)


@pytest.mark.skipif(not ROOT, reason="switching to an unprivileged caller needs root")
def test_hostile_corpus_has_no_escape_for_a_caller_that_is_not_root():
    """A worker that is not root gets the full guards from a user namespace: the program has the worker's uid
    outside, so the pid namespace, the root and the network namespace are what protect the worker's files,
    processes (the sentinel is the worker's) and servers."""
    python = _system_python()
    if python is None:
        pytest.skip("no interpreter every user may run")
    package = Path(tempfile.mkdtemp(prefix="orlab-sbx-pkg-"))
    host = Host(owner=NON_ROOT_UID)
    try:
        _copy_sandbox_package(package)
        os.chmod(package, 0o755)
        caller = subprocess.run(
            [python, "-c", _NON_ROOT_RUNNER, str(package)],
            input=json.dumps(host.programs()),
            capture_output=True,
            text=True,
            user=NON_ROOT_UID,
            group=NON_ROOT_UID,
            extra_groups=[],
            env={"PATH": "/usr/bin:/bin", "ORLAB_HOSTILE_CANARY": host.canary},
            cwd="/",
            timeout=120,
        )
        assert caller.returncode == 0, caller.stderr[-3000:]
        results = json.loads(caller.stdout)
        for res in results.values():
            assert res["guards"]["userns"] and not res["guards"]["uid_drop"], res["guards"]
        escapes = host.escapes(results)
        assert escapes == [], "\n".join(escapes)
        left = [p for p in processes_of_uid(NON_ROOT_UID) if p != host.sentinel.pid]
        assert left == []
    finally:
        host.close()
        shutil.rmtree(package, ignore_errors=True)
