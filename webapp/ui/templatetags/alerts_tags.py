"""``{% run_events run as events %}``: the newest events of a run for its events card (one query)."""

from __future__ import annotations

from django import template

from webapp.alerts.models import Event

register = template.Library()

RUN_EVENTS_SHOWN = 50


@register.simple_tag
def run_events(run) -> list[Event]:
    return list(Event.objects.filter(run=run).order_by("-created_at", "-id")[:RUN_EVENTS_SHOWN])
