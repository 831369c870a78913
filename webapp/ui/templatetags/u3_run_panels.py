"""Template tags of the run page's partials that need more than the page's context (issue 16 points
5, 8, 9): the partials are included with the run view's context (``run``, ``project``, ...), so what
they show beyond it (a queue position, download sizes, the theory-rate fits) is computed here, from
the same selectors the API answers with."""

from __future__ import annotations

from django import template

from webapp.runs.checkpoint_download import download_choices
from webapp.runs.queue import run_queue_position
from webapp.runs.tabular_rates import tabular_rates as _tabular_rates

register = template.Library()


@register.simple_tag
def tabular_rates(run):
    """The theory-rate checks of a tabular run (None for other kinds: the partial hides)."""
    return _tabular_rates(run)


@register.simple_tag(takes_context=True)
def queue_position(context, run):
    """Where a queued run stands in its queue, as seen by the page's user (None unless queued)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or run.status != "queued":
        return None
    return run_queue_position(run, user=user)


@register.simple_tag
def checkpoint_downloads(checkpoint):
    """The download choices of one checkpoint row: [{include, label, bytes, url}] ([] when deleted or
    not downloadable)."""
    return download_choices(checkpoint)
