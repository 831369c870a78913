"""MLflow's search grammar for runs/search and experiments/search: a filter of comparisons joined by
AND, and order_by clauses.

    metrics.loss < 0.5 AND params.lr = '0.1' AND tags."my tag" LIKE 'a%' AND attributes.status = 'FINISHED'

An identifier is ``<type>.<key>`` (type: metrics/metric, params/param/parameters, tags/tag,
attributes/attribute/attr/run; a bare key is an attribute); a key may be quoted with backticks or
double quotes. Values: 'single' or "double" quoted strings, numbers, and (for IN) a parenthesised list.
Metrics compare numbers with = != < <= > >=; params and tags compare strings with = != LIKE ILIKE
(and IN / NOT IN); string attributes as tags, time attributes as metrics. Everything else is
INVALID_PARAMETER_VALUE, as MLflow answers it."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from webapp.mlflow_api.errors import invalid

TYPES = {
    "metric": "metric",
    "metrics": "metric",
    "param": "param",
    "params": "param",
    "parameter": "param",
    "parameters": "param",
    "tag": "tag",
    "tags": "tag",
    "attribute": "attribute",
    "attributes": "attribute",
    "attr": "attribute",
    "run": "attribute",
}
STRING_OPS = {"=", "!=", "LIKE", "ILIKE", "IN", "NOT IN"}
NUMBER_OPS = {"=", "!=", "<", "<=", ">", ">="}
RUN_STRING_ATTRIBUTES = {"status", "run_name", "run_id", "user_id", "artifact_uri", "lifecycle_stage"}
RUN_NUMBER_ATTRIBUTES = {"start_time", "end_time", "created"}
ATTRIBUTE_ALIASES = {
    "run name": "run_name",
    "runname": "run_name",
    "run_uuid": "run_id",
    "created": "start_time",
}

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<backtick>`[^`]*`)
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w]))
      | (?P<punct>[(),.])
      | (?P<word>[A-Za-z_][\w\-:/]*)
    )""",
    re.VERBOSE,
)


@dataclass
class Comparison:
    type: str  # metric | param | tag | attribute
    key: str
    op: str
    value: Any  # str, float, or a list of str for IN / NOT IN


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise invalid(f"Invalid filter string at position {pos}: {text[pos : pos + 20]!r}")
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _unquote(token: str) -> str:
    body = token[1:-1]
    if token[0] == "`":
        return body
    return re.sub(r"\\(.)", r"\1", body)


class _Parser:
    def __init__(self, text: str, *, for_experiments: bool = False):
        self.tokens = _tokens(text)
        self.i = 0
        self.for_experiments = for_experiments

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise invalid("Invalid filter string: it ends too early")
        self.i += 1
        return tok

    def identifier(self) -> tuple[str, str]:
        kind, text = self.take()
        if kind == "word" and self.peek() == ("punct", "."):
            if text.lower() not in TYPES:
                raise invalid(f"Invalid entity type '{text}'. Valid values are {sorted(set(TYPES))}")
            self.i += 1
            key_kind, key = self.take()
            if key_kind in ("string", "backtick"):
                key = _unquote(key)
            elif key_kind == "word":
                # a dotted metric name (metrics.train.loss) keeps its dots
                while (
                    self.peek() == ("punct", ".") and self.peek(1) and self.peek(1)[0] in ("word", "number")
                ):
                    self.i += 1
                    key += "." + self.take()[1]
            else:
                raise invalid(f"Invalid identifier key {key!r}")
            return TYPES[text.lower()], key
        if kind in ("word", "backtick", "string"):
            return "attribute", _unquote(text) if kind != "word" else text
        raise invalid(f"Invalid filter string: expected an identifier, got {text!r}")

    def operator(self) -> str:
        kind, text = self.take()
        if kind == "op":
            return "!=" if text == "<>" else text
        upper = text.upper()
        if upper in ("LIKE", "ILIKE", "IN"):
            return upper
        if upper == "NOT":
            nxt = self.take()
            if nxt[1].upper() == "IN":
                return "NOT IN"
        raise invalid(f"Invalid comparator {text!r}")

    def value(self, op: str):
        if op in ("IN", "NOT IN"):
            if self.take() != ("punct", "("):
                raise invalid(f"{op} needs a parenthesised list of strings: ('a', 'b')")
            items = []
            while True:
                kind, text = self.take()
                if kind != "string":
                    raise invalid(f"{op} takes quoted strings; got {text!r}")
                items.append(_unquote(text))
                sep = self.take()
                if sep == ("punct", ")"):
                    return items
                if sep != ("punct", ","):
                    raise invalid(f"Invalid {op} list near {sep[1]!r}")
        kind, text = self.take()
        if kind == "string":
            return _unquote(text)
        if kind == "number":
            return float(text)
        raise invalid(f"Invalid value {text!r}: quote strings ('...') and write numbers as numbers")

    def comparison(self) -> Comparison:
        typ, key = self.identifier()
        op = self.operator()
        value = self.value(op)
        return _checked(Comparison(typ, key, op, value), for_experiments=self.for_experiments)

    def parse(self) -> list[Comparison]:
        if not self.tokens:
            return []
        out = [self.comparison()]
        while self.peek() is not None:
            kind, text = self.take()
            if text.upper() != "AND":
                raise invalid(f"Invalid clause {text!r}: comparisons are joined by AND (OR is not supported)")
            out.append(self.comparison())
        return out


def _checked(c: Comparison, *, for_experiments: bool) -> Comparison:
    if c.type == "attribute":
        key = c.key.lower()
        c.key = ATTRIBUTE_ALIASES.get(key, key)
        allowed_str = {"name", "experiment_id"} if for_experiments else RUN_STRING_ATTRIBUTES
        allowed_num = {"creation_time", "last_update_time"} if for_experiments else RUN_NUMBER_ATTRIBUTES
        if c.key in allowed_num:
            ops, numeric = NUMBER_OPS, True
        elif c.key in allowed_str:
            ops, numeric = STRING_OPS, False
        else:
            raise invalid(
                f"Invalid attribute key '{c.key}' specified. Valid keys are {sorted(allowed_str | allowed_num)}"
            )
    elif c.type == "metric":
        if for_experiments:
            raise invalid("experiments are searched by name, tags and times")
        ops, numeric = NUMBER_OPS, True
    else:
        if for_experiments and c.type == "param":
            raise invalid("experiments have no params")
        ops, numeric = STRING_OPS, False
    if c.op not in ops:
        raise invalid(f"Invalid comparator '{c.op}' for {c.type} '{c.key}'; valid comparators: {sorted(ops)}")
    if numeric and not isinstance(c.value, float):
        raise invalid(f"Expected a numeric value for {c.type} '{c.key}', got {c.value!r}")
    if not numeric and isinstance(c.value, float):
        raise invalid(f"Expected a quoted string value for {c.type} '{c.key}' (e.g. '{c.value:g}')")
    return c


def parse_filter(text: str | None, *, for_experiments: bool = False) -> list[Comparison]:
    return _Parser(text or "", for_experiments=for_experiments).parse()


def _like(pattern: str, flags=0) -> re.Pattern:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return re.compile("".join(out), flags | re.DOTALL)


def matches(c: Comparison, actual) -> bool:
    """``actual``: the run's value (None when the run has none: it never matches, as in MLflow)."""
    if actual is None:
        return False
    op, want = c.op, c.value
    if isinstance(want, float):
        actual = float(actual)
        if math.isnan(actual):
            return False
        return {
            "=": actual == want,
            "!=": actual != want,
            "<": actual < want,
            "<=": actual <= want,
            ">": actual > want,
            ">=": actual >= want,
        }[op]
    actual = str(actual)
    if op == "=":
        return actual == want
    if op == "!=":
        return actual != want
    if op == "LIKE":
        return _like(want).fullmatch(actual) is not None
    if op == "ILIKE":
        return _like(want, re.IGNORECASE).fullmatch(actual) is not None
    if op == "IN":
        return actual in want
    return actual not in want  # NOT IN


@dataclass
class OrderBy:
    type: str
    key: str
    ascending: bool


def parse_order_by(clauses, *, for_experiments: bool = False) -> list[OrderBy]:
    out = []
    for clause in clauses or []:
        if not isinstance(clause, str) or not clause.strip():
            raise invalid(f"Invalid order_by clause {clause!r}")
        text = clause.strip()
        ascending = True
        m = re.search(r"\s+(ASC|DESC)$", text, re.IGNORECASE)
        if m:
            ascending = m.group(1).upper() == "ASC"
            text = text[: m.start()]
        parser = _Parser(text, for_experiments=for_experiments)
        typ, key = parser.identifier()
        if parser.peek() is not None:
            raise invalid(f"Invalid order_by clause {clause!r}")
        if typ == "attribute":
            key = ATTRIBUTE_ALIASES.get(key.lower(), key.lower())
            valid = (
                {"name", "experiment_id", "creation_time", "last_update_time"}
                if for_experiments
                else RUN_STRING_ATTRIBUTES | RUN_NUMBER_ATTRIBUTES
            )
            if key not in valid:
                raise invalid(f"Invalid order_by attribute '{key}'. Valid keys are {sorted(valid)}")
        out.append(OrderBy(typ, key, ascending))
    return out
