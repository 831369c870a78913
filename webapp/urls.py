from django.contrib import admin
from django.http import HttpResponse
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("webapp.api.urls")),
    path("healthz", lambda request: HttpResponse("ok", content_type="text/plain")),
    path("", include("webapp.ui.urls")),
]
