from django.conf import settings
from django.db import models


class Project(models.Model):
    """A team's workspace. Everything else (runs, datasets) belongs to exactly one project, and a
    user sees a project only through a Membership."""

    # Unique per owner, not globally: a global constraint told anyone whether another team had a
    # project of that name (an oracle across teams).
    name = models.CharField(max_length=200)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,  # projects whose creator was deleted keep existing
        on_delete=models.SET_NULL,
        related_name="owned_projects",
        help_text="who created it; names are unique among one owner's projects",
    )
    description = models.TextField(blank=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, through="Membership", related_name="projects")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="project_name_per_owner")]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "user"], name="membership_unique")]
