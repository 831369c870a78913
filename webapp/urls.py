from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularSwaggerView

from webapp.health import healthz

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("webapp.api.urls")),
    path("mlflow/", include("webapp.mlflow_api.urls")),  # MLflow-compatible tracking API
    path("healthz", healthz),
    # the browsable API reference (Swagger UI from drf-spectacular-sidecar's local assets, no CDN);
    # outside /api/, so LoginRequiredMiddleware sends a visitor without a session to the login page
    path("api-docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("webapp.ui.urls")),
]

# A URL no pattern matches under /api/ answers the API's JSON 404 (webapp/api/errors.py).
handler404 = "webapp.api.errors.not_found"
