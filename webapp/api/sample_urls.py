"""URL patterns of issue 14's rollout analytics (API side); appended to webapp.api.urls."""

urlpatterns: list = []
