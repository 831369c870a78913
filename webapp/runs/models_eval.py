"""Evaluation policies of runs (issue 15 point 4): what a run evaluates whenever it saves a checkpoint."""

from django.db import models

from webapp.datasets.models import Dataset

__all__ = ["EvalPolicy"]


class EvalPolicy(models.Model):
    """A run's evaluation policy: every ``every``-th checkpoint of the run is evaluated on each benchmark
    (a problems dataset of the run's project) by a worker on the `eval` queue (webapp.runs.eval_policy).
    The sampling settings left null are the run's own (services.evaluation_settings), so a policy set at
    launch follows the config it launched with."""

    run = models.OneToOneField("runs.Run", on_delete=models.CASCADE, related_name="eval_policy")
    benchmarks = models.ManyToManyField(Dataset, related_name="eval_policies", blank=True)
    # the 1st, 2nd, ... checkpoint the run records; 1 evaluates all of them
    every = models.PositiveIntegerField(default=1)
    # samples per problem (the protocol's n, Evaluation.k); null: the run's own
    n = models.PositiveIntegerField(null=True, blank=True)
    # the k of pass@k / pass^k / maj@k, each <= n; empty: 1, 2, 4, ... n
    ks = models.JSONField(default=list, blank=True)
    temperature = models.FloatField(null=True, blank=True)
    top_p = models.FloatField(null=True, blank=True)
    max_new_tokens = models.PositiveIntegerField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "runs"
