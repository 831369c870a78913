"""What JSON the API accepts, checked once at the door (the request parser) and again on the fields
that are stored as JSON (serializer validators), so a value that PostgreSQL, Python or a browser
cannot hold faithfully is a 400 naming the field instead of a 500 later, on some other page.

Refused: integers beyond +-2^53 (a browser's JSON.parse rounds them, and integers beyond 64 bits
made the whole runs list fail), NUL characters (PostgreSQL text and jsonb cannot hold them), lone
surrogates (not encodable as UTF-8), non-finite numbers (jsonb has no NaN/Infinity), nesting deeper
than MAX_DEPTH (a 5,000-deep array exhausted the parser's recursion), and configs larger than
MAX_CONFIG_BYTES (a 25 MB config made every runs page 25 MB)."""

from __future__ import annotations

import json

from rest_framework import serializers
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from webapp.json_checks import (  # noqa: F401  (re-exported: the API's names for them)
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    MAX_SAFE_INT,
    UnsafeJSON,
    check_json,
    encoded_size,
)


def loads(text: str | bytes):
    """json.loads that refuses what check_json refuses; raises UnsafeJSON or ValueError."""

    def no_constant(name: str):
        raise UnsafeJSON("", f"{name} is not valid JSON")

    try:
        # Integers are range-checked by check_json, which knows their path; Python itself refuses
        # numbers over 4,300 digits (a ValueError, so a 400) before any slow conversion.
        data = json.loads(text, parse_constant=no_constant)
    except RecursionError:
        raise UnsafeJSON("", f"nested deeper than {MAX_DEPTH} levels") from None
    check_json(data)
    return data


class SafeJSONParser(JSONParser):
    """DRF's JSON parser with check_json's limits. Every failure is a 400: malformed JSON a
    ParseError; an unsafe value a ValidationError naming its path (``config.note``), the API's usual
    field-error shape."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return loads(stream.read() if stream is not None else b"")
        except UnsafeJSON as exc:
            raise serializers.ValidationError({exc.path or "__all__": [exc.reason]}) from None
        except ValueError as exc:  # UnicodeDecodeError included
            raise ParseError(f"JSON parse error - {exc}") from None


def json_field_validator(max_bytes: int | None = None):
    """A serializer validator for a field stored as JSON; ``max_bytes`` bounds its encoded size."""

    def validate(value):
        try:
            check_json(value)
        except UnsafeJSON as exc:
            raise serializers.ValidationError(str(exc)) from None
        if max_bytes is not None:
            size = encoded_size(value)
            if size > max_bytes:
                raise serializers.ValidationError(
                    f"{size} bytes when encoded; at most {max_bytes // 1024} KB"
                )

    return validate


class SafeJSONField(serializers.JSONField):
    """A JSONField with check_json's limits. A JSON string from a form field is parsed by ``loads``
    (DRF's own json.loads let a deeply nested one raise RecursionError: a 500); a parsed value is
    checked before DRF re-encodes it (which recursed the same way)."""

    def to_internal_value(self, data):
        try:
            if self.binary or getattr(data, "is_json_string", False):
                return loads(data.decode() if isinstance(data, bytes) else data)
            check_json(data)
        except UnsafeJSON as exc:
            raise serializers.ValidationError(str(exc)) from None
        except ValueError:
            self.fail("invalid")
        return super().to_internal_value(data)
