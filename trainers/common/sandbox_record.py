"""What a run records about the sandbox that scored its programs (issue 11, "No silent weak sandbox").

A RewardPool keeps the guards its first batch with code ran under in ``pool.sandbox``
(trainers.common.sandbox.sandbox_guards: "mode" full or weak, "missing", "allow_weak", "summary" and the
details). Trainers never import Django, so they return it in their summary dict (the worker stores the
summary on the run and the run page shows it) and an evaluation puts it in its protocol."""

from __future__ import annotations

from typing import Any


def sandbox_record(pool: Any) -> dict[str, Any]:
    """``{"sandbox": guards}`` once ``pool`` scored code, else ``{}`` (no program ran, nothing to say)."""
    guards = getattr(pool, "sandbox", None)
    return {"sandbox": dict(guards)} if guards else {}
