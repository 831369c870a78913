"""URL patterns of issue 14's rollout analytics (API side); appended to webapp.api.urls.
GET /api/runs/{id}/samples/ itself is api-run-samples (webapp.api.run_views.RunSamplesApi)."""

from django.urls import path

from webapp.api.sample_views import SampleGroupApi, SampleTokensApi

urlpatterns: list = [
    path(
        "runs/<int:pk>/samples/groups/<int:step>/<int:group>/",
        SampleGroupApi.as_view(),
        name="api-run-sample-group",
    ),
    path(
        "runs/<int:pk>/samples/<int:sample_id>/tokens/",
        SampleTokensApi.as_view(),
        name="api-run-sample-tokens",
    ),
]
