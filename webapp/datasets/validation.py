"""Validation and normalisation of one imported row. A row is a preference pair
{prompt, chosen, rejected} with strings, or with chat conversations (lists of {role, content})
for chosen and rejected, as the public preference sets ship them; or a problem (math: prompt +
answer; code: prompt + tests)."""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from typing import Any

ROLES = {"system", "user", "assistant", "tool"}
MAX_DEPTH = 64  # the record itself is level 1
MAX_SAFE_INTEGER = 2**53  # beyond it a JSON number is not exact in JavaScript (the pages) nor in a float
_SURROGATE = re.compile("[\ud800-\udfff]")
_PLAIN = (bool, float, type(None), datetime.date, datetime.time)  # what orjson writes as is


class RowError(Exception):
    pass


def check_json(record: Any) -> None:
    """What a row must be to be stored as JSON (PostgreSQL's jsonb, the pages): nesting at most
    MAX_DEPTH, no NUL or lone surrogate in any text or key (jsonb refuses them), integers within
    +-2^53, only JSON's types (a Parquet decimal or binary value is not). Iterative: a deep value
    costs no recursion. The RowError names the field."""
    stack = [(record, "row", 1)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value, where)
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise RowError(f"{where}: nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, str):
                        raise RowError(f"{where}: key {key!r} is not text")
                    _check_text(key, f"{where} key")
                    stack.append((item, key if where == "row" else f"{where}.{key}", depth + 1))
            else:
                stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > MAX_SAFE_INTEGER:
                raise RowError(f"{where}: integer beyond +-2^53 ({str(value)[:30]})")
        elif not isinstance(value, _PLAIN):
            raise RowError(
                f"{where}: unsupported value of type {type(value).__name__} (use text or a number)"
            )


def _check_text(text: str, where: str) -> None:
    if "\x00" in text:
        raise RowError(f"{where}: contains a NUL character")
    if _SURROGATE.search(text):
        raise RowError(f"{where}: contains a lone surrogate (not valid Unicode)")


@dataclass
class PairRow:
    prompt: str
    chosen: Any  # str, or the whole conversation
    rejected: Any
    chosen_text: str
    rejected_text: str
    source: str = ""
    metadata: dict = field(default_factory=dict)


def _messages(value: Any, name: str) -> list[dict]:
    if not value:
        raise RowError(f"{name}: empty conversation")
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise RowError(f"{name}: malformed messages: item {i} is not an object")
        if "role" not in msg or "content" not in msg:
            raise RowError(f"{name}: malformed messages: item {i} needs 'role' and 'content'")
        if msg["role"] not in ROLES:
            raise RowError(f"{name}: malformed messages: item {i} has unknown role {msg['role']!r}")
        if not isinstance(msg["content"], str):
            raise RowError(f"{name}: malformed messages: item {i} content must be text")
    if value[-1]["role"] != "assistant":
        raise RowError(f"{name}: malformed messages: the last message must be the assistant's response")
    return value


def _response(value: Any, name: str) -> tuple[Any, str, list[dict] | None]:
    """(stored value, response text, conversation or None)."""
    if isinstance(value, str):
        return value, value, None
    if isinstance(value, list):
        conv = _messages(value, name)
        return conv, conv[-1]["content"], conv
    raise RowError(f"{name}: must be text or a list of messages, got {type(value).__name__}")


def _prompt_of(conv: list[dict]) -> str:
    return "\n\n".join(m["content"] for m in conv[:-1] if m["role"] in ("user", "system"))


def validate_pair(record: Any) -> PairRow:
    if not isinstance(record, dict):
        raise RowError(f"not an object (got {type(record).__name__})")
    check_json(record)
    for name in ("chosen", "rejected"):
        if name not in record or record[name] is None:
            raise RowError(f"missing field '{name}'")
    chosen, chosen_text, chosen_conv = _response(record["chosen"], "chosen")
    rejected, rejected_text, rejected_conv = _response(record["rejected"], "rejected")
    prompt = record.get("prompt")
    if prompt is None:
        if chosen_conv is None:
            raise RowError("missing field 'prompt' (needed when chosen/rejected are plain text)")
        prompt = _prompt_of(chosen_conv)
    if not isinstance(prompt, str):
        raise RowError("prompt: must be text")
    if chosen_conv is not None and rejected_conv is not None and chosen_conv[:-1] != rejected_conv[:-1]:
        raise RowError("chosen and rejected conversations differ before the final response")
    if not prompt.strip():
        raise RowError("empty text: prompt")
    if not chosen_text.strip():
        raise RowError("empty text: chosen")
    if not rejected_text.strip():
        raise RowError("empty text: rejected")
    if chosen_text.strip() == rejected_text.strip():
        raise RowError("chosen identical to rejected")
    for name, text in (("prompt", prompt), ("chosen", chosen_text), ("rejected", rejected_text)):
        if "\x00" in text:
            raise RowError(f"{name}: contains a NUL character")
    source = record.get("source") or ""
    if not isinstance(source, str):
        raise RowError("source: must be text")
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise RowError("metadata: must be an object")
    extra = {
        k: v for k, v in record.items() if k not in ("prompt", "chosen", "rejected", "source", "metadata")
    }
    if extra:
        metadata = {**extra, **metadata}
    return PairRow(prompt, chosen, rejected, chosen_text, rejected_text, source[:200], metadata)


@dataclass
class ProblemRow:
    domain: str
    prompt: str
    answer: str
    tests: list
    metadata: dict = field(default_factory=dict)


def _tests(value: Any) -> list:
    if not isinstance(value, list) or not value:
        raise RowError("tests: must be a non-empty list")
    for i, t in enumerate(value):
        if not isinstance(t, dict):
            raise RowError(f"tests[{i}]: must be an object")
        if "stdin" in t or "stdout" in t:
            if not isinstance(t.get("stdin", ""), str) or not isinstance(t.get("stdout"), str):
                raise RowError(f"tests[{i}]: stdin/stdout tests need text 'stdout' (and optional 'stdin')")
        elif "call" in t:
            if not isinstance(t["call"], str) or "expected" not in t:
                raise RowError(f"tests[{i}]: call tests need a 'call' expression and an 'expected' value")
        else:
            raise RowError(f"tests[{i}]: give stdin/stdout or call/expected")
    return value


def validate_problem(record: Any) -> ProblemRow:
    """Math: {prompt, answer}; code: {prompt, tests}. ``domain`` is optional and inferred."""
    if not isinstance(record, dict):
        raise RowError(f"not an object (got {type(record).__name__})")
    check_json(record)
    prompt = record.get("prompt")
    if prompt is None:
        raise RowError("missing field 'prompt'")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RowError("empty text: prompt")
    domain = record.get("domain") or ("code" if "tests" in record else "math")
    if domain not in ("math", "code"):
        raise RowError(f"domain: must be math or code, got {domain!r}")
    answer, tests = "", []
    if domain == "math":
        if "answer" not in record or record["answer"] is None:
            raise RowError("missing field 'answer'")
        answer = str(record["answer"]).strip()
        if not answer:
            raise RowError("empty text: answer")
    else:
        if "tests" not in record:
            raise RowError("missing field 'tests'")
        tests = _tests(record["tests"])
    metadata = record.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise RowError("metadata: must be an object")
    extra = {k: v for k, v in record.items() if k not in ("prompt", "answer", "tests", "domain", "metadata")}
    return ProblemRow(domain, prompt, answer, tests, {**extra, **metadata})
