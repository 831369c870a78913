"""Whole-tree limits of a sandboxed run, enforced from outside the sandbox.

* Memory: RLIMIT_AS bounds one process, not a tree (6 children at 256 MB held 1.23 GB). A cgroup v2 leaf per run
  with memory.max bounds the tree in the kernel: used when the cgroup v2 hierarchy has the memory controller and
  a parent cgroup this process may create children in and enable it for (ORLAB_SANDBOX_CGROUP names one, e.g. a
  systemd-delegated cgroup holding no process of its own; else this process's own cgroup is tried). Otherwise a
  watchdog sums the resident memory of every process of the run's tree (proportional set sizes: pages shared
  after a fork count once) every few tens of milliseconds and kills the tree when it is over the limit: a tree
  can overshoot for one polling interval, and memory no process maps (a tmpfs file) is not counted (the work
  directory and /dev/shm have their own size limits).
* Disk: the full sandbox gives the program a tmpfs of a fixed size. Without a mount namespace (weak mode) the
  work directory is on the host's disk: RLIMIT_FSIZE bounds one file and `dir_size` lets the caller's watchdog
  kill the run once the directory as a whole is over the limit."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import time
from pathlib import Path

__all__ = ["MemoryCgroup", "descendants", "dir_size", "tree_memory"]

PAGE = os.sysconf("SC_PAGE_SIZE")
CGROUP_ENV = "ORLAB_SANDBOX_CGROUP"


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children of all its threads, recursively); `pid` itself excluded."""
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


def tree_memory(pids: list[int]) -> int:
    """Bytes of memory held by `pids` together: the proportional set size of each (a page shared by n of them,
    copy-on-write after a fork say, counts 1/n for each), or its resident size where that cannot be read."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) << 10
                        break
            continue
        except (OSError, ValueError, IndexError):
            pass
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
    return total


def dir_size(path: str, max_entries: int = 100_000) -> int:
    """Bytes allocated under `path` (symbolic links not followed); stops counting after `max_entries`."""
    total, seen, todo = 0, 0, [path]
    while todo and seen < max_entries:
        try:
            entries = list(os.scandir(todo.pop()))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                todo.append(entry.path)
    return total


# ------------------------------------------------------------------------------------------- cgroup v2

_parent_cache: dict[str, Path | None] = {}


def _cgroup2_mount() -> str | None:
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if "-" in fields:
                sep = fields.index("-")
                if sep + 1 < len(fields) and fields[sep + 1] == "cgroup2":
                    return fields[4]
    return None


def _own_cgroup() -> str | None:
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return None


def _usable_parent() -> Path | None:
    """A cgroup v2 directory whose children get the memory controller, or None."""
    explicit = os.environ.get(CGROUP_ENV, "")
    if explicit in _parent_cache:
        return _parent_cache[explicit]
    parent = None
    if explicit:
        candidate = Path(explicit)
    else:
        mount, own = _cgroup2_mount(), _own_cgroup()
        candidate = Path(mount + own) if mount and own is not None else None
    if candidate is not None:
        try:
            if "memory" in (candidate / "cgroup.controllers").read_text().split():
                control = candidate / "cgroup.subtree_control"
                if "memory" not in control.read_text().split():
                    control.write_text("+memory")  # refused (EBUSY) while the cgroup holds processes itself
                if os.access(candidate, os.W_OK):
                    parent = candidate
        except OSError:
            parent = None
    _parent_cache[explicit] = parent
    return parent


class MemoryCgroup:
    """One run's cgroup v2 leaf: memory.max, no swap, and the whole group killed on an out-of-memory event."""

    def __init__(self, path: Path):
        self.path = path

    @classmethod
    def create(cls, limit_bytes: int) -> MemoryCgroup | None:
        parent = _usable_parent()
        if parent is None:
            return None
        path = parent / f"orlab-sbx-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            path.mkdir()
        except OSError:
            return None
        group = cls(path)
        try:
            (path / "memory.max").write_text(str(int(limit_bytes)))
            for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
                if (path / name).exists():
                    (path / name).write_text(value)
        except OSError:
            group.remove()
            return None
        return group

    @property
    def procs(self) -> str:
        return str(self.path / "cgroup.procs")

    def oom_killed(self) -> bool:
        try:
            for line in (self.path / "memory.events").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name in ("oom_kill", "oom_group_kill") and int(value) > 0:
                    return True
        except (OSError, ValueError):
            pass
        return False

    def kill(self) -> None:
        kill_file = self.path / "cgroup.kill"
        with contextlib.suppress(OSError):
            if kill_file.exists():
                kill_file.write_text("1")
                return
        for _ in range(100):
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except (OSError, ValueError):
                return
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        for _ in range(200):  # the kernel frees a cgroup shortly after its last process is reaped
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)
