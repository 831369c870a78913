"""Filter sets of the list endpoints. ``?project=`` is a plain number, not django-filter's default
model choice: that one answered "select a valid choice" for an id that does not exist and an empty
list for another team's project, which told anyone which project ids exist. Now both are an empty
list (the querysets are already limited to the user's projects)."""

import django_filters

from webapp.datasets.models import Dataset
from webapp.runs.models import Run

MAX_ID = 2**53


def _project_filter() -> django_filters.NumberFilter:
    return django_filters.NumberFilter(
        field_name="project_id", min_value=1, max_value=MAX_ID, help_text="a project id"
    )


class RunFilter(django_filters.FilterSet):
    project = _project_filter()

    class Meta:
        model = Run
        fields = {"kind": ["exact"], "status": ["exact", "in"], "group": ["exact"]}


class DatasetFilter(django_filters.FilterSet):
    project = _project_filter()

    class Meta:
        model = Dataset
        fields = ["kind", "name", "status"]
