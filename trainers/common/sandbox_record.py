"""What a run records about the sandbox that scored its programs (issue 11, "No silent weak sandbox").

A RewardPool keeps the guards its first batch with code ran under in ``pool.sandbox``
(trainers.common.sandbox.sandbox_guards: "mode" full or weak, "missing", "allow_weak", "summary" and the
details). Trainers never import Django, so they return it in their summary dict (the worker stores the
summary on the run and the run page shows it) and an evaluation puts it in its protocol.

A run that ends before its trainer returns (it raised, its worker was killed) has no returned summary, so
the pool also announces the guards the moment scoring starts: the worker's sink (workers.sinks.DbSink)
listens while it is open and stores them on the run at once. A failed, lost, cancelled or interrupted run
therefore says which guards scored its programs whenever scoring started."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# Who hears of a pool's first scoring with code in this process: bound methods, held weakly (a sink
# that was never closed does not stay alive for it).
_listeners: list[weakref.WeakMethod] = []


def sandbox_record(pool: Any) -> dict[str, Any]:
    """``{"sandbox": guards}`` once ``pool`` scored code, else ``{}`` (no program ran, nothing to say)."""
    guards = getattr(pool, "sandbox", None)
    return {"sandbox": dict(guards)} if guards else {}


def listen(method: Callable[[dict[str, Any]], None]) -> None:
    """``method(guards)`` (a bound method) is called when a pool starts scoring code, until ``unlisten``."""
    _listeners.append(weakref.WeakMethod(method))


def unlisten(method: Callable[[dict[str, Any]], None]) -> None:
    _listeners[:] = [ref for ref in _listeners if ref() is not None and ref() != method]


def announce(guards: dict[str, Any]) -> None:
    """Called by RewardPool when its first batch with code is about to run. A listener that fails is
    logged, never raised: recording the guards must not stop the scoring."""
    for ref in list(_listeners):
        method = ref()
        if method is None:
            continue
        try:
            method(dict(guards))
        except Exception:
            log.exception("could not record the sandbox guards")
