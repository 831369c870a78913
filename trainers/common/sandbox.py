"""Run model-written Python programs in a throw-away, network-less, resource-limited process.

One run, as root (how the reward workers run):

    caller --Popen(new session, env={})--> launcher (root, `python -I -S -c _LAUNCHER`, a child subreaper)
        unshare(NEWNET), unshare(NEWIPC), unshare(NEWPID), unshare(NEWNS)
        --fork--> init of the new pid namespace (root): builds a minimal root in the private mount namespace
                  (tmpfs + read-only binds of /usr, /bin, /lib*, /etc and the interpreter's prefix; the work
                  directory bound read-write at /sandbox; /dev with null/zero/urandom and a private shm; a new
                  /proc) and chroots into it
            --fork--> the program: rlimits, setgroups([]) + setresgid/setresuid to a per-run uid,
                      no_new_privs, parent-death signal, then execve(python -s -S -B main.py)

Guards, each reported in `SandboxResult.guards` (a run never pretends to have one it lacks):

* network: a new, empty network namespace (no interface is up: even 127.0.0.1 is unreachable). When
  unshare(CLONE_NEWNET) is not permitted, the program runs under a Python audit hook that refuses socket
  creation, ctypes and exec/subprocess; guards["network"] then says "audit-hook (weaker fallback)".
* privileges: as root, the program runs as a per-run uid (ORLAB_SANDBOX_UID_BASE + a slot held with flock,
  one per concurrent run), so RLIMIT_NPROC is a per-run budget and every process of the run can be found and
  killed afterwards; "nobody" (shared) if that uid range is not mapped. Not root: an unprivileged user
  namespace gives the network and pid namespaces, and there is no uid drop.
* file system: the chroot (only the work directory is writable; /root, /home, /tmp, /work and the rest of
  the host are absent). Without a mount namespace the program sees the host tree, protected by the uid drop
  and an audit hook refusing writes outside the work directory ("weaker fallback").
* processes: with a pid namespace, the program's death (or its init's) kills every process left in it;
  without one the launcher, a child subreaper, kills and reaps the whole tree (setsid/double-fork included).
  The caller also SIGKILLs the launcher's process group and sweeps the per-run uid. Launcher and init carry
  a parent-death signal, so killing a reward worker takes its sandboxes with it.
* rlimits: CPU, address space, process count, file size, open files, core size 0.
* time: a wall-clock deadline enforced by the caller (and by the launcher's own alarm, as a backstop).

The program gets the interpreter's standard library only (no site-packages). Not covered: a cgroup (memory is
capped per process by RLIMIT_AS, so one run's worst case is max_processes x memory_mb), seccomp.
"""

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

__all__ = ["SandboxResult", "kill_uid", "processes_of_uid", "run_python", "sandbox_capabilities"]

STATUSES = ("ok", "error", "timeout", "memory", "killed")
NOBODY = 65534
NOGROUP = 65534
UID_BASE = int(os.environ.get("ORLAB_SANDBOX_UID_BASE", "1990000000"))
UID_SLOTS = 1024
SANDBOX_DIR = "/sandbox"  # the work directory's path inside the chroot
DEFAULT_MAX_OUTPUT = 1 << 20  # bytes kept per stream

# The launcher runs as the caller (root) with only the standard library. It reads one JSON argument.
_LAUNCHER = r"""
import ctypes, json, os, resource, signal, sys, time

cfg = json.loads(sys.argv[1])
info_fd = cfg["info_fd"]
os.set_inheritable(info_fd, False)
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.unshare.argtypes = [ctypes.c_int]
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_CHILD_SUBREAPER = 1, 38, 36
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x00020000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 8, 32, 4096, 16384, 1 << 18)


def info(**kw):
    try:
        os.write(info_fd, (json.dumps(kw) + "\n").encode())
    except OSError:
        pass


def oserr(what):
    e = ctypes.get_errno()
    return OSError(e, "%s: %s" % (what, os.strerror(e)))


def unshare(flags):
    return libc.unshare(flags) == 0


def mount(src, tgt, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(tgt), enc(fstype), flags, enc(data)) != 0:
        raise oserr("mount %s" % tgt)


# Die with the caller: a reward worker killed for a timeout must not leave its sandboxes behind.
libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
if os.getppid() != cfg["parent_pid"]:
    os._exit(125)

root = os.geteuid() == 0
g = {"netns": False, "pidns": False, "ipcns": False, "userns": False, "mntns": False}
off = cfg["disable"]
if "netns" not in off:
    if root:
        g["netns"] = unshare(CLONE_NEWNET)
    elif unshare(CLONE_NEWUSER | CLONE_NEWNET):
        g["userns"] = g["netns"] = True
if root or g["userns"]:
    g["ipcns"] = unshare(CLONE_NEWIPC)
    g["pidns"] = "pidns" not in off and unshare(CLONE_NEWPID)
if root and "mntns" not in off:
    g["mntns"] = unshare(CLONE_NEWNS)
info(launcher=g)


def bind(src, dst, ro=True, rec=True, dev=False):
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    mount(src, dst, None, MS_BIND | (MS_REC if rec else 0))
    flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (MS_RDONLY if ro else 0) | (0 if dev else MS_NODEV)
    mount(None, dst, None, flags)


def build_root():
    # Everything below happens in our private mount namespace only.
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    new = cfg["newroot"]
    mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    for top in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"):
        src = "/" + top
        if os.path.islink(src):
            os.symlink(os.readlink(src), new + src)
        elif os.path.isdir(src):
            bind(src, new + src)
    for prefix in cfg["python_prefixes"]:
        if not os.path.exists(new + prefix) or not os.listdir(new + prefix):
            bind(prefix, new + prefix)
    work = new + cfg["sandbox_dir"]
    os.makedirs(work)
    mount(cfg["workdir"], work, None, MS_BIND)
    mount(None, work, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV)
    os.makedirs(new + "/tmp", mode=0o755)
    dev = new + "/dev"
    os.makedirs(dev)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
    for name in ("null", "zero", "full", "random", "urandom"):
        if os.path.exists("/dev/" + name):
            bind("/dev/" + name, dev + "/" + name, ro=False, rec=False, dev=True)
    # A private /dev/shm (POSIX semaphores: multiprocessing needs it); it vanishes with the namespace.
    os.makedirs(dev + "/shm")
    mount("tmpfs", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          "mode=1777,size=%d" % cfg["limits"]["fsize"])
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, dev + "/" + name)
    os.makedirs(new + "/proc")
    proc = False
    if g["pidns"]:  # a /proc of the new pid namespace: the program sees only its own processes
        mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        proc = True
    os.chdir(new)
    os.chroot(".")
    try:
        mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    except OSError:
        pass
    return proc


def exec_program(fs):
    # In the program's process: rlimits, drop privileges, exec. `fs` says what build_root() did.
    out = dict(fs)
    os.chdir(cfg["sandbox_dir"] if g["mntns"] else cfg["workdir"])
    lim = cfg["limits"]
    for name, soft, hard in (("RLIMIT_CORE", 0, 0), ("RLIMIT_CPU", lim["cpu"], lim["cpu"] + 1),
                             ("RLIMIT_AS", lim["as"], lim["as"]), ("RLIMIT_NPROC", lim["nproc"], lim["nproc"]),
                             ("RLIMIT_FSIZE", lim["fsize"], lim["fsize"]),
                             ("RLIMIT_NOFILE", lim["nofile"], lim["nofile"])):
        resource.setrlimit(getattr(resource, name), (soft, hard))
    out["rlimits"] = True
    if root and cfg["uid"] is not None:
        os.setgroups([])
        os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
        out["uid_drop"] = os.getuid() == cfg["uid"] and os.geteuid() == cfg["uid"]
    else:
        out["uid_drop"] = False
    # The parent-death signal is cleared by a credential change: set it again, as the final user.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    out["no_new_privs"] = libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    os.umask(0o077)
    info(child=out)
    interp = cfg["interp_chroot"] if g["mntns"] else cfg["interp_plain"]
    program = ["main.py"]
    if not g["netns"] or not g["mntns"]:
        guard = {"net": not g["netns"], "fs": not g["mntns"], "workdir": os.path.realpath(cfg["workdir"])}
        program = ["-c", cfg["fallback_src"], json.dumps(guard)]
    env = dict(cfg["env"], HOME=cfg["sandbox_dir"] if g["mntns"] else cfg["workdir"])
    os.execve(interp, [interp] + cfg["flags"] + program, env)


def report(status):
    if status is None:
        info(exit=None)
    elif os.WIFSIGNALED(status):
        info(signal=os.WTERMSIG(status))
    else:
        info(exit=os.WEXITSTATUS(status))


def guarded(fn, *args):
    try:
        fn(*args)
    except BaseException as e:
        info(setup_error="%s: %s" % (type(e).__name__, e))
    os._exit(126)


def first_child():
    # With a pid namespace this is its init: it builds the root, forks the program and reaps; when the
    # program ends it reports and exits, and the kernel kills whatever is left in the namespace. (The program
    # is not init itself: init ignores the signals it has no handler for, even those it sends itself.)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    fs = {"chroot": False, "proc": False}
    if g["mntns"]:
        fs["proc"] = build_root()
        fs["chroot"] = True
    if not g["pidns"]:
        exec_program(fs)
    prog = os.fork()
    if prog == 0:
        guarded(exec_program, fs)
    while True:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            report(None)
            os._exit(0)
        if pid == prog:
            report(status)
            os._exit(0)


# Orphans of the program become our children (not init's), so the whole tree can be killed and reaped below.
libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
pid = os.fork()
if pid == 0:
    guarded(first_child)
info(pid=pid)


def kill_child(signum=None, frame=None):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


# Backstop for a caller that stopped watching: kill the program (and with it its pid namespace).
signal.signal(signal.SIGALRM, kill_child)
signal.setitimer(signal.ITIMER_REAL, cfg["hard_timeout"])
try:
    _, status = os.waitpid(pid, 0)
except ChildProcessError:
    status = None
signal.setitimer(signal.ITIMER_REAL, 0)
if not g["pidns"]:  # the program was our child; with a pid namespace its init has reported
    report(status)


def my_children():
    me, kids = str(os.getpid()), []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        kids.append(int(name))
            except (OSError, IndexError):
                pass
    return kids


# Whatever the program left behind (without a pid namespace: background children, setsid escapees, daemons)
# is re-parented to us: kill and reap until nothing is left.
deadline = time.monotonic() + 5
while time.monotonic() < deadline:
    for kid in my_children():
        try:
            os.kill(kid, signal.SIGKILL)
        except OSError:
            pass
    try:
        if os.waitpid(-1, os.WNOHANG) == (0, 0):
            time.sleep(0.005)
    except ChildProcessError:
        break
"""

# Installed before the program when a namespace is unavailable (a weaker guard, reported as such). Audit
# hooks cannot be removed from Python; native code (ctypes) and new executables (which would not carry the
# hook) are refused with them. {"net": refuse sockets, "fs": refuse writes outside the work directory}.
_FALLBACK_GUARD = r"""
import json, os, sys
_cfg = json.loads(sys.argv[1])
def _orlab_guard(event, args, _cfg=_cfg, _real=os.path.realpath, _sep=os.sep, _W=(os.O_WRONLY | os.O_RDWR
                 | os.O_CREAT | os.O_TRUNC | os.O_APPEND)):
    if event.startswith(("ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "os.system", "os.exec",
                         "os.posix_spawn", "os.spawn", "subprocess.Popen")):
        raise PermissionError("disabled in this sandbox: %s" % event)
    if _cfg["net"] and event.startswith("socket.") and event != "socket.gethostname":
        raise PermissionError("network access is disabled in this sandbox (%s)" % event)
    if _cfg["fs"]:
        paths = ()
        if event == "open":
            path, mode, flags = args
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & _W:
                paths = (path,)
        elif event in ("os.rename", "os.link", "os.symlink"):
            paths = args[:2]
        elif event in ("os.remove", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate", "os.utime",
                       "os.mkfifo", "os.mknod", "shutil.rmtree"):
            paths = args[:1]
        for path in paths:
            if isinstance(path, int):
                continue
            try:
                real = _real(os.fsdecode(path))
            except (TypeError, ValueError):
                continue
            if real != _cfg["workdir"] and not real.startswith(_cfg["workdir"] + _sep):
                raise PermissionError("writing outside the work directory is disabled in this sandbox")
sys.addaudithook(_orlab_guard)
del _orlab_guard, _cfg
sys.argv = ["main.py"]
import runpy
runpy.run_path("main.py", run_name="__main__")
"""


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
    def weak_network_guard(self) -> bool:
        return self.guards.get("network") != "netns"


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


def sandbox_capabilities() -> dict:
    """Which guards a run gets on this machine (runs a trivial program)."""
    res = run_python("print('ok')", timeout_s=10)
    return dict(res.guards, status=res.status)


# ---------------------------------------------------------------------------------------------- run


def run_python(
    source: str,
    *,
    stdin: str = "",
    timeout_s: float = 6,
    memory_mb: int = 512,
    max_processes: int = 32,
    max_file_mb: int = 16,
    max_open_files: int = 64,
    max_output_bytes: int = DEFAULT_MAX_OUTPUT,
    disable: Collection[str] = (),
) -> SandboxResult:
    """Run `source` as a Python program under the guards described in the module docstring.

    `timeout_s` is wall-clock time for the whole run (interpreter start-up included); stdout and stderr keep
    at most `max_output_bytes` each. `disable` switches guards off to exercise the fallbacks: "netns" (the
    audit-hook network guard is used instead), "mntns" (no chroot: uid drop plus the audit-hook write guard),
    "pidns". Never raises for anything the program does; a failure to set the sandbox up gives status
    "error" with the reason in `detail`."""
    t0 = time.monotonic()
    limits = {
        "cpu": int(math.ceil(timeout_s)) + 1,
        "as": int(memory_mb) << 20,
        "nproc": int(max_processes),
        "fsize": int(max_file_mb) << 20,
        "nofile": int(max_open_files),
    }
    slot = _UidSlot()
    base = None
    try:
        slot.acquire()
        base = tempfile.mkdtemp(prefix=f"orlab-sbx-{slot.tag}-")
        os.chmod(base, 0o711)  # the program's uid may pass through (no chroot), not list it
        workdir = os.path.join(base, "work")
        os.mkdir(workdir, 0o700)
        os.mkdir(os.path.join(base, "root"), 0o700)  # mount point of the chroot's tmpfs
        Path(workdir, "main.py").write_text(source, encoding="utf-8")
        if slot.uid is not None:
            os.chown(workdir, slot.uid, slot.gid)
            os.chown(os.path.join(workdir, "main.py"), slot.uid, slot.gid)
        result = _run(base, stdin, float(timeout_s), limits, max_output_bytes, set(disable), slot)
        if (
            result.status == "error"
            and result.returncode not in (None, 0)
            and "MemoryError" in result.stderr[-4000:]
        ):
            result.status, result.detail = "memory", f"memory limit of {memory_mb} MiB exceeded"
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


def _run(base: str, stdin: str, timeout_s: float, limits: dict, cap: int, disable: set, slot: _UidSlot):
    t0 = time.monotonic()
    uid_drop = os.geteuid() == 0 and slot.uid is not None
    workdir = os.path.join(base, "work")
    cfg = {
        "parent_pid": os.getpid(),
        "disable": sorted(disable),
        "newroot": os.path.join(base, "root"),
        "workdir": workdir,
        "sandbox_dir": SANDBOX_DIR,
        "python_prefixes": _python_prefixes(),
        "uid": slot.uid if uid_drop else None,
        "gid": slot.gid if uid_drop else None,
        "hard_timeout": timeout_s + 2.0,
        "limits": limits,
        # The launcher picks: inside the chroot our own interpreter is bound in; outside it, it must be one the
        # program's uid can reach.
        "interp_chroot": os.path.realpath(sys.executable),
        "interp_plain": _interpreter_for(uid_drop),
        # -s -S -B rather than -I: -I implies -E, which would ignore PYTHONHASHSEED (set orderings would then
        # vary between runs); the environment is ours anyway. -S skips site-packages; the stdlib is intact.
        "flags": ["-s", "-S", "-B"],
        "env": {  # nothing of ours: HOME is the work directory (its host path when there is no chroot)
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": SANDBOX_DIR,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
        },
        "fallback_src": _FALLBACK_GUARD,
    }
    info_r, info_w = os.pipe()
    cfg["info_fd"] = info_w
    with tempfile.TemporaryFile() as stdin_file:
        stdin_file.write(stdin.encode("utf-8"))
        stdin_file.seek(0)
        try:
            proc = subprocess.Popen(
                [os.path.realpath(sys.executable), "-I", "-S", "-c", _LAUNCHER, json.dumps(cfg)],
                stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={}, cwd="/",
                start_new_session=True, pass_fds=(info_w,), close_fds=True,
            )  # fmt: skip
        except BaseException:
            os.close(info_r)
            raise
        finally:
            os.close(info_w)
    out = _collect(proc, info_r, t0 + timeout_s, cap, slot)
    info = out["info"]
    child, launcher = info.get("child", {}), info.get("launcher", {})
    uid_dropped = bool(child.get("uid_drop"))
    guards = {
        "network": "netns" if launcher.get("netns") else "audit-hook (weaker fallback)",
        "filesystem": "chroot"
        if child.get("chroot")
        else (
            "uid drop + audit-hook (weaker fallback)" if uid_dropped else "audit-hook only (weaker fallback)"
        ),
        "netns": bool(launcher.get("netns")),
        "pidns": bool(launcher.get("pidns")),
        "ipcns": bool(launcher.get("ipcns")),
        "userns": bool(launcher.get("userns")),
        "chroot": bool(child.get("chroot")),
        "proc_private": bool(child.get("proc")),
        "uid_drop": uid_dropped,
        "per_run_uid": uid_dropped and slot.exclusive,
        "rlimits": bool(child.get("rlimits")),
        "no_new_privs": bool(child.get("no_new_privs")),
    }
    rc = None
    if out["timed_out"]:
        status, detail = "timeout", f"wall-clock limit of {timeout_s:g}s exceeded"
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
    return SandboxResult(
        status=status,
        returncode=rc,
        stdout=out["stdout"].decode("utf-8", "replace"),
        stderr=out["stderr"].decode("utf-8", "replace"),
        wall_s=time.monotonic() - t0,
        timed_out=out["timed_out"],
        stdout_truncated=out["stdout_truncated"],
        stderr_truncated=out["stderr_truncated"],
        guards=guards,
        uid=slot.uid if uid_dropped else None,
        detail=detail,
    )


def _collect(proc: subprocess.Popen, info_r: int, deadline: float, cap: int, slot: _UidSlot) -> dict:
    """Read stdout/stderr (keeping `cap` bytes each) and the launcher's reports until the run is over.

    The launcher exits only once the program and everything it started are dead, so the normal end is EOF on
    all three pipes. At the deadline the program is killed and the launcher gets a moment to clean up."""
    bufs = {"stdout": bytearray(), "stderr": bytearray(), "info": bytearray()}
    truncated = {"stdout": False, "stderr": False}
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
    sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
    info_file = os.fdopen(info_r, "rb", buffering=0)
    sel.register(info_file, selectors.EVENT_READ, "info")
    timed_out = False
    give_up = None  # once set: stop waiting for EOF at this time
    try:
        while sel.get_map():
            now = time.monotonic()
            if give_up is None and proc.poll() is not None:
                give_up = now + 0.5  # launcher gone: only stray holders of the pipes are left
            if give_up is None and now > deadline:
                timed_out = True
                _kill_program(bufs["info"])
                give_up = now + 3.0
            if give_up is not None and now > give_up:
                break
            limit = give_up if give_up is not None else deadline
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
                elif len(buf) < cap:
                    room = cap - len(buf)
                    buf += chunk[:room]
                    truncated[name] |= len(chunk) > room
                else:
                    truncated[name] = True
    finally:
        sel.close()
        _finish(proc, bufs["info"], slot)
        proc.stdout.close()
        proc.stderr.close()
        info_file.close()
    info: dict = {}
    for line in bytes(bufs["info"]).splitlines():
        with contextlib.suppress(ValueError):
            info.update(json.loads(line))
    return {
        "stdout": bytes(bufs["stdout"]),
        "stderr": bytes(bufs["stderr"]),
        "stdout_truncated": truncated["stdout"],
        "stderr_truncated": truncated["stderr"],
        "timed_out": timed_out,
        "info": info,
    }


def _kill_program(info_buf: bytearray) -> None:
    """SIGKILL the program (the init of its pid namespace, whose death takes the namespace with it); the
    launcher then kills and reaps whatever else is left."""
    for line in bytes(info_buf).splitlines():
        with contextlib.suppress(ValueError, OSError, TypeError, AttributeError):
            pid = json.loads(line).get("pid")
            if pid:
                os.kill(pid, signal.SIGKILL)


def _finish(proc: subprocess.Popen, info_buf: bytearray, slot: _UidSlot) -> None:
    """Make sure nothing of the run survives: the program, the launcher's process group and, with a per-run
    uid, every process of that uid (catches a setsid escapee should the launcher itself have died)."""
    if proc.poll() is None:
        _kill_program(info_buf)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=3)
    _killpg(proc.pid)
    if slot.exclusive:
        kill_uid(slot.uid)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
