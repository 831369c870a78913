"""URL patterns of issue 14's rollout analytics (pages); appended to webapp.ui.urls."""

from django.urls import path

from webapp.ui import prompt_views

urlpatterns: list = [
    path("runs/<int:pk>/prompts/", prompt_views.run_prompts, name="run-prompts"),
    path("runs/<int:pk>/prompts/<int:prompt_pk>/", prompt_views.run_prompt, name="run-prompt"),
    path("runs/<int:pk>/distributions/", prompt_views.run_distributions, name="run-distributions"),
]
