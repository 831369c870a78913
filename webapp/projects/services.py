from django.db import IntegrityError, transaction

from webapp.errors import ServiceError
from webapp.projects.models import Membership, Project


class ProjectNameTaken(ServiceError, IntegrityError):
    """``user`` already owns a project of that name (other owners' names are never consulted). An
    IntegrityError too, as the database's own clash was, so callers that caught that still do."""

    def __init__(self, name: str):
        super().__init__("name taken", {"name": ["you already have a project with this name"]})


def project_create(*, user, name: str, description: str = "") -> Project:
    """Raises ProjectNameTaken when the user already owns a project called ``name``."""
    if Project.objects.filter(owner=user, name=name).exists():
        raise ProjectNameTaken(name)
    try:
        with transaction.atomic():
            project = Project.objects.create(name=name, description=description, owner=user)
            Membership.objects.create(project=project, user=user, role=Membership.Role.OWNER)
    except IntegrityError:  # a concurrent create of the same name by the same owner
        raise ProjectNameTaken(name) from None
    return project


def project_add_member(*, project: Project, user, role: str = Membership.Role.MEMBER) -> Membership:
    membership, _ = Membership.objects.get_or_create(project=project, user=user, defaults={"role": role})
    return membership
