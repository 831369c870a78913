"""API routes: health rules, presets, mutes, events (issue 15; views in webapp.api.alert_views)."""

from django.urls import path

from webapp.api import alert_views as av

urlpatterns: list = [
    path("projects/<int:pk>/alert-rules/", av.RuleListApi.as_view(), name="api-alert-rules"),
    path("projects/<int:pk>/alert-presets/", av.PresetApplyApi.as_view(), name="api-alert-preset-apply"),
    path("projects/<int:pk>/events/", av.ProjectEventsApi.as_view(), name="api-project-events"),
    path("alert-rules/<int:pk>/", av.RuleDetailApi.as_view(), name="api-alert-rule"),
    path("alert-rules/<int:pk>/mute/", av.RuleMuteApi.as_view(), name="api-alert-rule-mute"),
    path("alert-rules/<int:pk>/unmute/", av.RuleUnmuteApi.as_view(), name="api-alert-rule-unmute"),
    path("alert-presets/", av.PresetListApi.as_view(), name="api-alert-presets"),
    path("runs/<int:pk>/events/", av.RunEventsApi.as_view(), name="api-run-events"),
    path("events/<int:pk>/acknowledge/", av.EventAcknowledgeApi.as_view(), name="api-event-acknowledge"),
    path("compare/events/", av.CompareEventsApi.as_view(), name="api-compare-events"),
]
