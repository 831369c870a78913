"""Projects: list, create, detail."""

from __future__ import annotations

from rest_framework import generics

from webapp.api import serializers as s
from webapp.projects import services as project_services
from webapp.projects.models import Project
from webapp.projects.selectors import project_list
from webapp.runs import services


class ProjectListApi(generics.ListCreateAPIView):
    serializer_class = s.ProjectSerializer
    queryset = Project.objects.none()  # for the schema generator; requests use get_queryset()
    ordering_fields = ["name", "created_at"]

    def get_queryset(self):
        return project_list(user=self.request.user).order_by("name")

    def perform_create(self, serializer):
        data = serializer.validated_data
        try:
            serializer.instance = project_services.project_create(
                user=self.request.user, name=data["name"], description=data.get("description", "")
            )
        except project_services.ProjectNameTaken:
            # only the caller's own projects are consulted: other teams' names stay unknown
            raise services.RunError(
                "name taken", {"name": ["you already have a project with this name"]}
            ) from None


class ProjectDetailApi(generics.RetrieveAPIView):
    serializer_class = s.ProjectSerializer

    def get_queryset(self):
        return project_list(user=self.request.user)
