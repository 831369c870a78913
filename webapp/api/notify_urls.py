"""API routes: notification channels and deliveries (issue 15 point 3, webapp/api/notify_views.py)."""

from django.urls import path

from webapp.api import notify_views as v

urlpatterns: list = [
    path("projects/<int:project_id>/channels/", v.ChannelListApi.as_view(), name="api-notify-channels"),
    path("channels/<int:pk>/", v.ChannelDetailApi.as_view(), name="api-notify-channel"),
    path("channels/<int:pk>/test/", v.ChannelTestApi.as_view(), name="api-notify-channel-test"),
    path("projects/<int:project_id>/deliveries/", v.DeliveryListApi.as_view(), name="api-notify-deliveries"),
]
