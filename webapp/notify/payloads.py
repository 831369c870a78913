"""What a notification says: the JSON body a webhook receives (fixed when the delivery is written, so
every attempt sends the same bytes' content) and the e-mail made from it."""

from __future__ import annotations

import math
from typing import Any

from django.utils import timezone

#: the run fields a run-end notification carries; the error is cut (a traceback can be long)
ERROR_CHARS = 2000


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def project_part(project) -> dict[str, Any]:
    return {"id": project.pk, "name": project.name}


def run_part(run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "name": run.name,
        "kind": run.kind,
        "status": run.status,
        "attempt": run.attempt,
        "group": run.group,
        "error": (run.error or "")[:ERROR_CHARS],
        "finished_at": _iso(run.finished_at),
        "path": f"/runs/{run.pk}/",  # the run page, relative to the dashboard's address
    }


def run_ended(run) -> dict[str, Any]:
    return {"type": "run.ended", "project": project_part(run.project), "run": run_part(run)}


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a value read off an event object."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # a NaN/inf value (the nan_inf rule's): JSON, and PostgreSQL's jsonb, have none
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


#: what an event's JSON carries, when the event object has it (webapp.alerts' Event)
EVENT_FIELDS = (
    "id",
    "kind",
    "metric",
    "step",
    "value",
    "message",
    "detail",
    "severity",
    "fired_at",
    "created_at",
)
RULE_FIELDS = ("id", "name", "kind", "metric", "preset")


def _fields(obj, names) -> dict[str, Any]:
    return {name: _plain(getattr(obj, name)) for name in names if hasattr(obj, name)}


def rule_fired(event, project, run=None, rule=None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "rule.fired",
        "project": project_part(project),
        "event": _fields(event, EVENT_FIELDS),
    }
    if rule is not None:
        body["rule"] = _fields(rule, RULE_FIELDS)
    if run is not None:
        body["run"] = run_part(run)
    return body


def test(channel, user) -> dict[str, Any]:
    return {
        "type": "test",
        "project": project_part(channel.project),
        "channel": {"id": channel.pk, "name": channel.name},
        "requested_by": getattr(user, "username", ""),
        "requested_at": timezone.now().isoformat(),
    }


def email_text(payload: dict[str, Any]) -> tuple[str, str]:
    """(subject, plain-text body) of the e-mail for ``payload``."""
    project = payload.get("project", {}).get("name", "")
    run = payload.get("run") or {}
    kind = payload.get("type")
    if kind == "run.ended":
        subject = f"[orlab {project}] run {run.get('id')} {run.get('name', '')!r} {run.get('status')}"
    elif kind == "rule.fired":
        rule = payload.get("rule") or {}
        event = payload.get("event") or {}
        what = rule.get("name") or event.get("rule_name") or "a health rule"
        subject = f"[orlab {project}] {what} fired" + (f" on run {run.get('id')}" if run else "")
    else:
        subject = f"[orlab {project}] test notification"
    lines = [subject, ""]
    for section in ("run", "rule", "event", "channel"):
        part = payload.get(section)
        if isinstance(part, dict) and part:
            lines.append(f"{section}:")
            lines += [f"  {k}: {v}" for k, v in part.items() if v not in (None, "")]
    return subject[:200], "\n".join(lines) + "\n"
