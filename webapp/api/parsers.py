"""Form parsers that refuse a body which is not a form (issue 11, schemathesis' negative_data_rejection).

DRF's parsers read anything they cannot place as an empty form, so an endpoint whose fields are all
optional answered 201 to a multipart body with no parts (a bare string between two boundaries) or to an
urlencoded body that is a JSON array: the schema calls both invalid (the body must be an object). Here
they are a 400 (ParseError) saying what is wrong. Both stream as before: nothing more is held in memory."""

from __future__ import annotations

from django.http import QueryDict
from rest_framework import parsers
from rest_framework.exceptions import ParseError


class FormParser(parsers.FormParser):
    """application/x-www-form-urlencoded: every item is ``name=value`` (a bare word or a JSON value is
    not a form field)."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding") or "utf-8"
        raw = stream.read() if stream is not None else b""
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            raise ParseError("form body is not valid text") from None
        for item in text.split("&"):
            if item and "=" not in item:
                raise ParseError(f"form body: {item[:40]!r} is not a name=value field")
        return QueryDict(text, encoding=encoding)


class MultiPartParser(parsers.MultiPartParser):
    """multipart/form-data: a body that has content but no part Django can read as a field or a file
    (each needs a Content-Disposition header with a name) is refused; an empty form is still one."""

    def parse(self, stream, media_type=None, parser_context=None):
        result = super().parse(stream, media_type, parser_context)
        if result.data or result.files:
            return result
        request = (parser_context or {}).get("request")
        meta = getattr(request, "META", {}) if request is not None else {}
        try:
            length = int(meta.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        boundary = _boundary(meta.get("CONTENT_TYPE", ""))
        # an empty form is "--boundary--" and a line break (a little slack for a preamble of blank lines)
        if length > len(boundary) + 8:
            raise ParseError("multipart body has content but no form field or file part")
        return result


def _boundary(content_type: str) -> str:
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            return value.strip('"')
    return ""
