"""Weak mode's guard: a Python audit hook installed before the program runs (only with ORLAB_SANDBOX_ALLOW_WEAK=1).

BEST EFFORT, NOT A SECURITY BOUNDARY. Audit hooks see only what the interpreter reports; native code, a bug in a
C module or a kernel interface the interpreter does not audit goes around them. The sandbox uses this only when
a kernel guard (a namespace, the uid drop) is missing and the operator accepted that, and it says so in the run's
guards. What it closes, each one a known way around the old fallback:

* new processes: os.fork/forkpty, os.exec*/spawn*/system, os.posix_spawn*, subprocess and its private
  `_posixsubprocess.fork_exec` (refused by event and by import), sub-interpreters (they would run without hooks);
* native code: ctypes/_ctypes and cffi (import and dlopen), and modules that write files from C unaudited
  (_gdbm, _dbm, readline, _curses, _posixshmem, _multiprocessing);
* the network: every socket event (creation, connect, name look-ups) except gethostname;
* signals to any process but the program itself (os.kill/killpg);
* files: writes only inside the work directory (and /dev/null), reads only there, under the interpreter's and
  the system's library directories and /proc/<own pid>; directories outside the work directory cannot be
  opened (a directory descriptor would let a relative path escape the check);
* the hook itself: it uses only values bound at install time (C functions and immutable constants, as
  positional defaults, never globals or builtins looked up at call time); rewriting its code or defaults,
  building code objects (code.__new__, marshal) and installing trace/profile functions are refused, and so is
  gc's object graph.

Not closed (why this mode is opt-in): a race between the check and the system call (a symlink swapped by a
second thread), os.pidfd_open (not audited: the program may signal a process it can name; the uid drop stops
that for root workers), reading files world-readable under the allowed directories, anything native.

Runs as `python -s -S -B -c <this source> <json config>` in the program's interpreter (standard library only),
with PYTHONPYCACHEPREFIX pointing nowhere so that imports compile from source instead of unmarshalling."""

import json
import os
import sys

_DENY_EVENTS = frozenset(
    {
        "os.fork",
        "os.forkpty",
        "os.system",
        "os.posix_spawn",
        "os.posix_spawnp",
        "os.startfile",
        "subprocess.Popen",
        "_posixsubprocess.fork_exec",
        "cpython.PyInterpreterState_New",
        "code.__new__",
        "marshal.load",
        "marshal.loads",
        "sys.settrace",
        "sys.setprofile",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
    }
)
_DENY_PREFIXES = ("os.exec", "os.spawn", "ctypes.", "syslog.", "_xxsubinterpreters.", "_interpreters.")
_DENY_MODULES = frozenset(
    {
        "ctypes",
        "_ctypes",
        "cffi",
        "_cffi_backend",
        "_posixsubprocess",
        "_xxsubinterpreters",
        "_interpreters",
        "_gdbm",
        "_dbm",
        "readline",
        "_curses",
        "_curses_panel",
        "_posixshmem",
        "_multiprocessing",
    }
)
_FUNCTION_ATTRS = frozenset({"__code__", "__defaults__", "__kwdefaults__", "__globals__", "__closure__"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_WRITES = frozenset(
    {
        "os.remove",
        "os.rmdir",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.chflags",
        "os.truncate",
        "os.utime",
        "os.mkfifo",
        "os.mknod",
        "os.setxattr",
        "os.removexattr",
        "shutil.rmtree",
    }
)
_PATH_READS = frozenset({"os.listdir", "os.scandir", "os.listxattr", "os.getxattr", "os.chdir", "glob.glob"})
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")


def _resolve(
    path,
    _getcwd=os.getcwd,
    _lstat=os.lstat,
    _readlink=os.readlink,
    _list=list,
    _reversed=reversed,
    _OSError=OSError,
    _deny=PermissionError,
):
    """os.path.realpath without any Python-level helper (or builtin looked up at call time) the program could
    replace."""
    if not path.startswith("/"):
        path = _getcwd() + "/" + path
    todo = _list(_reversed(path.split("/")))
    done = []
    hops = 0
    while todo:
        part = todo.pop()
        if part == "" or part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        current = "/" + "/".join(done) + ("/" if done else "") + part
        try:
            mode = _lstat(current).st_mode
        except _OSError:
            done.append(part)
            continue
        if mode & 0o170000 == 0o120000:
            hops += 1
            if hops > 40:
                raise _deny("too many symbolic links")
            target = _readlink(current)
            if target.startswith("/"):
                done = []
            todo.extend(_reversed(target.split("/")))
        else:
            done.append(part)
    return "/" + "/".join(done)


def _make_hook(workdir: str, read_roots: tuple, pid: int):
    proc_self = "/proc/" + str(pid)

    def hook(
        event,
        args,
        _deny=PermissionError,
        _type=type,
        _str=str,
        _bytes=bytes,
        _int=int,
        _resolve=_resolve,
        _lstat=os.lstat,
        _OSError=OSError,
        _workdir=workdir,
        _read_roots=read_roots,
        _proc_self=proc_self,
        _pid=pid,
        _deny_events=_DENY_EVENTS,
        _deny_prefixes=_DENY_PREFIXES,
        _deny_modules=_DENY_MODULES,
        _function_attrs=_FUNCTION_ATTRS,
        _id=id,
        _protected=frozenset(),  # ids of the hook and its helper: set below, before the hook is installed
        _write_flags=_WRITE_FLAGS,
        _path_writes=_PATH_WRITES,
        _path_reads=_PATH_READS,
        _devices=_DEVICES,
    ):
        if event in _deny_events or event.startswith(_deny_prefixes):
            raise _deny("disabled in this sandbox: " + event)
        if event == "import":
            name = args[0]
            if _type(name) is not _str or name.partition(".")[0] in _deny_modules:
                raise _deny("disabled in this sandbox: import of " + _str(name))
            return
        if event == "object.__setattr__" or event == "object.__delattr__":
            if args[1] in _function_attrs and _id(args[0]) in _protected:
                raise _deny("disabled in this sandbox: rewriting the sandbox's guard")
            return
        if event.startswith("socket.") and event != "socket.gethostname":
            raise _deny("network access is disabled in this sandbox (" + event + ")")
        if event == "os.kill" or event == "os.killpg":
            if _type(args[0]) is not _int or args[0] != _pid or event == "os.killpg":
                raise _deny("signals to other processes are disabled in this sandbox")
            return
        if event == "open":
            path, mode, flags = args
            write = (_type(mode) is _str and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)) or (
                _type(flags) is _int and flags & _write_flags
            )
            paths = ((path, write),)
        elif event in _path_writes:
            paths = ((args[0], True),)
        elif event == "os.rename" or event == "os.link":
            paths = ((args[0], True), (args[1], True))
        elif event == "os.symlink":
            paths = ((args[1], True),)
        elif event == "sqlite3.connect":
            paths = ((args[0], True),)
        elif event in _path_reads:
            paths = ((args[0], False),)
        else:
            return
        for path, write in paths:
            kind = _type(path)
            if kind is _int or path is None:
                continue  # an open descriptor: its path was checked when it was opened
            if kind is _bytes:
                path = path.decode("utf-8", "surrogateescape")
            elif kind is not _str:
                raise _deny("only str or bytes paths are allowed in this sandbox")
            if path == ":memory:" and event == "sqlite3.connect":
                continue
            real = _resolve(path)
            inside = real == _workdir or real.startswith(_workdir + "/")
            if inside or real in _devices:
                continue
            own_proc = real == _proc_self or real.startswith(_proc_self + "/")
            if write:
                # The program's own pipes and sockets (/dev/stdout, /proc/self/fd/1) may be reopened.
                if own_proc and real.startswith(_proc_self + "/fd/") and ":[" in real:
                    continue
                raise _deny("writing outside the work directory is disabled in this sandbox")
            if own_proc:
                continue
            readable = False
            for root in _read_roots:
                if real == root or real.startswith(root + "/"):
                    readable = True
            if not readable:
                raise _deny("reading outside the work directory is disabled in this sandbox: " + real)
            if event == "open":
                try:
                    is_dir = _lstat(real).st_mode & 0o170000 == 0o040000
                except _OSError:
                    is_dir = False
                if is_dir:
                    raise _deny("opening a directory outside the work directory is disabled in this sandbox")

    # The hook and its helper live as long as the interpreter, so their ids stay theirs. (Setting defaults is
    # audited, but no hook is installed yet.)
    names = hook.__code__.co_varnames[: hook.__code__.co_argcount]
    defaults = dict(zip(names[-len(hook.__defaults__) :], hook.__defaults__, strict=True))
    defaults["_protected"] = frozenset({id(hook), id(_resolve)})
    hook.__defaults__ = tuple(defaults.values())
    return hook


def main() -> None:
    cfg = json.loads(sys.argv[1])
    workdir = _resolve(cfg["workdir"])
    roots = tuple(_resolve(r) for r in cfg["read_roots"])
    import runpy  # before the hook: nothing the program could swap in

    sys.addaudithook(_make_hook(workdir, roots, os.getpid()))
    sys.argv = ["main.py"]
    runpy.run_path("main.py", run_name="__main__")


if __name__ == "__main__":
    main()
