"""`make demo` says so, and exits non-zero, when it cannot start (issue 16 point 1): a taken port is
refused before anything starts, and a worker that never comes up (its broker is unreachable) ends
the demo with the workers named, instead of "orlab is running"."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _demo_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update({"ORLAB_VAR_DIR": str(tmp_path / "var"), "PYTHONUNBUFFERED": "1", **extra})
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_taken_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "workers.demo"],
            cwd=ROOT,
            env=_demo_env(tmp_path, ORLAB_PORT=str(port)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert f"port {port} is taken" in done.stderr and "ORLAB_PORT" in done.stderr
    assert "orlab is running" not in done.stdout
    assert not (tmp_path / "var" / "orlab.sqlite3").exists()  # nothing started, nothing migrated


def test_a_bad_port_value_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "workers.demo"],
        cwd=ROOT,
        env=_demo_env(tmp_path, ORLAB_PORT="eighty"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "ORLAB_PORT must be a port number" in done.stderr


@pytest.mark.slow
def test_workers_that_never_come_up_end_the_demo_with_their_names(tmp_path):
    # nothing listens on port 1: the workers keep retrying the broker and never report
    env = _demo_env(
        tmp_path,
        ORLAB_PORT=str(_free_port()),
        CELERY_BROKER_URL="redis://127.0.0.1:1/0",
        ORLAB_DEMO_START_TIMEOUT="15",
    )
    done = subprocess.run(
        [sys.executable, "-m", "workers.demo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "orlab did not start" in done.stderr
    assert "control, short, train did not report" in done.stderr
    assert "orlab is running" not in done.stdout
