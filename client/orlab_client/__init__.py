"""orlab's Python client: create a run, log metrics/samples/evaluations/checkpoints from a background
thread, finish or fail it. When the server is unreachable every record is kept in a local spool file
and sent later (``orlab-client sync``); the server is idempotent per (run, key, step), so a record
sent twice is stored once.

The wandb-style module API (``ORLAB_URL``, ``ORLAB_TOKEN``, ``ORLAB_PROJECT`` from the environment):

    import orlab_client

    with orlab_client.init(project="grpo-math", config={"lr": 1e-6}) as run:
        for step in range(1000):
            run.log({"train/loss": loss, "policy/entropy": ent}, step=step)

The explicit client underneath:

    from orlab_client import Client

    client = Client("http://orlab:8000", token="...")
    with client.create_run(project=1, name="verl grpo", config={"lr": 1e-6}) as run:
        for step in range(1000):
            run.log(step, {"train/loss": loss, "policy/entropy": ent})

See client/README.md.
"""

from orlab_client.client import AuthError, Client, OrlabError, Run, Unreachable
from orlab_client.sdk import (
    ActiveRun,
    ProjectError,
    current,
    finish,
    init,
    log,
    log_checkpoint,
    log_evaluation,
    log_samples,
)

__all__ = [
    "ActiveRun",
    "AuthError",
    "Client",
    "OrlabError",
    "ProjectError",
    "Run",
    "Unreachable",
    "current",
    "finish",
    "init",
    "log",
    "log_checkpoint",
    "log_evaluation",
    "log_samples",
]


def __getattr__(name: str):
    if name == "run":  # orlab_client.run: the current run, like wandb.run (None before init)
        return current()
    raise AttributeError(f"module 'orlab_client' has no attribute {name!r}")
