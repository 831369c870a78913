"""The sandbox's launcher: enters the namespaces, builds the program's root and starts the program.

Run by trainers.common.sandbox as `python -I -S -c <this source> <json config>` (standard library only), as the
caller's user, in a new session. It reports on the file descriptor `info_fd`, one JSON object a line:
{"launcher": ...} (the namespaces it got, "missing"), {"refused": [...]}, {"pid": ...}, {"child": ...} (what the
program's process set up), {"exit"|"signal": ...}, {"disk_used", "disk_free"}, {"setup_error": ...}.

    launcher (caller's uid; a child subreaper; not dumpable)
      root:     unshare(NEWNET), unshare(NEWIPC), unshare(NEWPID), unshare(NEWNS)
      not root: unshare(NEWUSER) with the caller's uid mapped to INNER uid (setgroups denied), then the same
      --fork--> init of the new pid namespace: builds the root in the private mount namespace (below)
          --fork--> the program: rlimits, uid drop (root) or the mapped uid (user namespace), capability
                    bounding set emptied, no_new_privs, parent-death signal, execve(python -s -S -B main.py)

The root: a tmpfs holding read-only binds of /usr, /bin, /lib*, a few files of /etc and the interpreter's
prefix; /sandbox, a tmpfs of the disk limit's size owned by the program with main.py copied in (the private work
directory); /dev with null/zero/full/random/urandom and a small private /dev/shm; the pid namespace's /proc.
The tmpfs is made read-only, pivot_root makes it the mount namespace's root (the host's tree is unmounted from
it), and the program is chrooted one level below it: a chrooted process may not create user namespaces, so the
program cannot gain capabilities in a namespace of its own.

When a guard is missing the launcher refuses to start the program (reporting what is missing) unless the caller
allows weak mode; the program then runs under the audit hook of trainers/common/sandbox_audit.py."""

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
import time

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = (
    1,
    4,
    24,
    36,
    38,
)
CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x00020000,
    0x08000000,
    0x10000000,
    0x20000000,
    0x40000000,
)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1,
    2,
    4,
    8,
    32,
    4096,
    16384,
    1 << 18,
)
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}.get(
    os.uname().machine
)
SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
DEVICES = ("null", "zero", "full", "random", "urandom")
NO_PYCACHE = "/dev/null/pycache"  # can never exist: weak mode's imports compile from source (no marshal)


class Launcher:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.root = os.geteuid() == 0
        self.g = {
            "netns": False,
            "pidns": False,
            "ipcns": False,
            "userns": False,
            "mntns": False,
            "cgroup": False,
        }
        self.libc = libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        libc.unshare.argtypes = [ctypes.c_int]
        libc.syscall.restype = ctypes.c_long

    # ------------------------------------------------------------------------------------------ helpers

    def info(self, **kw) -> None:
        with contextlib.suppress(OSError):
            os.write(self.cfg["info_fd"], (json.dumps(kw) + "\n").encode())

    def oserror(self, what: str) -> OSError:
        e = ctypes.get_errno()
        return OSError(e, f"{what}: {os.strerror(e)}")

    def prctl(self, option: int, arg: int = 0) -> bool:
        return self.libc.prctl(option, arg, 0, 0, 0) == 0

    def unshare(self, flags: int) -> bool:
        return self.libc.unshare(flags) == 0

    def mount(self, src, target, fstype, flags, data=None) -> None:
        def enc(s):
            return None if s is None else s.encode()

        if self.libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
            raise self.oserror(f"mount {target}")

    def bind(self, src: str, dst: str, ro: bool = True, rec: bool = True, dev: bool = False) -> None:
        if os.path.isdir(src):
            os.makedirs(dst, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            open(dst, "a").close()
        self.mount(src, dst, None, MS_BIND | (MS_REC if rec else 0))
        flags = MS_REMOUNT | MS_BIND | MS_NOSUID | (MS_RDONLY if ro else 0) | (0 if dev else MS_NODEV)
        self.mount(None, dst, None, flags)

    def program_ids(self) -> tuple[int, int]:
        """The program's uid and gid as this namespace sees them."""
        if self.root and self.cfg["uid"] is not None:
            return self.cfg["uid"], self.cfg["gid"]
        if self.g["userns"]:
            return self.cfg["inner_uid"], self.cfg["inner_gid"]
        return os.getuid(), os.getgid()

    # --------------------------------------------------------------------------------------- namespaces

    def join_cgroup(self) -> None:
        path = self.cfg.get("cgroup_procs")
        if path:
            try:
                with open(path, "w") as f:
                    f.write(str(os.getpid()))
                self.g["cgroup"] = True
            except OSError as e:
                self.info(cgroup_error=str(e))

    def enter_user_namespace(self) -> bool:
        uid, gid = os.geteuid(), os.getegid()
        if not self.unshare(CLONE_NEWUSER):
            return False
        # One id each way, the caller's, as an unprivileged process may map (setgroups denied first).
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{self.cfg['inner_uid']} {uid} 1\n"),
            ("gid_map", f"{self.cfg['inner_gid']} {gid} 1\n"),
        ):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        return True

    def namespaces(self) -> None:
        off, g = set(self.cfg["disable"]), self.g
        if not self.root and "userns" not in off:
            g["userns"] = self.enter_user_namespace()
        if self.root or g["userns"]:
            for key, flag in (
                ("netns", CLONE_NEWNET),
                ("ipcns", CLONE_NEWIPC),
                ("pidns", CLONE_NEWPID),
                ("mntns", CLONE_NEWNS),
            ):
                g[key] = key not in off and self.unshare(flag)

    def missing(self) -> list[str]:
        """The full guards this run lacks, named for the operator."""
        g, out = self.g, []
        if not g["netns"]:
            out.append("network namespace")
        if not g["pidns"]:
            out.append("pid namespace")
        if not g["mntns"]:
            out.append("mount namespace (read-only root, private work directory)")
        if self.root:
            if self.cfg["uid"] is None:
                out.append("uid drop")
        elif not g["userns"]:
            out.append("user namespace (a mapped uid)")
        return out

    # ------------------------------------------------------------------------------------------- root

    def build_root(self) -> dict:
        """In the private mount namespace: the program's root (module docstring). Every step must work."""
        cfg, lim = self.cfg, self.cfg["limits"]
        # A mount namespace of our own below the launcher's: pivot_root moves the root of every process of the
        # namespace, and the launcher keeps the host's view (its /proc finds the program's orphans).
        if not self.unshare(CLONE_NEWNS):
            raise self.oserror("unshare(CLONE_NEWNS)")
        self.mount(None, "/", None, MS_REC | MS_PRIVATE)
        new = cfg["newroot"]
        self.mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
        top = new + "/sbx"
        os.mkdir(top, 0o755)
        for name in SYSTEM_DIRS:
            src = "/" + name
            if os.path.islink(src):
                os.symlink(os.readlink(src), top + src)
            elif os.path.isdir(src):
                self.bind(src, top + src)
        os.mkdir(top + "/etc", 0o755)
        for name in cfg["etc_files"]:
            src = "/etc/" + name
            if os.path.islink(src):
                os.symlink(os.readlink(src), top + src)
            elif os.path.exists(src):
                self.bind(src, top + src)
        for prefix in cfg["python_prefixes"]:
            if not os.path.exists(top + prefix) or not os.listdir(top + prefix):
                self.bind(prefix, top + prefix)
        # The private work directory: a tmpfs of the disk limit's size, the program's own, main.py copied in.
        uid, gid = self.program_ids()
        work = top + cfg["sandbox_dir"]
        os.mkdir(work)
        self.mount(
            "tmpfs",
            work,
            "tmpfs",
            MS_NOSUID | MS_NODEV,
            f"mode=700,size={lim['disk']},nr_inodes={lim['inodes']},uid={uid},gid={gid}",
        )
        with open(os.path.join(cfg["workdir"], "main.py"), "rb") as src, open(work + "/main.py", "wb") as dst:
            dst.write(src.read())
        if self.root:
            os.chown(work + "/main.py", uid, gid)
        os.mkdir(top + "/tmp", 0o755)
        self.build_dev(top + "/dev", lim)
        os.mkdir(top + "/proc")
        proc = False
        if self.g["pidns"]:  # the pid namespace's own /proc (mounted while the host's is still visible)
            self.mount("proc", top + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            proc = True
        os.mkdir(new + "/.old")
        self.mount(None, new, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        pivot = False
        if SYS_PIVOT_ROOT is not None:
            os.chdir(new)
            if self.libc.syscall(SYS_PIVOT_ROOT, b".", b".old") != 0:
                raise self.oserror("pivot_root")
            if self.libc.umount2(b"/.old", MNT_DETACH) != 0:
                raise self.oserror("umount the host's root")
            pivot = True
        # One level below the namespace's root: chrooted, so no user namespace can be created from inside.
        os.chroot("/sbx" if pivot else top)
        os.chdir("/")
        return {"chroot": True, "pivot_root": pivot, "ro_root": True, "private_workdir": True, "proc": proc}

    def build_dev(self, dev: str, lim: dict) -> None:
        os.makedirs(dev)
        self.mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k")
        for name in DEVICES:
            if os.path.exists("/dev/" + name):
                self.bind("/dev/" + name, dev + "/" + name, ro=False, rec=False, dev=True)
        # A private /dev/shm (POSIX semaphores: multiprocessing needs it); it vanishes with the namespace.
        os.makedirs(dev + "/shm")
        self.mount(
            "tmpfs", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=1777,size={lim['shm']}"
        )
        for name, target in (
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ):
            os.symlink(target, dev + "/" + name)
        self.mount(None, dev, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)

    # ---------------------------------------------------------------------------------------- program

    def exec_program(self, fs: dict) -> None:
        """In the program's process: limits, identity, then execve. `fs` says what build_root() did."""
        cfg, g, lim = self.cfg, self.g, self.cfg["limits"]
        out = dict(fs)
        os.chdir(cfg["sandbox_dir"] if g["mntns"] else cfg["workdir"])
        for name, soft, hard in (
            ("RLIMIT_CORE", 0, 0),
            ("RLIMIT_CPU", lim["cpu"], lim["cpu"] + 1),
            ("RLIMIT_AS", lim["as"], lim["as"]),
            ("RLIMIT_NPROC", lim["nproc"], lim["nproc"]),
            ("RLIMIT_FSIZE", lim["fsize"], lim["fsize"]),
            ("RLIMIT_NOFILE", lim["nofile"], lim["nofile"]),
        ):
            resource.setrlimit(getattr(resource, name), (soft, hard))
        out["rlimits"] = True
        # No capability can come back through an exec (with no_new_privs below, file capabilities are off too).
        cap = 0
        while self.prctl(PR_CAPBSET_DROP, cap):
            cap += 1
        out["caps_dropped"] = cap > 0
        if self.root and cfg["uid"] is not None:
            os.setgroups([])
            os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
            os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
            out["uid_drop"] = os.getuid() == cfg["uid"] and os.geteuid() == cfg["uid"]
        else:
            out["uid_drop"] = False
        out["uid"] = os.getuid()
        # The parent-death signal is cleared by a credential change: set it again, as the final user.
        self.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        out["no_new_privs"] = self.prctl(PR_SET_NO_NEW_PRIVS, 1)
        os.umask(0o077)
        weak = bool(self.missing())
        out["audit_hook"] = weak
        self.info(child=out)
        interp = cfg["interp_chroot"] if g["mntns"] else cfg["interp_plain"]
        home = cfg["sandbox_dir"] if g["mntns"] else cfg["workdir"]
        env = dict(cfg["env"], HOME=home)
        program = ["main.py"]
        if weak:
            guard = {"workdir": home, "read_roots": cfg["read_roots"]}
            program = ["-c", cfg["audit_src"], json.dumps(guard)]
            env["PYTHONPYCACHEPREFIX"] = NO_PYCACHE
        os.execve(interp, [interp, *cfg["flags"], *program], env)

    def report(self, status) -> None:
        if status is None:
            self.info(exit=None)
        elif os.WIFSIGNALED(status):
            self.info(signal=os.WTERMSIG(status))
        else:
            self.info(exit=os.WEXITSTATUS(status))

    def report_disk(self) -> None:
        try:
            st = os.statvfs(self.cfg["sandbox_dir"])
        except OSError:
            return
        self.info(disk_used=(st.f_blocks - st.f_bfree) * st.f_frsize, disk_free=st.f_bavail * st.f_frsize)

    def guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except BaseException as e:
            self.info(setup_error=f"{type(e).__name__}: {e}")
        os._exit(126)

    def first_child(self) -> None:
        """With a pid namespace this is its init: it builds the root, forks the program and reaps; when the
        program ends it reports and exits, and the kernel kills whatever is left in the namespace. (The program
        is not init itself: init ignores the signals it has no handler for, even those it sends itself.)"""
        self.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        fs = {"chroot": False, "pivot_root": False, "ro_root": False, "private_workdir": False, "proc": False}
        if self.g["mntns"]:
            fs = self.build_root()
        if not self.g["pidns"]:
            self.exec_program(fs)
        prog = os.fork()
        if prog == 0:
            self.guarded(self.exec_program, fs)
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                self.report(None)
                os._exit(0)
            if pid == prog:
                self.report(status)
                if fs["private_workdir"]:
                    self.report_disk()
                os._exit(0)

    # -------------------------------------------------------------------------------------------- run

    def my_children(self) -> list[int]:
        me, kids = str(os.getpid()), []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/stat") as f:
                        if f.read().rsplit(")", 1)[1].split()[1] == me:
                            kids.append(int(name))
                except (OSError, IndexError):
                    pass
        return kids

    def run(self) -> None:
        cfg = self.cfg
        # Die with the caller: a reward worker killed for a timeout must not leave its sandboxes behind.
        self.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != cfg["parent_pid"]:
            os._exit(125)
        self.join_cgroup()
        self.namespaces()
        missing = self.missing()
        self.info(launcher=dict(self.g, missing=missing))
        if missing and not cfg["allow_weak"]:
            self.info(refused=missing)
            os._exit(0)
        # Nothing in the sandbox may trace us or read our memory (the uid maps are written by now).
        self.prctl(PR_SET_DUMPABLE, 0)
        # Orphans of the program become our children (not init's), so the whole tree can be killed and reaped.
        self.prctl(PR_SET_CHILD_SUBREAPER, 1)
        pid = os.fork()
        if pid == 0:
            self.guarded(self.first_child)
        self.info(pid=pid)

        def kill_child(signum=None, frame=None):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

        # Backstop for a caller that stopped watching: kill the program (and with it its pid namespace).
        signal.signal(signal.SIGALRM, kill_child)
        signal.setitimer(signal.ITIMER_REAL, cfg["hard_timeout"])
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = None
        signal.setitimer(signal.ITIMER_REAL, 0)
        if not self.g["pidns"]:  # the program was our child; with a pid namespace its init has reported
            self.report(status)
        # Whatever the program left behind (without a pid namespace: background children, setsid escapees,
        # daemons) is re-parented to us: kill and reap until nothing is left.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for kid in self.my_children():
                with contextlib.suppress(OSError):
                    os.kill(kid, signal.SIGKILL)
            try:
                if os.waitpid(-1, os.WNOHANG) == (0, 0):
                    time.sleep(0.005)
            except ChildProcessError:
                break


def main() -> None:
    cfg = json.loads(sys.argv[1])
    os.set_inheritable(cfg["info_fd"], False)
    Launcher(cfg).run()


if __name__ == "__main__":
    main()
