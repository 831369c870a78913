"""Filter sets of the list endpoints (the runs lists use webapp.selectors.runs instead). ``?project=`` is a plain number, not django-filter's default
model choice: that one answered "select a valid choice" for an id that does not exist and an empty
list for another team's project, which told anyone which project ids exist. Now both are an empty
list (the querysets are already limited to the user's projects)."""

import django_filters

from webapp.datasets.models import Dataset

MAX_ID = 2**53


def _project_filter() -> django_filters.NumberFilter:
    return django_filters.NumberFilter(
        field_name="project_id", min_value=1, max_value=MAX_ID, help_text="a project id"
    )


class StrictFilterSet(django_filters.FilterSet):
    """A filter given more than once, or a choice or number filter given an empty value (``?kind=``,
    ``?project=``), is a 400 naming it: django-filter took the last value, or read an empty one as no
    filter, and answered 200 to what the schema calls invalid (schemathesis' negative_data_rejection).
    An empty text filter (``?name=``) is a valid string and stays no filter."""

    def is_valid(self) -> bool:
        valid = super().is_valid()
        for name, flt in self.filters.items():
            values = self.data.getlist(name) if name in self.data else []
            if len(values) > 1:
                self.form.add_error(name, "given once")
                valid = False
            elif values == [""] and isinstance(
                flt, django_filters.ChoiceFilter | django_filters.NumberFilter
            ):
                self.form.add_error(name, "a value, not empty")
                valid = False
        return valid


class DatasetFilter(StrictFilterSet):
    project = _project_filter()

    class Meta:
        model = Dataset
        fields = ["kind", "name", "status"]
