"""The JSON values orlab stores, checked without any web framework: the API's parser and serializers
(webapp/api/json_safety.py) and the services (a config from the launch form) share these rules.

Refused: integers beyond +-2^53 (a browser's JSON.parse rounds them, and integers beyond 64 bits
made the whole runs list fail), NUL characters (PostgreSQL text and jsonb cannot hold them), lone
surrogates (not encodable as UTF-8), non-finite numbers (jsonb has no NaN/Infinity), nesting deeper
than MAX_DEPTH (a 5,000-deep array exhausted the parser's recursion), and configs larger than
MAX_CONFIG_BYTES (a 25 MB config made every runs page 25 MB)."""

from __future__ import annotations

import json
import math

MAX_SAFE_INT = 2**53  # JavaScript's Number.MAX_SAFE_INTEGER is 2^53 - 1
MAX_DEPTH = 64
MAX_CONFIG_BYTES = 256 * 1024


class UnsafeJSON(ValueError):
    """``path`` locates the offending value (``a.b[3]``); empty for the document itself."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path or 'value'}: {reason}")
        self.path = path
        self.reason = reason


def _check_str(text: str, path: str) -> None:
    if "\x00" in text:
        raise UnsafeJSON(path, "NUL characters are not allowed")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeJSON(path, "lone surrogate characters are not allowed") from None


def _printable(key: str) -> str:
    """A key as it may appear in an error path: the response must itself be valid UTF-8 JSON."""
    return key.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


def check_json(value, path: str = "", max_depth: int = MAX_DEPTH) -> None:
    """Raises UnsafeJSON for the first unsafe value. Iterative, so a deep document cannot exhaust
    the interpreter's recursion limit while being checked."""
    stack = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, int):
            if not -MAX_SAFE_INT <= item <= MAX_SAFE_INT:
                raise UnsafeJSON(where, f"integers must be within +-2^53 ({MAX_SAFE_INT})")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise UnsafeJSON(where, "numbers must be finite")
        elif isinstance(item, str):
            _check_str(item, where)
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                raise UnsafeJSON(where, f"nested deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        raise UnsafeJSON(where, "object keys must be strings")
                    name = _printable(key)
                    child_path = f"{where}.{name}" if where else name
                    _check_str(key, child_path)
                    stack.append((child, child_path, depth + 1))
            else:
                stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
        else:
            raise UnsafeJSON(where, f"unsupported type {type(item).__name__}")


def encoded_size(value) -> int:
    """Bytes of ``value`` as compact JSON (what the size limits count)."""
    return len(json.dumps(value, separators=(",", ":")).encode())
