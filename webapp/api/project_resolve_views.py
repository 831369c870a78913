"""``GET /api/projects/resolve/?name=NAME``: the project a name means to the caller, as the Python
client's ``ORLAB_PROJECT=<name>`` resolves it. The caller's own project of that name first, then a
project they are a member of; several such projects of different owners are ambiguous (400 naming
the owners); none is a 404. Other teams' projects are never consulted."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from webapp.api.errors import bad_request
from webapp.projects.selectors import ProjectNameAmbiguous, project_by_name


class ResolvedProjectSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    owner = serializers.CharField(allow_null=True, help_text="the owner's username")
    mine = serializers.BooleanField(help_text="true when the caller owns it")


class ProjectResolveApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "name",
                {"type": "string", "minLength": 1, "maxLength": 200},
                required=True,
                description="the project's name",
            )
        ],
        responses={
            200: ResolvedProjectSerializer,
            404: OpenApiResponse(OpenApiTypes.OBJECT, description="no project of that name among yours"),
        },
    )
    def get(self, request: Request) -> Response:
        name = request.query_params.get("name", "")
        if not name or len(name) > 200:  # (a NUL byte never gets here: RejectNulMiddleware)
            return bad_request(
                "invalid input", {"name": ["a project name of 1 to 200 characters is required"]}
            )
        try:
            project = project_by_name(user=request.user, name=name)
        except ProjectNameAmbiguous as exc:
            return bad_request(str(exc), {"name": [str(exc)]})
        if project is None:
            return Response({"detail": f"no project named {name!r}", "errors": {}}, status=404)
        owner = project.owner.username if project.owner_id else None
        return Response(
            {
                "id": project.id,
                "name": project.name,
                "owner": owner,
                "mine": project.owner_id == request.user.id,
            }
        )


urlpatterns = [path("projects/resolve/", ProjectResolveApi.as_view(), name="api-project-resolve")]
