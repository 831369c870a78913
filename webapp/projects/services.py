from django.db import transaction

from webapp.projects.models import Membership, Project


@transaction.atomic
def project_create(*, user, name: str, description: str = "") -> Project:
    project = Project.objects.create(name=name, description=description)
    Membership.objects.create(project=project, user=user, role=Membership.Role.OWNER)
    return project


def project_add_member(*, project: Project, user, role: str = Membership.Role.MEMBER) -> Membership:
    membership, _ = Membership.objects.get_or_create(project=project, user=user, defaults={"role": role})
    return membership
