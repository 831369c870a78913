"""API routes: a run's evaluation policy (issue 15 point 4; webapp.api.eval_policy_views)."""

from django.urls import path

from webapp.api import eval_policy_views as ev

urlpatterns: list = [
    path("runs/<int:pk>/eval-policy/", ev.RunEvalPolicyApi.as_view(), name="api-run-eval-policy"),
]
