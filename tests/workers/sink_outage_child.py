"""The process whose database goes away (test_sink_db_outage): a DbSink on the database DATABASE_URL
names logs metrics, samples and evaluations like a trainer, one step every few ms, until the file
``--until`` exists and ``--after`` more steps are logged; then it closes the sink, finishes the run and
prints the number of steps as JSON. It prints "logging" once it has logged a few steps."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.utils import timezone  # noqa: E402

from webapp.projects.services import project_create  # noqa: E402
from webapp.runs import services  # noqa: E402
from webapp.runs.models import Run  # noqa: E402
from workers.sinks import DbSink  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--until", type=Path, required=True)
    parser.add_argument("--after", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=25)
    args = parser.parse_args()

    user = get_user_model().objects.create_user(username="outage", password="pw")
    project = project_create(user=user, name="outage-lab")
    run = Run.objects.create(
        project=project, name="r", kind="synthetic", status="running", heartbeat_at=timezone.now()
    )
    sink = DbSink(run.id, 1)
    step, left = 0, None
    while left is None or left > 0:
        sink.log(step, {"loss": 1.0 / (step + 1), "reward": float(step % 7)})
        sink.log_samples(step, [{"prompt": f"p{step}", "completion": "c", "reward": 1.0}])
        if step % args.eval_every == 0:
            sink.log_evaluation(step, "gen", {"acc": step / 1000}, {"k": 1})
        if step == 20:
            print("logging", flush=True)
        if left is None and args.until.exists():
            left = args.after
        elif left is not None:
            left -= 1
        step += 1
        time.sleep(0.005)
    sink.close()
    services.run_finish(run.id, 1, cancelled=False, summary={"steps": step})
    print(json.dumps({"run": run.id, "steps": step, "status": Run.objects.get(pk=run.id).status}), flush=True)


if __name__ == "__main__":
    main()
