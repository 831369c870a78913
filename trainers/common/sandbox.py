"""Run model-written Python programs in a throw-away, network-less, resource-limited process.

The full guards (what code scoring needs; `require_sandbox()` refuses to go on without them):

* network: a new, empty network namespace (no interface is up: even 127.0.0.1 is unreachable);
* processes: a new pid namespace (the program sees and signals only its own processes; when it ends, the kernel
  kills every process left in it);
* file system: a new mount namespace whose root is a read-only tmpfs holding the system's library directories,
  a few files of /etc and the interpreter (read-only binds), the host's tree unmounted (pivot_root), the program
  chrooted one level below (so it may not create user namespaces); its work directory /sandbox is a private
  tmpfs of a fixed size (the disk limit) that vanishes with the run;
* identity: as root (how the reward workers run) the program runs as a per-run uid (ORLAB_SANDBOX_UID_BASE + a
  slot held with flock, one per concurrent run: RLIMIT_NPROC is a per-run budget and every process of the run
  can be found and killed; "nobody", shared, if that uid range is not mapped); not as root, in a user namespace
  with the caller's uid mapped to uid 1000 (the program holds no capability anywhere);
* limits: rlimits (CPU, address space per process, processes, file size, open files, no core), an empty
  capability bounding set, no_new_privs, a wall-clock deadline, the parent-death signal (killing a reward worker
  takes its sandboxes with it), and a memory limit for the whole process tree (trainers/common/sandbox_limits.py:
  a cgroup v2 where one is usable, else a watchdog over the tree's resident memory).

When a guard is missing (no namespaces in this container, say) a run is refused with an error naming what is
missing, unless the operator opts in with ORLAB_SANDBOX_ALLOW_WEAK=1: the program then runs under an audit hook
(trainers/common/sandbox_audit.py), which is best effort and no security boundary. Its work directory is then on
the host's disk, bounded by RLIMIT_FSIZE per file and a watchdog on the directory's size. Every result reports
the guards it ran under (`SandboxResult.guards`); `sandbox_guards()` describes this machine's, for a run to
record. The process tree is in trainers/common/sandbox_launcher.py.

The program gets the interpreter's standard library only (no site-packages). Not covered: seccomp (the kernel's
system-call surface is the one an unprivileged user has)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from trainers.common.sandbox_limits import MemoryCgroup, descendants, dir_size, tree_memory

__all__ = [
    "ALLOW_WEAK_ENV",
    "SandboxResult",
    "SandboxUnavailable",
    "kill_uid",
    "processes_of_uid",
    "require_sandbox",
    "run_python",
    "sandbox_guards",
]

STATUSES = ("ok", "error", "timeout", "memory", "killed")
NOBODY = 65534
NOGROUP = 65534
UID_BASE = int(os.environ.get("ORLAB_SANDBOX_UID_BASE", "1990000000"))
UID_SLOTS = 1024
INNER_UID = INNER_GID = 1000  # the program's ids inside a user namespace (callers that are not root)
SANDBOX_DIR = "/sandbox"  # the work directory's path inside the sandbox's root
DEFAULT_MAX_OUTPUT = 1 << 20  # bytes kept per stream
ALLOW_WEAK_ENV = (
    "ORLAB_SANDBOX_ALLOW_WEAK"  # "1": run without the full guards (best effort), recorded as "weak"
)
DISABLE_ENV = "ORLAB_SANDBOX_DISABLE"  # guards to switch off, comma-separated: simulates a host without them
GUARD_SWITCHES = ("netns", "pidns", "mntns", "userns")
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives")
READ_ROOTS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")  # weak mode's readable trees
LAUNCHER_OVERHEAD = 64 << 20  # the launcher and the namespace's init, in the run's cgroup with the program
POLL_S = 0.02  # how often the watchdogs look
_HERE = Path(__file__).resolve().parent
_LAUNCHER_SRC = (_HERE / "sandbox_launcher.py").read_text(encoding="utf-8")
_AUDIT_SRC = (_HERE / "sandbox_audit.py").read_text(encoding="utf-8")


class SandboxUnavailable(RuntimeError):
    """The full guards are missing on this machine and weak mode was not allowed."""


@dataclass
class SandboxResult:
    status: str  # one of STATUSES
    returncode: int | None  # exit code, or -signal number, or None when unknown
    stdout: str
    stderr: str
    wall_s: float
    timed_out: bool = False
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    guards: dict = field(default_factory=dict)
    uid: int | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def weak(self) -> bool:
        return self.guards.get("mode") != "full"

    @property
    def weak_network_guard(self) -> bool:
        return self.guards.get("network") != "netns"


# ------------------------------------------------------------------------------------------- policy


def allow_weak_from_env() -> bool:
    return os.environ.get(ALLOW_WEAK_ENV, "").strip() == "1"


def _switched_off(disable: Collection[str]) -> set[str]:
    off = {d.strip() for d in os.environ.get(DISABLE_ENV, "").split(",") if d.strip()} | set(disable)
    unknown = off - set(GUARD_SWITCHES)
    if unknown:
        raise ValueError(f"unknown sandbox guards to disable: {sorted(unknown)} (known: {GUARD_SWITCHES})")
    return off


_guards_cache: dict[tuple, dict] = {}


def sandbox_guards(*, refresh: bool = False) -> dict:
    """The guards a program gets on this machine, as JSON-ready data for a run to record: "mode" ("full" or
    "weak"), "missing" (names), "allow_weak", "summary" (one line), and the details of `SandboxResult.guards`.
    Runs a trivial program once per process (and per setting of the two environment variables)."""
    key = (os.environ.get(DISABLE_ENV, ""), allow_weak_from_env())
    if refresh or key not in _guards_cache:
        res = run_python("pass", timeout_s=20, allow_weak=True)
        guards = dict(res.guards)
        if res.status != "ok":
            guards["mode"] = "unavailable"
            guards["missing"] = [*guards.get("missing", []), f"a working sandbox ({res.detail})"]
        guards["allow_weak"] = key[1]
        guards["summary"] = _summary(guards)
        _guards_cache[key] = guards
    return json.loads(json.dumps(_guards_cache[key]))


def require_sandbox() -> dict:
    """`sandbox_guards()` when programs may run here: the full guards, or weak mode opted into with
    ORLAB_SANDBOX_ALLOW_WEAK=1. Raises SandboxUnavailable, naming what is missing, otherwise."""
    guards = sandbox_guards()
    if guards["mode"] == "full" or (guards["mode"] == "weak" and guards["allow_weak"]):
        return guards
    raise SandboxUnavailable(
        "running model-written code needs the full sandbox; missing here: "
        + ", ".join(guards["missing"])
        + f". Set {ALLOW_WEAK_ENV}=1 to accept the weaker guards instead (best effort: an audit hook, which is "
        "no security boundary)."
    )


def _summary(g: dict) -> str:
    limits = f"memory: {g.get('memory', '?')}; disk: {g.get('disk', '?')}"
    if g.get("mode") == "full":
        return f"full: netns, pidns, mntns ({g.get('filesystem')}), {g.get('identity')}; {limits}"
    opted = "opted in with " + ALLOW_WEAK_ENV + "=1" if g.get("allow_weak") else "not allowed"
    return (
        f"{g.get('mode', 'weak').upper()} ({opted}; best effort, audit hooks are no security boundary): "
        f"missing {', '.join(g.get('missing', []))}; {limits}"
    )


# ----------------------------------------------------------------------------------------- helpers


def _id_mapped(map_path: str, ident: int) -> bool:
    try:
        lines = Path(map_path).read_text().split("\n")
    except OSError:
        return True  # no user namespaces: every id exists
    for line in lines:
        parts = line.split()
        if len(parts) == 3 and int(parts[0]) <= ident < int(parts[0]) + int(parts[2]):
            return True
    return False


def _python_prefixes() -> list[str]:
    """Directories the sandbox's interpreter needs (bound read-only into the chroot)."""
    exe = os.path.realpath(sys.executable)
    prefixes = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}
    if not any(exe.startswith(p + os.sep) for p in prefixes):
        prefixes.add(os.path.dirname(exe))
    covered = ("/usr/", "/bin/", "/lib/", "/lib64/", "/sbin/", "/etc/")
    return sorted(p for p in prefixes if not (p + "/").startswith(covered))


def _prefixes_of(interpreter: str) -> list[str]:
    """The directories holding `interpreter` and (by the usual layout) its standard library."""
    bin_dir = os.path.dirname(os.path.realpath(interpreter))
    return [bin_dir, os.path.dirname(bin_dir) + "/lib"]


def _world_executable(path: str) -> bool:
    """Can "others" reach and execute `path` (used when there is no chroot to bind the interpreter into)?"""
    p = Path(path)
    try:
        if not p.stat().st_mode & 0o001:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in p.parents)
    except OSError:
        return False


def _interpreter_for(uid_drop: bool) -> str:
    exe = os.path.realpath(sys.executable)
    if not uid_drop or _world_executable(exe):
        return exe
    for candidate in (f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}", "/usr/bin/python3"):
        if _world_executable(candidate):
            return candidate
    return exe


class _UidSlot:
    """A per-run uid, reserved across processes with flock on a file in a root-only directory."""

    def __init__(self):
        self.uid: int | None = None
        self.gid: int | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        if os.geteuid() != 0:
            return
        gid = NOGROUP if _id_mapped("/proc/self/gid_map", NOGROUP) else None
        if _id_mapped("/proc/self/uid_map", UID_BASE) and _id_mapped(
            "/proc/self/uid_map", UID_BASE + UID_SLOTS
        ):
            lock_dir = Path(tempfile.gettempdir()) / "orlab-sandbox-slots"
            lock_dir.mkdir(mode=0o700, exist_ok=True)
            st = lock_dir.stat()
            if st.st_uid == 0 and not st.st_mode & 0o022:
                start = (os.getpid() * 7919 + time.monotonic_ns()) % UID_SLOTS
                for i in range(UID_SLOTS):
                    slot = (start + i) % UID_SLOTS
                    fd = os.open(lock_dir / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        os.close(fd)
                        continue
                    self._fd, self.uid = fd, UID_BASE + slot
                    self.gid = gid if gid is not None else self.uid
                    # Leftovers of a run of this slot whose caller was killed (a reward worker that overran).
                    kill_uid(self.uid)
                    for stale in Path(tempfile.gettempdir()).glob(f"orlab-sbx-{self.tag}-*"):
                        shutil.rmtree(stale, ignore_errors=True)
                    return
        self.uid, self.gid = NOBODY, gid if gid is not None else NOBODY  # shared: no per-run sweep

    @property
    def tag(self) -> str:
        """Names this run's work directory: "u<uid>" for a held slot (so a stale one can be found)."""
        return f"u{self.uid}" if self._fd is not None else "shared"

    @property
    def exclusive(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def processes_of_uid(uid: int) -> list[int]:
    """Host pids whose real or effective uid is `uid` (zombies included)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        real, eff = line.split()[1:3]
                        if uid in (int(real), int(eff)):
                            pids.append(int(entry.name))
                        break
        except (OSError, ValueError):
            continue
    return pids


def kill_uid(uid: int, timeout: float = 2.0) -> int:
    """SIGKILL every process of `uid` until none is left (or `timeout`); returns how many were signalled."""
    killed = 0
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in processes_of_uid(uid) if not _is_zombie(p)]
        if not pids or time.monotonic() > deadline:
            return killed
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.01)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def _killpg(pgid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------- run


def run_python(
    source: str,
    *,
    stdin: str = "",
    timeout_s: float = 6,
    memory_mb: int = 512,
    max_processes: int = 32,
    max_file_mb: int = 16,
    max_disk_mb: int = 64,
    max_open_files: int = 64,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT,
    disable: Collection[str] = (),
    allow_weak: bool | None = None,
) -> SandboxResult:
    """Run `source` as a Python program under the guards described in the module docstring.

    `timeout_s` is wall-clock time for the whole run (interpreter start-up included); `memory_mb` bounds each
    process (RLIMIT_AS) and the whole process tree; `max_disk_mb` the work directory; stdout and stderr keep at
    most `max_output_bytes` each. Without the full guards the run is refused (status "error", the detail names
    what is missing) unless `allow_weak` (default: ORLAB_SANDBOX_ALLOW_WEAK=1). `disable` (and
    ORLAB_SANDBOX_DISABLE) switches guards off, as on a host without them: "netns", "pidns", "mntns", "userns".
    Never raises for anything the program does; a failure to set the sandbox up gives status "error" with the
    reason in `detail`."""
    t0 = time.monotonic()
    off = _switched_off(disable)
    weak_ok = allow_weak_from_env() if allow_weak is None else bool(allow_weak)
    limits = {
        "cpu": int(math.ceil(timeout_s)) + 1,
        "as": int(memory_mb) << 20,
        "nproc": int(max_processes),
        "fsize": min(int(max_file_mb), int(max_disk_mb)) << 20,
        "nofile": int(max_open_files),
        "disk": int(max_disk_mb) << 20,
        "inodes": 4096,
        "shm": min(int(max_file_mb), int(max_disk_mb), 16) << 20,
    }
    slot = _UidSlot()
    base = None
    try:
        slot.acquire()
        base = tempfile.mkdtemp(prefix=f"orlab-sbx-{slot.tag}-")
        os.chmod(base, 0o711)  # the program's uid may pass through (no mount namespace), not list it
        workdir = os.path.join(base, "work")
        os.mkdir(workdir, 0o700)
        os.mkdir(os.path.join(base, "root"), 0o700)  # mount point of the sandbox's root tmpfs
        Path(workdir, "main.py").write_text(source, encoding="utf-8")
        if slot.uid is not None:
            os.chown(workdir, slot.uid, slot.gid)
            os.chown(os.path.join(workdir, "main.py"), slot.uid, slot.gid)
        run = _Run(base, stdin, float(timeout_s), limits, max_output_bytes, off, weak_ok, slot)
        result = run.execute()
        if (
            result.status == "error"
            and result.returncode not in (None, 0)
            and "MemoryError" in result.stderr[-4000:]
        ):
            result.status, result.detail = "memory", f"memory limit of {memory_mb} MiB exceeded (one process)"
        result.wall_s = time.monotonic() - t0
        return result
    except Exception as e:  # setting the sandbox up failed: report it, never raise into the trainer
        return SandboxResult("error", None, "", "", time.monotonic() - t0, detail=f"sandbox: {e!r}")
    finally:
        if slot.exclusive:
            kill_uid(slot.uid)
        slot.release()
        if base is not None:
            shutil.rmtree(base, ignore_errors=True)


class _Run:
    """One sandboxed run, seen from the caller: start the launcher, feed it, collect its output and reports,
    watch the tree's memory and the work directory's size, and make sure nothing of it survives."""

    def __init__(self, base, stdin, timeout_s, limits, cap, off, weak_ok, slot):
        self.base, self.stdin, self.timeout_s, self.limits = base, stdin, timeout_s, limits
        self.cap, self.off, self.weak_ok, self.slot = cap, off, weak_ok, slot
        self.workdir = os.path.join(base, "work")
        self.uid_drop = os.geteuid() == 0 and slot.uid is not None
        self.tree_limit = limits["as"]  # the whole tree's memory: the same budget as one process
        self.cgroup: MemoryCgroup | None = None
        self.info: dict = {}
        self.killed_for = ""  # the watchdog's reason, once it killed the run
        self.kill_status = ""

    def config(self, info_w: int) -> dict:
        prefixes = _python_prefixes()
        return {
            "parent_pid": os.getpid(),
            "info_fd": info_w,
            "disable": sorted(self.off),
            "allow_weak": self.weak_ok,
            "newroot": os.path.join(self.base, "root"),
            "workdir": self.workdir,
            "sandbox_dir": SANDBOX_DIR,
            "python_prefixes": prefixes,
            "etc_files": list(ETC_FILES),
            "read_roots": sorted({*READ_ROOTS, *prefixes, *_prefixes_of(_interpreter_for(self.uid_drop))}),
            "uid": self.slot.uid if self.uid_drop else None,
            "gid": self.slot.gid if self.uid_drop else None,
            "inner_uid": INNER_UID,
            "inner_gid": INNER_GID,
            "hard_timeout": self.timeout_s + 2.0,
            "limits": self.limits,
            "cgroup_procs": self.cgroup.procs if self.cgroup is not None else None,
            # Inside the mount namespace our own interpreter is bound in; outside it, it must be one the
            # program's uid can reach.
            "interp_chroot": os.path.realpath(sys.executable),
            "interp_plain": _interpreter_for(self.uid_drop),
            # -s -S -B rather than -I: -I implies -E, which would ignore PYTHONHASHSEED (set orderings would then
            # vary between runs); the environment is ours anyway. -S skips site-packages; the stdlib is intact.
            "flags": ["-s", "-S", "-B"],
            "env": {  # nothing of ours: HOME is the work directory
                "PATH": "/usr/local/bin:/usr/bin:/bin",
                "LANG": "C.UTF-8",
                "HOME": SANDBOX_DIR,
                "PYTHONDONTWRITEBYTECODE": "1",
                "PYTHONHASHSEED": "0",
            },
            "audit_src": _AUDIT_SRC,
        }

    def execute(self) -> SandboxResult:
        t0 = time.monotonic()
        self.cgroup = MemoryCgroup.create(self.tree_limit + LAUNCHER_OVERHEAD)
        try:
            info_r, info_w = os.pipe()
            try:
                cfg = self.config(info_w)
                with tempfile.TemporaryFile() as stdin_file:
                    stdin_file.write(self.stdin.encode("utf-8"))
                    stdin_file.seek(0)
                    proc = subprocess.Popen(
                        [os.path.realpath(sys.executable), "-I", "-S", "-c", _LAUNCHER_SRC, json.dumps(cfg)],
                        stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={}, cwd="/",
                        start_new_session=True, pass_fds=(info_w,), close_fds=True,
                    )  # fmt: skip
            except BaseException:
                os.close(info_r)
                raise
            finally:
                os.close(info_w)
            out = self.collect(proc, info_r, t0 + self.timeout_s)
            oom = (
                self.cgroup is not None
                and self.info.get("launcher", {}).get("cgroup")
                and self.cgroup.oom_killed()
            )
        finally:
            if self.cgroup is not None:
                self.cgroup.kill()
                self.cgroup.remove()
        return self.result(proc, out, bool(oom), t0)

    # ------------------------------------------------------------------------------------ while it runs

    def collect(self, proc: subprocess.Popen, info_r: int, deadline: float) -> dict:
        """Read stdout/stderr (keeping `cap` bytes each) and the launcher's reports until the run is over.

        The launcher exits only once the program and everything it started are dead, so the normal end is EOF
        on all three pipes. At the deadline (or when a watchdog fires) the program is killed and the launcher
        gets a moment to clean up."""
        bufs = {"stdout": bytearray(), "stderr": bytearray(), "info": bytearray()}
        truncated = {"stdout": False, "stderr": False}
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
        sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
        info_file = os.fdopen(info_r, "rb", buffering=0)
        sel.register(info_file, selectors.EVENT_READ, "info")
        timed_out = False
        give_up = None  # once set: stop waiting for EOF at this time
        next_watch = 0.0
        try:
            while sel.get_map():
                now = time.monotonic()
                if give_up is None and proc.poll() is not None:
                    give_up = now + 0.5  # launcher gone: only stray holders of the pipes are left
                if give_up is None and now > deadline:
                    timed_out = True
                    self.kill_tree(proc)
                    give_up = now + 3.0
                if give_up is None and now >= next_watch:
                    next_watch = now + POLL_S
                    if self.watch(proc):
                        give_up = now + 3.0
                if give_up is not None and now > give_up:
                    break
                limit = give_up if give_up is not None else min(deadline, next_watch)
                for key, _ in sel.select(timeout=max(0.0, min(0.05, limit - now))):
                    name = key.data
                    try:
                        chunk = os.read(key.fileobj.fileno(), 65536)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    buf = bufs[name]
                    if name == "info":
                        buf += chunk
                        self.parse_info(buf)
                    elif len(buf) < self.cap:
                        room = self.cap - len(buf)
                        buf += chunk[:room]
                        truncated[name] |= len(chunk) > room
                    else:
                        truncated[name] = True
        finally:
            sel.close()
            self.finish(proc)
            proc.stdout.close()
            proc.stderr.close()
            info_file.close()
        self.parse_info(bufs["info"])
        return {
            "stdout": bytes(bufs["stdout"]),
            "stderr": bytes(bufs["stderr"]),
            "stdout_truncated": truncated["stdout"],
            "stderr_truncated": truncated["stderr"],
            "timed_out": timed_out,
        }

    def parse_info(self, buf: bytearray) -> None:
        info: dict = {}
        for line in bytes(buf).splitlines():
            with contextlib.suppress(ValueError):
                info.update(json.loads(line))
        self.info = info

    def program_pids(self, proc: subprocess.Popen) -> list[int]:
        """The program's processes: the launcher's tree without the launcher and the namespace's init."""
        pids = descendants(proc.pid)
        if self.info.get("launcher", {}).get("pidns"):
            pids = [p for p in pids if p != self.info.get("pid")]
        return pids

    def watch(self, proc: subprocess.Popen) -> bool:
        """The watchdogs: the tree's resident memory (unless a cgroup bounds it) and the size of a work directory
        on the host's disk. True when one of them killed the run."""
        if self.cgroup is None or not self.info.get("launcher", {}).get("cgroup"):
            held = tree_memory(self.program_pids(proc))
            if held > self.tree_limit:
                self.killed_for = (
                    f"the program's processes together held {held >> 20} MiB, over the memory limit of "
                    f"{self.tree_limit >> 20} MiB (memory watchdog over the process tree)"
                )
                self.kill_status = "memory"
        if not self.killed_for:
            used = dir_size(self.workdir)
            if used > self.limits["disk"]:
                self.killed_for = (
                    f"the work directory grew to {used >> 20} MiB, over the disk limit of "
                    f"{self.limits['disk'] >> 20} MiB (directory-size watchdog)"
                )
                self.kill_status = "error"
        if self.killed_for:
            self.kill_tree(proc)
            return True
        return False

    def kill_tree(self, proc: subprocess.Popen) -> None:
        """SIGKILL the program: the init of its pid namespace (whose death takes the namespace with it) and
        every process below the launcher; the launcher then reaps and reports."""
        pid = self.info.get("pid")
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in descendants(proc.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill()

    def finish(self, proc: subprocess.Popen) -> None:
        """Make sure nothing of the run survives: the program, the launcher's process group and, with a per-run
        uid, every process of that uid (catches a setsid escapee should the launcher itself have died)."""
        if proc.poll() is None:
            self.kill_tree(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=3)
        _killpg(proc.pid)
        if self.slot.exclusive:
            kill_uid(self.slot.uid)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # -------------------------------------------------------------------------------------- afterwards

    def guards(self) -> dict:
        launcher, child = self.info.get("launcher", {}), self.info.get("child", {})
        missing = list(launcher.get("missing", ["a report from the launcher"]))
        userns, uid_drop = bool(launcher.get("userns")), bool(child.get("uid_drop"))
        full = not missing and bool(child.get("ro_root") and child.get("private_workdir"))
        if uid_drop:
            identity = "per-run uid" if self.slot.exclusive else "uid drop (shared uid nobody)"
        elif userns:
            identity = f"user namespace (uid {INNER_UID} inside, the caller's uid outside)"
        else:
            identity = "the caller's uid (no uid drop)"
        if child.get("private_workdir"):
            filesystem = (
                "pivot_root + read-only root + private tmpfs work directory"
                if child.get("pivot_root")
                else "chroot + read-only root + private tmpfs work directory"
            )
        else:
            filesystem = "host tree, " + ("uid drop + " if uid_drop else "") + "audit hook (best effort)"
        cgroup = self.cgroup is not None and bool(launcher.get("cgroup"))
        disk_mb = self.limits["disk"] >> 20
        return {
            "mode": "full" if full else "weak",
            "missing": missing,
            "network": "netns" if launcher.get("netns") else "audit hook (best effort)",
            "filesystem": filesystem,
            "identity": identity,
            "memory": "cgroup v2 memory.max" if cgroup else "memory watchdog over the process tree (PSS)",
            "disk": f"tmpfs of {disk_mb} MiB"
            if child.get("private_workdir")
            else f"RLIMIT_FSIZE + directory-size watchdog ({disk_mb} MiB)",
            "netns": bool(launcher.get("netns")),
            "pidns": bool(launcher.get("pidns")),
            "ipcns": bool(launcher.get("ipcns")),
            "mntns": bool(launcher.get("mntns")),
            "userns": userns,
            "pivot_root": bool(child.get("pivot_root")),
            "ro_root": bool(child.get("ro_root")),
            "private_workdir": bool(child.get("private_workdir")),
            "chroot": bool(child.get("chroot")),
            "proc_private": bool(child.get("proc")),
            "uid_drop": uid_drop,
            "per_run_uid": uid_drop and self.slot.exclusive,
            "rlimits": bool(child.get("rlimits")),
            "no_new_privs": bool(child.get("no_new_privs")),
            "caps_dropped": bool(child.get("caps_dropped")),
            "audit_hook": bool(child.get("audit_hook")),
            "cgroup": cgroup,
        }

    def result(self, proc: subprocess.Popen, out: dict, oom: bool, t0: float) -> SandboxResult:
        info = self.info
        rc = None
        if "refused" in info:
            status = "error"
            detail = (
                "sandbox refused to run the program: missing "
                + ", ".join(info["refused"])
                + f" (set {ALLOW_WEAK_ENV}=1 to accept the weaker, best-effort guards)"
            )
        elif self.killed_for:
            status, detail = self.kill_status, self.killed_for
            rc = -signal.SIGKILL
        elif oom:
            status = "memory"
            detail = f"memory limit of {self.tree_limit >> 20} MiB for the process tree exceeded (cgroup v2)"
            rc = -signal.SIGKILL
        elif out["timed_out"]:
            status, detail = "timeout", f"wall-clock limit of {self.timeout_s:g}s exceeded"
        elif "setup_error" in info:
            status, detail = "error", "sandbox setup failed: " + info["setup_error"]
        elif "signal" in info:
            sig = info["signal"]
            rc = -sig
            if sig == signal.SIGXCPU:
                status, detail = "timeout", "CPU-time limit exceeded"
            elif sig == signal.SIGXFSZ:
                status, detail = "error", "file-size limit exceeded"
            else:
                status, detail = "killed", f"killed by signal {signal.Signals(sig).name}"
        elif info.get("exit") is not None:
            rc = info["exit"]
            status, detail = ("ok", "") if rc == 0 else ("error", f"exit code {rc}")
        else:
            status, detail = "killed", f"the launcher ended without a report (returncode {proc.returncode})"
        if status == "error" and info.get("disk_free") is not None and info["disk_free"] < (64 << 10):
            detail += f"; the work directory is full (disk limit {self.limits['disk'] >> 20} MiB)"
        uid_dropped = bool(info.get("child", {}).get("uid_drop"))
        return SandboxResult(
            status=status,
            returncode=rc,
            stdout=out["stdout"].decode("utf-8", "replace"),
            stderr=out["stderr"].decode("utf-8", "replace"),
            wall_s=time.monotonic() - t0,
            timed_out=out["timed_out"],
            stdout_truncated=out["stdout_truncated"],
            stderr_truncated=out["stderr_truncated"],
            guards=self.guards(),
            uid=self.slot.uid if uid_dropped else None,
            detail=detail,
        )
