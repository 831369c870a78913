"""URL patterns of issue 14's rollout analytics (API side); appended to webapp.api.urls."""

from webapp.api.prompt_views import urlpatterns as prompt_view_urls

urlpatterns: list = [*prompt_view_urls]
