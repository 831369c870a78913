from rest_framework import pagination

from webapp.runs.services import RunError


class PageNumberPagination(pagination.PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 1000

    def get_page_size(self, request):
        """A page_size that is not a positive integer is a 400 naming it (DRF fell back to the default
        silently, so a typo went unnoticed); above max_page_size it is capped, as documented."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is not None:
            try:
                valid = int(raw) >= 1
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
