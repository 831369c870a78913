"""Template tags of the run page's checkpoint x benchmark section (templates/ui/_run_checkpoint_evals.html,
issue 15 points 4, 6): the table (webapp.runs.checkpoint_evals) and the eval policy editor's data."""

from __future__ import annotations

from django import template

from webapp.datasets.models import Dataset
from webapp.runs import eval_policy, upload_eval
from webapp.runs.checkpoint_evals import checkpoint_table

register = template.Library()


@register.simple_tag
def checkpoint_eval_table(run, checkpoints=None):
    return checkpoint_table(run, checkpoints)


@register.simple_tag
def eval_policy_panel(run):
    """The editor's data: the run's policy (or a disabled empty one), its defaults, the project's ready
    problems datasets, and whether this run's checkpoints can be evaluated at all."""
    policy = eval_policy.policy_of(run)
    data = eval_policy.policy_to_dict(run, policy)
    chosen = set(data["benchmarks"])
    benchmarks = [
        {"id": d.id, "label": f"{d.name} v{d.version}", "chosen": d.id in chosen}
        for d in Dataset.objects.filter(
            project_id=run.project_id, kind=Dataset.Kind.PROBLEMS, status=Dataset.Status.READY
        ).order_by("name", "version")
    ]
    evaluable = upload_eval.evaluates(run.kind)  # external runs' uploads too, once workers load them
    return {
        **data,
        # the evaluate action's choices: none when this run's checkpoints are not policies
        "evaluate_choices": benchmarks if evaluable else [],
        "ks_text": ",".join(str(k) for k in data["ks"]),
        "benchmark_choices": benchmarks,
        "evaluable": evaluable,
    }


@register.filter
def score(value):
    """A metric in [0, 1] as the table shows it (3 decimals)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    return f"{value:.3f}"
