"""Page routes: the project notifications page (issue 15 point 3; webapp/ui/notify_views.py)."""

from django.urls import path

from webapp.ui import notify_views

urlpatterns: list = [
    path("projects/<int:pk>/notifications/", notify_views.notify_page, name="notify"),
]
