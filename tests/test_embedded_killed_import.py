"""Imports are all or nothing on the embedded default's SQLite too (issue 11.11, "any failure ends the
dataset failed"). There an import commits its rows 5,000 at a time (one import-long transaction would
hold SQLite's single write lock for its whole length), so a worker killed mid-import leaves the
batches it committed. The housekeeping fails the dataset when the worker's claim stops beating, and
now deletes those rows with it; an import running inside a web request that was killed (no outbox
message) is swept the same way after ORLAB_IMPORT_STALE_AFTER."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

# The worker: imports a large file as workers.tasks.import_dataset does when delivered its outbox
# message (claim, heartbeat, batches committed one by one) until the test kills it. With "request" it
# imports as an upload request does (no message, no claim).
IMPORTER = r"""
import json, sys
import django
django.setup()
from django.core.management import call_command
call_command("migrate", "--no-input", verbosity=0)
from pathlib import Path
from django.contrib.auth import get_user_model
from django.utils import timezone
from webapp.datasets import services as ds
from webapp.outbox.models import Message
from webapp.projects.services import project_create
from workers import tasks

mode, path = sys.argv[1], Path(sys.argv[2])
user = get_user_model().objects.create_user(mode, password="x")
project = project_create(user=user, name=mode)
dataset = ds.dataset_create_for_import(user=user, project=project, name="big", kind="preference",
                                       path=path, filename="big.jsonl")
print(json.dumps({"dataset": dataset.id}), flush=True)
if mode == "worker":
    message = Message.objects.create(task="workers.tasks.import_dataset", args=[dataset.id, str(path)],
                                     queue="short", subject="dataset", subject_id=dataset.id,
                                     sent_at=timezone.now())
    tasks.import_dataset.apply(args=[dataset.id, str(path)], task_id=message.task_id)
else:
    ds.dataset_import(dataset, path)
print("the import finished before it was killed", file=sys.stderr)
"""

# The control worker's housekeeping pass, afterwards (heartbeat timeout and stale-import age short).
HOUSEKEEPING = r"""
import json, sys
import django
django.setup()
from webapp.datasets.models import Dataset, PreferencePair
from workers import tasks
done = tasks.housekeeping()
out = {"done": done, "datasets": {}}
for d in Dataset.objects.order_by("id"):
    out["datasets"][d.id] = {"status": d.status, "error": d.error, "row_count": d.row_count,
                             "rows": PreferencePair.objects.filter(dataset=d).count()}
print(json.dumps(out))
"""

ROWS = 400_000  # far more than the import gets through before it is killed


def _committed_rows(db: Path, dataset_id: int) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as con:
            (n,) = con.execute(
                "SELECT count(*) FROM datasets_preferencepair WHERE dataset_id = ?", [dataset_id]
            ).fetchone()
        return n
    except sqlite3.OperationalError:  # the table is not there yet (migrating)
        return 0


def _import_and_kill(mode: str, path: Path, env: dict, db: Path) -> int:
    """Start an import and SIGKILL it once at least two batches are committed; the dataset's id."""
    proc = subprocess.Popen(
        [sys.executable, "-c", IMPORTER, mode, str(path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()[-3000:]
        dataset_id = json.loads(line)["dataset"]
        deadline = time.monotonic() + 300
        while _committed_rows(db, dataset_id) < 10_000:
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no batch committed in 300 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return dataset_id


def test_a_killed_import_leaves_no_rows_on_sqlite(tmp_path):
    var = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update(
        ORLAB_VAR_DIR=str(var),
        ORLAB_ARTIFACTS=str(tmp_path / "artifacts"),
        DJANGO_SETTINGS_MODULE="webapp.settings",
        ORLAB_HEARTBEAT_TIMEOUT="1",
        ORLAB_IMPORT_STALE_AFTER="1",
    )
    path = tmp_path / "big.jsonl"
    with open(path, "w") as f:  # the bytes json.dumps writes for each row, ~8x faster than calling it
        f.writelines(
            f'{{"prompt": "question {i}?", "chosen": "good {i}", "rejected": "bad {i}"}}\n'
            for i in range(ROWS)
        )
    db = var / "orlab.sqlite3"
    by_worker = _import_and_kill("worker", path, env, db)
    in_request = _import_and_kill("request", path, env, db)
    assert _committed_rows(db, by_worker) >= 10_000 and _committed_rows(db, in_request) >= 10_000

    time.sleep(1.5)  # the claim's heartbeat and the request's import are older than their limits now
    out = subprocess.run(
        [sys.executable, "-c", HOUSEKEEPING], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["done"]["jobs_failed"] == 1 and result["done"]["imports_failed"] == 1, result["done"]
    worker_ds, request_ds = result["datasets"][str(by_worker)], result["datasets"][str(in_request)]
    assert worker_ds["status"] == "failed" and "stopped" in worker_ds["error"], worker_ds
    assert request_ds["status"] == "failed" and "no worker on it" in request_ds["error"], request_ds
    # nothing of either import is left: all or nothing, as on PostgreSQL
    assert worker_ds["rows"] == 0 and worker_ds["row_count"] == 0, worker_ds
    assert request_ds["rows"] == 0 and request_ds["row_count"] == 0, request_ds
    assert _committed_rows(db, by_worker) == 0 and _committed_rows(db, in_request) == 0
