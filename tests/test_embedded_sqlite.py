"""The embedded default's SQLite database takes a logging run, a dataset import and a scoring job at
the same time: WAL (readers never block the writer), a busy timeout (writers queue for the lock)
and short transactions (none holds the lock for long, none reads through a snapshot it then
writes from). Before, scoring failed with "database is locked" while a run was logging, and an
import held the write lock for its whole length."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow

# Runs in a process of its own with the embedded settings (no DATABASE_URL): a thread logs metrics
# into an external run the whole time, as a trainer's sink does, while the main thread imports a
# preference set and scores it the way workers.tasks.score_dataset does (its reward model aside).
SCRIPT = r"""
import json, sys, threading, time
import django
django.setup()
from django.core.management import call_command
call_command("migrate", "--no-input", verbosity=0)
from pathlib import Path
from django.contrib.auth import get_user_model
from django.db import connection
from webapp.datasets import services as ds
from webapp.datasets.models import PairScore, PreferencePair
from webapp.projects.services import project_create
from webapp.runs.metric_store import Columns, metrics_record
from webapp.runs.models import Checkpoint, MetricSeries
from webapp.runs.services import run_create

user = get_user_model().objects.create_user("u", password="x")
project = project_create(user=user, name="p")
logging_run = run_create(user=user, project=project, name="logger", kind="external", config={})
reward_run = run_create(user=user, project=project, name="rm", kind="external", config={})
reward_run.kind = "reward"
reward_run.save(update_fields=["kind"])
checkpoint = Checkpoint.objects.create(run=reward_run, step=1, path="/nonexistent")
print("journal mode", connection.cursor().execute("PRAGMA journal_mode").fetchone()[0], file=sys.stderr)

errors, logged, stop = [], [0], threading.Event()

def log_metrics():
    step = 0
    while not stop.is_set():
        try:
            metrics_record(logging_run.id, {"loss": Columns.of([step], [1.0 / (step + 1)], [time.time()])})
            step += 1
            time.sleep(0.01)  # a busy run: its sink commits every 0.5 s, an API client every few ms
        except Exception as exc:
            errors.append(f"logging: {type(exc).__name__}: {exc}")
            time.sleep(0.05)
    logged[0] = step
    connection.close()

path = Path(sys.argv[1])
with open(path, "w") as f:
    for i in range(ROWS):
        f.write(json.dumps({"prompt": f"question {i}?", "chosen": f"good answer {i}", "rejected": f"bad {i}"}) + "\n")
writer = threading.Thread(target=log_metrics)
writer.start()
try:
    time.sleep(0.5)
    try:
        dataset = ds.dataset_create_for_import(user=user, project=project, name="pairs", kind="preference",
                                               path=path, filename="pairs.jsonl")
        dataset = ds.dataset_import(dataset, path)
    except Exception as exc:
        errors.append(f"import: {type(exc).__name__}: {exc}")
        raise
    scored, batch = 0, []
    try:
        for row in ds.pair_rows_for_scoring(dataset):
            batch.append((row["id"], 1.0, 0.0))
            if len(batch) >= 512:
                ds.pair_scores_record(checkpoint.id, batch)
                scored += len(batch)
                batch = []
        ds.pair_scores_record(checkpoint.id, batch)
        scored += len(batch)
    except Exception as exc:
        errors.append(f"scoring: {type(exc).__name__}: {exc}")
    # a long import (one transaction for it held the write lock for seconds: the logging thread then
    # failed) whose last row is bad: rejected, and none of its committed batches is left
    bad_path = path.with_name("bad.jsonl")
    with open(bad_path, "w") as f:
        for i in range(LONG_ROWS):
            f.write(json.dumps({"prompt": f"q {i}?", "chosen": f"yes {i}", "rejected": f"no {i}"}) + "\n")
        f.write(json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}) + "\n")
    bad = ds.dataset_create_for_import(user=user, project=project, name="bad", kind="preference",
                                       path=bad_path, filename="bad.jsonl")
    try:
        ds.dataset_import(bad, bad_path)
        errors.append("the file with a bad row was imported")
    except ds.ImportRejected:
        pass
    left_behind = PreferencePair.objects.filter(dataset=bad).count()
finally:
    stop.set()
    writer.join()
series = MetricSeries.objects.get(run=logging_run, key="loss")
print(json.dumps({"errors": errors[:5], "n_errors": len(errors), "logged": logged[0], "stored": series.count,
                  "rows": dataset.row_count, "scores": PairScore.objects.filter(checkpoint=checkpoint).count(),
                  "left_behind": left_behind}))
"""

ROWS = 10_000  # several scoring chunks (2,000 rows)
LONG_ROWS = 50_000  # several import batches (5,000 rows); ~7 s in one transaction here


def test_logging_import_and_scoring_coexist_on_sqlite(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    # a busy timeout of 2 s instead of 30: a transaction that holds the write lock for seconds (an
    # import of 20,000 rows in one transaction takes ~4 s here) then fails the logging thread
    env.update(
        ORLAB_VAR_DIR=str(tmp_path / "var"),
        DJANGO_SETTINGS_MODULE="webapp.settings",
        ORLAB_SQLITE_TIMEOUT="2",
    )
    script = SCRIPT.replace("LONG_ROWS", str(LONG_ROWS)).replace("ROWS", str(ROWS))
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "pairs.jsonl")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "journal mode wal" in out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == [], result
    assert result["rows"] == ROWS and result["scores"] == ROWS
    assert result["left_behind"] == 0
    assert result["logged"] > 0 and result["stored"] == result["logged"]  # every point logged is stored
