"""Mounted at /mlflow/ (webapp/urls.py). Every path below it answers MLflow's JSON, 404
ENDPOINT_NOT_FOUND included."""

from django.urls import path, re_path

from webapp.mlflow_api import views

urlpatterns = [
    path("api/2.0/mlflow/<path:endpoint>", views.dispatch),
    path("ajax-api/2.0/mlflow/<path:endpoint>", views.dispatch),
    path("api/2.0/mlflow-artifacts/artifacts", views.artifacts_list),
    path("ajax-api/2.0/mlflow-artifacts/artifacts", views.artifacts_list),
    path("api/2.0/mlflow-artifacts/artifacts/<path:path>", views.artifact_file),
    path("ajax-api/2.0/mlflow-artifacts/artifacts/<path:path>", views.artifact_file),
    re_path(r"^.*$", views.not_found),
]
