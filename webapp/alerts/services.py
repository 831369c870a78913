"""Writing rules, mutes and acknowledgements. Every change of a project's rules bumps its
RulesVersion, so the ingest caches of every process re-read them (webapp.alerts.engine)."""

from __future__ import annotations

import math
from datetime import datetime

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from webapp.alerts import presets as preset_table
from webapp.alerts.models import Event, Mute, Rule, RulesVersion, RunPulse
from webapp.errors import ServiceError
from webapp.projects.models import Project
from webapp.runs.models import Run


class AlertError(ServiceError):
    pass


OPS = (">", ">=", "<", "<=")
DIRECTIONS = ("up", "down", "both")
MAX_WINDOW = 1000  # points a `change` rule keeps per (run, key)


def _number(params: dict, name: str, errors: dict, *, default=None, lo=None, hi=None, integer=False):
    raw = params.get(name, default)
    if raw is None:
        errors[f"params.{name}"] = ["required"]
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        errors[f"params.{name}"] = ["must be a finite number"]
        return None
    if integer and int(raw) != raw:
        errors[f"params.{name}"] = ["must be an integer"]
        return None
    if (lo is not None and raw < lo) or (hi is not None and raw > hi):
        errors[f"params.{name}"] = [f"must be between {lo} and {hi}"]
        return None
    return int(raw) if integer else float(raw)


def _choice(params: dict, name: str, choices, errors: dict, default=None):
    raw = params.get(name, default)
    if raw not in choices:
        errors[f"params.{name}"] = [f"one of {', '.join(choices)}"]
        return None
    return raw


def clean_params(kind: str, params) -> dict:
    """The params of a rule of ``kind``, checked and with defaults filled; AlertError (400) naming
    each bad field otherwise. Unknown names are refused: a typo must not silently do nothing."""
    if not isinstance(params, dict):
        raise AlertError("invalid rule", {"params": ["must be an object"]})
    errors: dict[str, list[str]] = {}
    allowed = {
        "threshold": {"op", "value"},
        "change": {"window", "amount", "relative", "direction"},
        "zscore": {"z", "direction", "min_points"},
        "nan_inf": set(),
        "stalled": {"seconds"},
        "collapse": {"ratio", "window", "floor", "smooth", "min_points"},
    }[kind]
    for name in params:
        if name not in allowed:
            errors[f"params.{name}"] = [
                f"unknown for kind {kind}; allowed: {', '.join(sorted(allowed)) or 'none'}"
            ]
    out: dict = {}
    if kind == "threshold":
        out["op"] = _choice(params, "op", OPS, errors)
        out["value"] = _number(params, "value", errors)
    elif kind == "change":
        out["window"] = _number(params, "window", errors, default=10, lo=1, hi=MAX_WINDOW, integer=True)
        out["amount"] = _number(params, "amount", errors, lo=0, hi=1e300)
        relative = params.get("relative", False)
        if not isinstance(relative, bool):
            errors["params.relative"] = ["must be true or false"]
        out["relative"] = relative is True
        out["direction"] = _choice(params, "direction", DIRECTIONS, errors, default="both")
    elif kind == "zscore":
        out["z"] = _number(params, "z", errors, default=4.0, lo=0.5, hi=1e6)
        out["direction"] = _choice(params, "direction", DIRECTIONS, errors, default="both")
        out["min_points"] = _number(params, "min_points", errors, default=20, lo=2, hi=10**9, integer=True)
    elif kind == "stalled":
        out["seconds"] = _number(params, "seconds", errors, default=600, lo=1, hi=10**8)
    elif kind == "collapse":
        defaults = preset_table._collapse_params()
        out["ratio"] = _number(params, "ratio", errors, default=defaults["ratio"], lo=0, hi=1)
        out["window"] = _number(params, "window", errors, default=defaults["window"], lo=0, hi=10**9)
        out["floor"] = _number(params, "floor", errors, default=defaults["floor"], lo=0, hi=1e300)
        out["smooth"] = _number(
            params, "smooth", errors, default=defaults["smooth"], lo=1, hi=1000, integer=True
        )
        out["min_points"] = _number(
            params, "min_points", errors, default=defaults["min_points"], lo=1, hi=10**6, integer=True
        )
    if errors:
        raise AlertError("invalid rule", errors)
    return out


def clean_key(kind: str, key: str) -> str:
    key = (key or "").strip()
    if kind == "stalled":
        if key:
            raise AlertError("invalid rule", {"key": ["a stalled rule watches every key: leave it empty"]})
        return ""
    if not key:
        raise AlertError("invalid rule", {"key": ["a metric key or an alias (@name) is required"]})
    if key.startswith("@") and preset_table.alias_sources(key) is None:
        raise AlertError(
            "invalid rule",
            {"key": [f"unknown alias; one of {', '.join('@' + a for a in preset_table.ALIASES)}"]},
        )
    return key


def bump_version(project_id: int) -> None:
    """Make every process re-read this project's rules (after the transaction commits)."""
    updated = RulesVersion.objects.filter(project_id=project_id).update(version=F("version") + 1)
    if not updated:
        RulesVersion.objects.get_or_create(project_id=project_id, defaults={"version": 1})
    from webapp.alerts import engine

    engine.forget(project_id)  # this process (and its own transaction) at once
    transaction.on_commit(lambda: engine.forget(project_id))  # ... and threads that read meanwhile


def _seed_pulses(rule: Rule) -> None:
    """A new stalled rule starts counting now for the project's running runs, not from their start
    (their pulses were not kept while the project had no stalled rule)."""
    now = timezone.now()
    running = Run.objects.filter(project_id=rule.project_id, status=Run.Status.RUNNING).values_list(
        "id", flat=True
    )
    RunPulse.objects.bulk_create(
        [RunPulse(run_id=rid, last_point_at=now) for rid in running],
        update_conflicts=True,
        unique_fields=["run"],
        update_fields=["last_point_at"],
    )


RULE_FIELDS = (
    "name",
    "kind",
    "key",
    "params",
    "severity",
    "run_kind",
    "run_group",
    "run_tag",
    "run",
    "enabled",
)


@transaction.atomic
def rule_save(*, project: Project, user, data: dict, rule: Rule | None = None) -> Rule:
    """Create (``rule`` None) or update a rule from already type-checked ``data`` (the API's
    serializer or the page's form); the kind-specific parts are checked here."""
    rule = rule or Rule(project=project, created_by=user)
    for name in RULE_FIELDS:
        if name in data:
            setattr(rule, name, data[name])
    if rule.kind not in Rule.Kind.values:
        raise AlertError("invalid rule", {"kind": [f"one of {', '.join(Rule.Kind.values)}"]})
    rule.key = clean_key(rule.kind, rule.key)
    rule.params = clean_params(rule.kind, rule.params if rule.params is not None else {})
    if rule.run_id is not None and rule.run.project_id != project.id:
        raise AlertError("invalid rule", {"run": ["no such run in this project"]})
    rule.save()
    bump_version(project.id)
    if rule.kind == Rule.Kind.STALLED:
        _seed_pulses(rule)
    return rule


@transaction.atomic
def rule_delete(rule: Rule) -> None:
    project_id = rule.project_id
    rule.delete()
    bump_version(project_id)


@transaction.atomic
def preset_apply(*, project: Project, user, name: str, run_filter: dict | None = None) -> list[Rule]:
    """The preset's rules, created as ordinary rules (edit or delete them like any other)."""
    table = preset_table.presets()
    if name not in table:
        raise AlertError("unknown preset", {"preset": [f"one of {', '.join(table)}"]})
    created = []
    for fields in table[name][1]:
        data = {**fields, **(run_filter or {})}
        rule = rule_save(project=project, user=user, data=data)
        rule.preset = name
        rule.save(update_fields=["preset"])
        created.append(rule)
    return created


def events_acknowledge(*, user, events) -> int:
    return events.filter(acknowledged_at__isnull=True).update(
        acknowledged_by=user, acknowledged_at=timezone.now()
    )


@transaction.atomic
def mute_create(*, user, rule: Rule, run: Run | None, until: datetime | None) -> Mute:
    if run is not None and run.project_id != rule.project_id:
        raise AlertError("invalid mute", {"run": ["no such run in this rule's project"]})
    if until is not None and until <= timezone.now():
        raise AlertError("invalid mute", {"until": ["must be in the future"]})
    mute = Mute.objects.create(rule=rule, run=run, until=until, created_by=user)
    bump_version(rule.project_id)  # ingest keeps the project's mutes with its compiled rules
    return mute


@transaction.atomic
def mute_delete(*, rule: Rule, run: Run | None) -> int:
    """Unmute: the rule's mutes for ``run`` (None: its whole-rule mutes)."""
    removed = Mute.objects.filter(rule=rule, run=run).delete()[0]
    bump_version(rule.project_id)
    return removed


def active_mutes(rule_ids, run_id: int) -> set[int]:
    """Which of ``rule_ids`` are muted for ``run_id`` now (one query; called only when rules fire)."""
    from django.db.models import Q

    now = timezone.now()
    return set(
        Mute.objects.filter(rule_id__in=list(rule_ids))
        .filter(Q(run_id=run_id) | Q(run__isnull=True))
        .filter(Q(until__isnull=True) | Q(until__gt=now))
        .values_list("rule_id", flat=True)
    )


def event_dict(event: Event) -> dict:
    return {
        "id": event.id,
        "run_id": event.run_id,
        "step": event.step,
        "key": event.key,
        "rule_id": event.rule_id,
        "rule_name": event.rule_name,
        "severity": event.severity,
        "message": event.message,
        "value": event.value,
        "created_at": event.created_at.isoformat() if event.created_at else None,
        "acknowledged": event.acknowledged_at is not None,
    }
