"""Page routes: the project alerts page and the POST targets of its forms and of the run page's
events card (issue 15; views in webapp.ui.alert_views)."""

from django.urls import path

from webapp.ui import alert_views as av

urlpatterns: list = [
    path("projects/<int:pk>/alerts/", av.alerts_page, name="alerts"),
    path("projects/<int:pk>/alerts/presets/", av.preset_apply, name="alerts-preset"),
    path("alerts/rules/<int:pk>/edit/", av.rule_edit, name="alerts-rule-edit"),
    path("alerts/rules/<int:pk>/delete/", av.rule_delete, name="alerts-rule-delete"),
    path("alerts/rules/<int:pk>/mute/", av.rule_mute, name="alerts-rule-mute"),
    path("alerts/rules/<int:pk>/unmute/", av.rule_unmute, name="alerts-rule-unmute"),
    path("alerts/events/<int:pk>/ack/", av.event_ack, name="alerts-event-ack"),
]
