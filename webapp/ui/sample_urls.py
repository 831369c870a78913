"""URL patterns of issue 14's rollout analytics (pages); appended to webapp.ui.urls."""

from django.urls import path

from webapp.ui import sample_views

urlpatterns: list = [
    path("runs/<int:pk>/samples/", sample_views.run_samples, name="run-samples"),
    path(
        "runs/<int:pk>/samples/group/<int:step>/<int:group>/",
        sample_views.run_sample_group,
        name="run-sample-group",
    ),
    path(
        "runs/<int:pk>/samples/<int:sample_pk>/tokens/",
        sample_views.run_sample_tokens,
        name="run-sample-tokens",
    ),
]
