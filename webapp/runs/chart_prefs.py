"""Run-page chart preferences (issue 16 point 2): which charts a user pinned and which metric-prefix
sections they collapsed, per project (webapp.runs.models_charts.ChartPrefs).

Changes are operations (pin, unpin, collapse, expand), applied under a row lock, not a replacement of
the lists: two tabs of the same project each pinning a chart keep both pins, where a "here is my
whole list" write from the older tab would drop the other's."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from webapp.projects.models import Project
from webapp.runs.models import ChartPrefs
from webapp.runs.services import RunError

MAX_PINNED = 100  # more than a page shows on top; a bound keeps the row (and the page's JSON) small
MAX_COLLAPSED = 200


def prefs_get(project: Project, user) -> dict:
    row = ChartPrefs.objects.filter(project=project, user=user).first()
    return {
        "project": project.pk,
        "pinned": list(row.pinned) if row else [],
        "collapsed": list(row.collapsed) if row else [],
    }


def _row_locked(project: Project, user) -> ChartPrefs:
    try:
        with transaction.atomic():  # a savepoint: a concurrent first write loses the race cleanly
            ChartPrefs.objects.get_or_create(project=project, user=user)
    except IntegrityError:
        pass
    return ChartPrefs.objects.select_for_update().get(project=project, user=user)


def _apply(current: list[str], add: list[str], remove: list[str]) -> list[str]:
    gone = set(remove)
    out = [k for k in current if k not in gone]
    out += [k for k in dict.fromkeys(add) if k not in out and k not in gone]
    return out


def prefs_update(
    project: Project,
    user,
    *,
    pin: list[str] = (),
    unpin: list[str] = (),
    collapse: list[str] = (),
    expand: list[str] = (),
) -> dict:
    """Apply the operations; a key both pinned and unpinned in one request ends unpinned (same for
    sections). RunError (400) when the result exceeds the bounds."""
    with transaction.atomic():
        row = _row_locked(project, user)
        pinned = _apply(list(row.pinned), list(pin), list(unpin))
        collapsed = _apply(list(row.collapsed), list(collapse), list(expand))
        errors = {}
        if len(pinned) > MAX_PINNED:
            errors["pin"] = [f"at most {MAX_PINNED} pinned charts per project; unpin some first"]
        if len(collapsed) > MAX_COLLAPSED:
            errors["collapse"] = [f"at most {MAX_COLLAPSED} collapsed sections per project"]
        if errors:
            raise RunError("invalid chart preferences", errors)
        row.pinned, row.collapsed = pinned, collapsed
        row.save(update_fields=["pinned", "collapsed", "updated_at"])
    return {"project": project.pk, "pinned": pinned, "collapsed": collapsed}
