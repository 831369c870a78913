"""Whole-tree limits in every mode: memory for the process tree (not per process), and the work directory's size.

Before: RLIMIT_AS per process only (6 children at 256 MB held 1.23 GB) and no disk quota (960 MB written in 4 s)."""

from __future__ import annotations

import sys

import pytest

from trainers.common.sandbox import run_python
from trainers.common.sandbox_limits import MemoryCgroup

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the sandbox is Linux-only")

SIX_CHILDREN = r"""
import os, time
for i in range(6):
    if os.fork() == 0:
        block = bytearray(b"x") * (200 << 20)  # touched: resident, under the 256 MB address-space limit
        print("holding", i, flush=True)
        time.sleep(30)
        os._exit(0)
    time.sleep(0.2)
time.sleep(30)
"""

# 960 MB in files of 16 MiB (each under the per-file limit): only a limit on the directory stops it.
DISK_FILLER = r"""
written = 0
chunk = b"\0" * (1 << 20)
try:
    for n in range(60):
        with open("part%d.bin" % n, "wb") as f:
            for _ in range(16):
                f.write(chunk)
                written += 1
        print("written", written, flush=True)
finally:
    print("stopped at", written, flush=True)
"""


def test_six_children_cannot_hold_more_than_the_tree_limit():
    res = run_python(SIX_CHILDREN, memory_mb=256, timeout_s=10)
    assert res.status == "memory", res
    assert "over the memory limit of 256 MiB" in res.detail or "cgroup" in res.detail, res.detail
    assert res.stdout.count("holding") < 6  # 1.2 GB was never held
    assert res.wall_s < 8


SHARED_AFTER_FORK = r"""
import os, time
block = bytearray(b"x") * (200 << 20)
kids = []
for i in range(3):
    pid = os.fork()
    if pid == 0:
        time.sleep(1.0)  # reads nothing, writes nothing: the 200 MB stay shared with the parent
        os._exit(0)
    kids.append(pid)
for pid in kids:
    os.waitpid(pid, 0)
print("done", len(block) >> 20)
"""


def test_pages_shared_after_a_fork_count_once():
    """Four processes map the same 200 MB (resident sizes add up to 800 MB): under a 512 MB tree limit."""
    res = run_python(SHARED_AFTER_FORK, memory_mb=512, timeout_s=10)
    assert res.status == "ok", res
    assert res.stdout == "done 200\n"


def _written(stdout: str) -> int:
    return int(stdout.split("stopped at")[-1].split()[0]) if "stopped at" in stdout else 0


def test_a_full_work_directory_stops_the_program_and_says_why():
    res = run_python(DISK_FILLER, max_disk_mb=64, timeout_s=20)
    assert res.guards["disk"] == "tmpfs of 64 MiB"
    assert res.status == "error", res
    assert "No space left on device" in res.stderr
    assert "the work directory is full (disk limit 64 MiB)" in res.detail
    assert _written(res.stdout) <= 64


def test_weak_mode_kills_a_run_whose_work_directory_outgrows_the_limit():
    res = run_python(DISK_FILLER, max_disk_mb=64, timeout_s=20, disable=("mntns",), allow_weak=True)
    assert res.guards["disk"].startswith("RLIMIT_FSIZE + directory-size watchdog")
    assert res.status == "error", res
    assert "over the disk limit of 64 MiB (directory-size watchdog)" in res.detail, res.detail
    assert "written 960" not in res.stdout


def _cgroup_usable() -> bool:
    group = MemoryCgroup.create(64 << 20)
    if group is None:
        return False
    group.remove()
    return True


@pytest.mark.skipif(not _cgroup_usable(), reason="no usable cgroup v2 memory controller here")
def test_the_tree_limit_is_a_cgroup_where_one_is_usable():
    res = run_python(SIX_CHILDREN, memory_mb=256, timeout_s=10)
    assert res.guards["memory"] == "cgroup v2 memory.max" and res.guards["cgroup"], res.guards
    assert res.status == "memory", res
    assert res.stdout.count("holding") < 6
