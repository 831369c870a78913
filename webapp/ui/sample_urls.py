"""URL patterns of issue 14's rollout analytics (pages); appended to webapp.ui.urls."""

urlpatterns: list = []
