from django.contrib import admin
from django.urls import include, path

from webapp.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("webapp.api.urls")),
    path("healthz", healthz),
    path("", include("webapp.ui.urls")),
]

# A URL no pattern matches under /api/ answers the API's JSON 404 (webapp/api/errors.py).
handler404 = "webapp.api.errors.not_found"
