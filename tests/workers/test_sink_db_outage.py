"""The sink rides out a database restart (issue 11 point 5): PostgreSQL stops for a few seconds while
a run logs; the run goes on and every point, sample and evaluation is stored exactly once.

The database that restarts is a cluster of the test's own (tests/own_postgres.py), with the test
database's schema; the logging process (sink_outage_child.py) uses the real DbSink on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import psycopg
import pytest

from tests.conftest import ROOT, _test_database_url
from tests.own_postgres import own_postgres  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db

EVAL_EVERY = 25
OUTAGE_S = 4  # how long the database stays down (a restart takes well under a second)


def test_the_sink_survives_a_database_restart_with_no_point_lost_or_stored_twice(
    own_postgres,  # noqa: F811
    tmp_path,
):
    own_postgres.copy_schema_from(_test_database_url(), "orlab")
    until = tmp_path / "outage-over"
    env = {
        **os.environ,
        "DATABASE_URL": own_postgres.url("orlab"),
        "ORLAB_ARTIFACTS": str(tmp_path / "artifacts"),
        "ORLAB_SINK_FLUSH_INTERVAL": "0.05",
        "ORLAB_HEARTBEAT_INTERVAL": "0.2",
        "ORLAB_SINK_RETRY_SECONDS": "120",
        "PYTHONUNBUFFERED": "1",
    }
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.workers.sink_outage_child",
            "--until",
            str(until),
            "--eval-every",
            str(EVAL_EVERY),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "logging", child.stderr.read()
        own_postgres.stop()  # fast shutdown: the sink's connections are cut mid-flight
        time.sleep(OUTAGE_S)
        own_postgres.start()
        until.touch()
        out, err = child.communicate(timeout=180)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err[-3000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result["status"] == "succeeded"
    assert "retrying" in err  # the outage did hit the sink's writes
    steps = result["steps"]

    with psycopg.connect(own_postgres.url("orlab")) as conn:
        for key in ("loss", "reward"):
            series_id, count, last_step = conn.execute(
                "SELECT id, count, last_step FROM runs_metricseries WHERE run_id = %s AND key = %s",
                (result["run"], key),
            ).fetchone()
            stored = np.concatenate(
                [
                    np.frombuffer(row[0], dtype="<i8")
                    for row in conn.execute(
                        "SELECT steps FROM runs_metricchunk WHERE series_id = %s", (series_id,)
                    )
                ]
            )
            assert sorted(stored.tolist()) == list(range(steps)), key  # none lost, none twice
            assert (count, last_step) == (steps, steps - 1)
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT step) FROM runs_sample WHERE run_id = %s", (result["run"],)
        ).fetchone()
        assert n == distinct == steps
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT step) FROM runs_evaluation WHERE run_id = %s", (result["run"],)
        ).fetchone()
        assert n == distinct == len(range(0, steps, EVAL_EVERY))
