"""Response compression: Django's GZipMiddleware (with its BREACH padding) for whole responses, so
the compare page's series JSON (megabytes of digits at 50-100 runs) travels gzip-compressed.

Streaming responses pass through untouched: a gzip stream holds data back until its buffer fills,
which would stall a live stream (server-sent events, a log tail) and file downloads gain little."""

from django.middleware.gzip import GZipMiddleware


class CompressMiddleware(GZipMiddleware):
    def process_response(self, request, response):
        if response.streaming or response.get("Content-Type", "").startswith("text/event-stream"):
            return response
        return super().process_response(request, response)
