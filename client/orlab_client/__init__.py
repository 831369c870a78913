"""orlab's Python client: create a run, log metrics/samples/checkpoints from a background thread,
finish or fail it. When the server is unreachable every record is kept in a local spool file and
sent later (``orlab-client sync``); the server is idempotent per (run, key, step), so a record
sent twice is stored once.

    from orlab_client import Client

    client = Client("http://orlab:8000", token="...")
    with client.create_run(project=1, name="verl grpo", config={"lr": 1e-6}) as run:
        for step in range(1000):
            run.log(step, {"train/loss": loss, "policy/entropy": ent})
"""

from orlab_client.client import Client, OrlabError, Run

__all__ = ["Client", "OrlabError", "Run"]
