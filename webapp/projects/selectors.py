from django.db.models import QuerySet

from webapp.projects.models import Project


def project_list(*, user) -> QuerySet[Project]:
    """The projects ``user`` belongs to: the root of every access check."""
    return Project.objects.filter(memberships__user=user)
