"""Integrations of orlab's client with other trainers. Each one imports its trainer's package only
when it is used, so ``import orlab_client`` never needs them.

- ``orlab_client.integrations.trl``: ``OrlabCallback`` / ``add_orlab_callback`` for TRL's
  ``GRPOTrainer`` (metrics, and completions as samples). Needs ``pip install orlab-client[trl]``.
"""

__all__ = ["OrlabCallback", "add_orlab_callback"]


def __getattr__(name: str):
    if name in __all__:
        from orlab_client.integrations import trl

        return getattr(trl, name)
    raise AttributeError(f"module 'orlab_client.integrations' has no attribute {name!r}")
