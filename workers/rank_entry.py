"""One rank of a multi-process run, as torch.distributed's elastic launcher starts it (workers.launch):

    python -m workers.rank_entry --run-id ID --attempt N --spec .../launch/node-K/spec.json

Every rank joins the process group and trains through a RankZeroSink. Rank 0 alone sets up Django and
the run's DbSink, so the metrics, heartbeat, cancel flag, checkpoint records and the final status
(succeeded or cancelled) come from one process; the other ranks touch no database. A rank that fails
raises, torch's ``record`` writes the error for the launcher, which reports the root cause to the node
task; an error that only says a peer went away is marked as such (RankPeerLost), so it is never taken
for the cause."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
from pathlib import Path

from torch.distributed.elastic.multiprocessing.errors import record

from workers.launch import LAUNCHER_PID_ENV, die_with_parent


class RankPeerLost(RuntimeError):
    """This rank lost contact with another one (which failed first)."""


def _database_sink(run_id: int, attempt: int, resume_from: str | None):
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    import django

    django.setup()
    from workers.sinks import DbSink

    return DbSink(run_id, attempt, resume_from=Path(resume_from) if resume_from else None)


@record
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.rank_entry")
    parser.add_argument("--run-id", type=int, required=True)
    parser.add_argument("--attempt", type=int, required=True)
    parser.add_argument("--spec", type=Path, required=True)
    args = parser.parse_args(argv)
    die_with_parent(signal.SIGKILL, LAUNCHER_PID_ENV)  # no rank outlives its launcher
    spec = json.loads(args.spec.read_text())

    from trainers.base import get_spec
    from trainers.common import distributed

    layout = distributed.init()
    sink = _database_sink(args.run_id, args.attempt, spec["resume_from"]) if layout.is_rank_zero else None
    try:
        trainer = get_spec(spec["kind"])
        config = trainer.validate(spec["config"])
        summary = trainer.train_fn()(config, distributed.RankZeroSink(sink)) or {}
    except BaseException as exc:
        if sink is not None:
            with contextlib.suppress(Exception):  # the error being raised matters more
                sink.close()  # what was logged before the error is kept
        if distributed.is_peer_loss(exc):
            raise RankPeerLost(f"lost contact with another rank: {exc}") from exc
        raise
    if sink is not None:
        sink.close()
        if not sink.lost:
            from webapp.runs import services

            # interrupted: the worker holding the run shut down (workers.shutdown) and the trainer
            # checkpointed and stopped early
            interrupted = sink.interrupted and bool(summary.get("stopped", True))
            services.run_finish(
                args.run_id, args.attempt, cancelled=sink.cancelled, summary=summary, interrupted=interrupted
            )
    distributed.close()


if __name__ == "__main__":
    main()
