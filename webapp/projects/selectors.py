from django.db.models import QuerySet

from webapp.projects.models import Project


def project_list(*, user) -> QuerySet[Project]:
    """The projects ``user`` belongs to: the root of every access check."""
    return Project.objects.filter(memberships__user=user)


class ProjectNameAmbiguous(Exception):
    """Several projects of other owners that ``user`` is a member of carry the name; ``owners`` names them."""

    def __init__(self, name: str, owners: list[str]):
        self.name = name
        self.owners = owners
        super().__init__(
            f"project name {name!r} is ambiguous: you are a member of projects of that name owned by "
            f"{', '.join(owners)}; pass the project's id instead"
        )


def project_by_name(*, user, name: str) -> Project | None:
    """The project called ``name`` that ``user`` sees: their own first (names are unique per owner),
    then a project they are a member of. None when there is none; ProjectNameAmbiguous when several
    owners' projects of that name share ``user`` as a member and none is ``user``'s own."""
    own = project_list(user=user).filter(owner=user, name=name).first()
    if own is not None:
        return own
    found = list(project_list(user=user).filter(name=name).select_related("owner").order_by("id")[:50])
    if len(found) > 1:
        owners = sorted({p.owner.username if p.owner_id else "(deleted user)" for p in found})
        raise ProjectNameAmbiguous(name, owners)
    return found[0] if found else None
