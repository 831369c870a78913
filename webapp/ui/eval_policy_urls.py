"""Page routes: the run page's checkpoint x benchmark table, its evaluate action and eval policy
editor, one evaluation's page (issue 15 points 4, 6; webapp.ui.eval_policy_views)."""

from django.urls import path

from webapp.ui import eval_policy_views as v

urlpatterns: list = [
    path(
        "runs/<int:pk>/checkpoints/<int:checkpoint_pk>/evaluate/",
        v.checkpoint_evaluate,
        name="run-checkpoint-evaluate",
    ),
    path("runs/<int:pk>/eval-policy/", v.policy_edit, name="run-eval-policy"),
    path("runs/<int:pk>/checkpoint-evals/", v.checkpoint_evals_table, name="run-checkpoint-evals"),
    path("runs/<int:pk>/evaluations/<int:evaluation_pk>/", v.evaluation_detail, name="run-evaluation"),
]
