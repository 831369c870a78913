"""The `stalled` rule kind, checked by the housekeeping task on the control queue (issue 15).

Two queries whatever the number of runs: the enabled stalled rules, then the running runs of their
projects whose last point (RunPulse, written on ingest for such projects) or, with none, whose start
is older than the shortest window, with their open episodes. The rest is matching in Python over
those candidates only. An episode stays open while the run logs nothing new: the state keeps the
pulse it fired on, and a newer pulse re-arms the rule."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from webapp.alerts import engine
from webapp.alerts.models import Event, Rule, RuleState, RunPulse
from webapp.runs.models import Run


def check_stalled() -> int:
    """Fire stalled rules whose runs logged no new point for their window. Returns events fired."""
    rules = [engine._compile(r) for r in Rule.objects.filter(kind=Rule.Kind.STALLED, enabled=True)]
    if not rules:
        return 0
    by_project: dict[int, list] = {}
    projects = dict(Rule.objects.filter(id__in=[r.id for r in rules]).values_list("id", "project_id"))
    for rule in rules:
        by_project.setdefault(projects[rule.id], []).append(rule)
    now = timezone.now()
    shortest = min(r.params["seconds"] for r in rules)
    pulse = RunPulse.objects.filter(run_id=OuterRef("pk")).values("last_point_at")[:1]
    candidates = list(
        Run.objects.filter(project_id__in=list(by_project), status=Run.Status.RUNNING)
        .annotate(last_at=Coalesce(Subquery(pulse), F("started_at"), F("created_at")))
        .filter(last_at__lt=now - timedelta(seconds=shortest))
        .values_list("id", "project_id", "kind", "group", "tags", "last_at")
    )
    if not candidates:
        return 0
    states = {
        (s.rule_id, s.run_id): engine.State(
            s.rule_id, s.run_id, s.key, s.active, s.n, s.mean, s.m2, s.buffer, s.pk
        )
        for s in RuleState.objects.filter(
            rule_id__in=[r.id for r in rules], run_id__in=[c[0] for c in candidates], key=""
        )
    }
    fired: dict[int, list[Event]] = {}
    changed = []
    for run_id, project_id, kind, group, tags, last_at in candidates:
        info = engine.RunInfo(run_id, project_id, kind, group, tuple(tags or ()), 0, 0.0)
        for rule in by_project.get(project_id, ()):
            idle = (now - last_at).total_seconds()
            if idle < rule.params["seconds"] or not rule.applies_to(info):
                continue
            mark = last_at.isoformat()
            state = states.get((rule.id, run_id)) or engine.State(rule.id, run_id, "")
            if state.active and state.buffer == [mark]:
                continue  # this silence fired already
            state.active, state.buffer = True, [mark]
            changed.append(state)
            fired.setdefault(run_id, []).append(
                engine._event(
                    rule,
                    info,
                    "",
                    None,
                    None,
                    f"no new point for {idle:.0f} s (window {rule.params['seconds']:g} s)",
                )
            )
    engine._save_states(changed)
    return sum(len(engine._write_events(events, run_id)) for run_id, events in fired.items())
