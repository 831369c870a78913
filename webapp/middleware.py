import time


class ServerTimingMiddleware:
    """Adds ``Server-Timing: app;dur=<ms>`` to every response: what the server spent, visible in the
    browser's network panel and used by bench/ to separate server time from client time."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        start = time.perf_counter()
        response = self.get_response(request)
        response["Server-Timing"] = f"app;dur={(time.perf_counter() - start) * 1000:.1f}"
        return response


class RejectNulMiddleware:
    """PostgreSQL text cannot hold NUL bytes: a query string carrying one would surface as a database
    error deep inside a filter. Refuse it at the door with a 400 instead."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from django.http import JsonResponse

        if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in request.GET.items()):
            return JsonResponse(
                {"detail": "invalid query", "errors": {"__all__": ["NUL characters are not allowed"]}},
                status=400,
            )
        return self.get_response(request)


#: API query parameters that may be given several times (documented as arrays in /api/schema/)
REPEATABLE_API_PARAMETERS = frozenset({"col"})


class SingleApiQueryValuesMiddleware:
    """An API query parameter given more than once is a 400 naming it, unless the schema documents it
    as repeatable (``col``): every reader took one of the values (the last, mostly) and answered as if
    the request were valid, where the schema says one value (schemathesis' negative_data_rejection)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        from django.http import JsonResponse

        if request.path.startswith("/api/"):
            repeated = sorted(
                key
                for key, values in request.GET.lists()
                if len(values) > 1 and key not in REPEATABLE_API_PARAMETERS
            )
            if repeated:
                return JsonResponse(
                    {"detail": "invalid query", "errors": {key: ["given once"] for key in repeated}},
                    status=400,
                )
        return self.get_response(request)
