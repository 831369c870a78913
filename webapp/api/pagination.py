from rest_framework import pagination

from webapp.runs.services import RunError


class PageNumberPagination(pagination.PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_number(self, request, paginator):
        """``page`` must be one positive integer when given (DRF read '' or a list's last value as
        page 1 and answered 200 to what the schema calls invalid)."""
        values = request.query_params.getlist(self.page_query_param)
        if values:
            raw = values[0]
            if len(values) > 1 or not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
                raise RunError("invalid query", {self.page_query_param: ["a positive integer, given once"]})
        return super().get_page_number(request, paginator)

    def get_page_size(self, request):
        """A page_size that is not a positive integer is a 400 naming it (DRF fell back to the default
        silently, so a typo went unnoticed); above max_page_size it is capped, as documented."""
        values = request.query_params.getlist(self.page_size_query_param)
        raw = values[0] if values else None
        if raw is not None:
            try:
                valid = int(raw) >= 1 and len(values) == 1
            except ValueError:
                valid = False
            if not valid:
                raise RunError(
                    "invalid query",
                    {"page_size": [f"a positive integer (at most {self.max_page_size} are returned)"]},
                )
        return super().get_page_size(request)

    def get_schema_operation_parameters(self, view):
        params = super().get_schema_operation_parameters(view)
        for param in params:
            if param["name"] == self.page_size_query_param:
                param["schema"] = {"type": "integer", "minimum": 1}
        return params


class CappedCountPagination(PageNumberPagination):
    """Pages of a query object whose paginator stops counting a little past the requested page
    (webapp.datasets.selectors.CappedPaginator, webapp.selectors.samples.SamplePaginator): the view
    holds the query as ``query_attr``; ``count_capped`` says ``count`` is then a lower bound."""

    query_attr = ""

    def paginate_queryset(self, queryset, request, view=None):
        self.django_paginator_class = getattr(view, self.query_attr).paginator
        return super().paginate_queryset(queryset, request, view)

    def get_paginated_response(self, data):
        response = super().get_paginated_response(data)
        response.data["count_capped"] = self.page.paginator.capped
        return response

    def get_paginated_response_schema(self, schema):
        out = super().get_paginated_response_schema(schema)
        out["properties"]["count_capped"] = {"type": "boolean"}
        return out
