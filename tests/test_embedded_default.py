"""The embedded default (what `make demo` uses on a bare laptop): SQLite under var/ and kombu's
filesystem broker, with a real worker process, end to end."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

CREATE = """
from django.contrib.auth import get_user_model
from webapp.projects.services import project_create
from webapp.runs.services import run_create
u = get_user_model().objects.create_user("e2e", password="x")
p = project_create(user=u, name="e2e")
cfg = {"method": "softmax_npg", "step_size": 1.0, "iterations": 30,
       "mdp": {"kind": "garnet", "states": 5, "actions": 2, "branching": 2, "seed": 1, "gamma": 0.9}}
print(run_create(user=u, project=p, name="e2e", kind="tabular", config=cfg).id)
"""

STATUS = """
import json
from webapp.runs.models import Run, MetricSeries
r = Run.objects.get(pk={run_id})
s = MetricSeries.objects.filter(run=r, key="gap").first()
print(json.dumps({{"status": r.status, "points": s.count if s else 0, "error": r.error}}))
"""


def test_sqlite_and_filesystem_broker_run_a_tabular_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(ORLAB_VAR_DIR=str(tmp_path / "var"), PYTHONUNBUFFERED="1")

    def manage(*args):
        out = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    manage("migrate", "--no-input", "-v", "0")
    assert (tmp_path / "var" / "orlab.sqlite3").exists()
    log = open(tmp_path / "worker.log", "w")  # noqa: SIM115 (closed in finally)
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "short", "--concurrency=1", "-l", "INFO"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        run_id = int(manage("shell", "-c", CREATE).splitlines()[-1])
        deadline = time.time() + 90
        state = {}
        while time.time() < deadline:
            state = json.loads(manage("shell", "-c", STATUS.format(run_id=run_id)).splitlines()[-1])
            if state["status"] in ("succeeded", "failed"):
                break
            time.sleep(1)
        assert state["status"] == "succeeded", (state, (tmp_path / "worker.log").read_text()[-3000:])
        assert state["points"] == 31  # steps 0..30
        assert list((tmp_path / "var" / "broker" / "queue").iterdir()) == []  # the message was consumed
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=20)
        log.close()
