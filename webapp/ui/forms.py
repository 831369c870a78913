"""Forms of the HTML pages.

The launch form is generated from a trainer's config JSON Schema (pydantic's ``model_json_schema``):
every leaf field becomes one input named by its dotted config path prefixed with ``config.``
(``config.step_size``, ``config.mdp.gamma``), which is exactly how services.RunError names field
errors, so each message lands next to its input. Nested objects become fieldsets; a union of objects
(``mdp``: explicit | garnet | named) becomes a variant selector plus one fieldset per variant, of
which only the selected one is enabled (a disabled fieldset's inputs are not submitted, so variants
may share field names such as ``gamma``).

The form only turns strings into a config dict; validation is the trainer's (through the services).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from django import forms
from django.conf import settings
from django.http import QueryDict

CONFIG = "config."
VARIANT_SUFFIX = ":variant"
SWEEP_ROWS = 3
MAX_SWEEP_VALUES = 100


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
NOISE: Any = object()  # an error about a union variant that is not the selected one


class ProjectCreateForm(forms.Form):
    name = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"placeholder": "new project name"}))
    description = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.TextInput(attrs={"placeholder": "description (optional)"}),
    )


# --- the schema tree ------------------------------------------------------------------------------


@dataclass
class Leaf:
    """One input. ``widget``: number, integer, text, select, checkbox, json, scalar (a union of plain values such as an
    integer or "auto": a text input with the words as suggestions), const (a hidden input
    carrying a union variant's fixed tag such as mdp.kind=garnet) or model (model_path: a picker of the
    workers' catalogue, or a text input when the queue's workers have not reported)."""

    name: str
    path: str
    widget: str
    html_id: str
    label: str = ""
    description: str = ""
    default: Any = MISSING
    required: bool = False
    nullable: bool = False
    choices: list[tuple[str, Any]] = field(default_factory=list)
    const: Any = MISSING
    attrs: dict[str, Any] = field(default_factory=dict)
    options: list[list[str]] = field(default_factory=list)  # widget "model": [value, label] (fleet_panel)
    # bound state
    value: str = ""
    checked: bool = False
    errors: list[str] = field(default_factory=list)
    type: str = "leaf"

    @property
    def input_name(self) -> str:
        return CONFIG + self.path

    @property
    def has_choice(self) -> bool:
        return any(label == self.value for label, _ in self.choices)

    @property
    def input_type(self) -> str:
        return "number" if self.widget in ("number", "integer") else "text"

    @property
    def sweepable(self) -> bool:
        return self.widget in ("number", "integer", "text", "select", "checkbox", "model", "scalar")

    def display(self, value: Any) -> str:
        if self.widget == "select" and value is not MISSING:  # a picker shows its choice's label
            for label, choice in self.choices:
                if type(choice) is type(value) and choice == value:
                    return label
        if value is MISSING or value is None:
            return ""
        if self.widget == "json":
            return json.dumps(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def convert(self, raw: str) -> Any:
        """A submitted string as the value the config wants; left as the string when it does not
        parse, so the trainer's validation reports it next to the field."""
        if self.widget == "integer":
            try:
                return int(raw)
            except ValueError:
                try:
                    number = float(raw)
                except ValueError:
                    return raw
                return int(number) if number.is_integer() else number
        if self.widget == "number":
            try:
                return float(raw)
            except ValueError:
                return raw
        if self.widget == "scalar":
            for label, value in self.choices:
                if label == raw.strip():
                    return value
            for parse in (int, float):
                try:
                    return parse(raw)
                except ValueError:
                    pass
            return raw
        if self.widget == "select":
            for label, value in self.choices:
                if label == raw:
                    return value
            return raw
        if self.widget == "checkbox":
            low = raw.strip().lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            return raw
        return raw


@dataclass
class Group:
    name: str
    path: str
    html_id: str
    label: str = ""
    description: str = ""
    nullable: bool = False
    children: list = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    type: str = "group"

    @property
    def input_name(self) -> str:
        return CONFIG + self.path


@dataclass
class Variant:
    key: str
    title: str
    description: str
    children: list
    consts: dict[str, Any]
    selected: bool = False

    def matches(self, marker: str) -> bool:
        """Whether a validation error's location segment (the union member's tag or class name)
        designates this variant."""
        marker = marker.lower()
        names = {self.key.lower(), self.title.lower()}
        return marker in names or any(n.startswith(marker) or marker.startswith(n) for n in names if n)


@dataclass
class Union:
    name: str
    path: str
    html_id: str
    variants: list[Variant]
    label: str = ""
    description: str = ""
    default: Any = MISSING
    discriminator: str | None = None
    errors: list[str] = field(default_factory=list)
    type: str = "union"

    @property
    def input_name(self) -> str:
        return CONFIG + self.path

    @property
    def selector_name(self) -> str:
        return CONFIG + self.path + VARIANT_SUFFIX

    @property
    def selected(self) -> Variant:
        return next((v for v in self.variants if v.selected), self.variants[0])

    def variant(self, key: str | None) -> Variant | None:
        return next((v for v in self.variants if v.key == key), None)

    def detect(self, value: Any) -> Variant:
        """The variant a config value (a dict) belongs to: by its tag when it has one, else the first
        variant that has every key of the value."""
        if not isinstance(value, dict):
            return self.detect(self.default) if isinstance(self.default, dict) else self.variants[0]
        candidates = []
        for variant in self.variants:
            if any(k in value and value[k] != c for k, c in variant.consts.items()):
                continue
            if variant.consts and all(value.get(k) == c for k, c in variant.consts.items()):
                return variant
            names = {c.name for c in variant.children}
            if set(value) <= names:
                candidates.append(variant)
        return candidates[0] if candidates else self.variants[0]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def _resolve(schema: dict, defs: dict) -> dict:
    """Inline $ref (and single-member allOf), keeping the referring node's own keys (pydantic puts
    a field's description and default next to its $ref)."""
    seen = 0
    while True:
        if "$ref" in schema and seen < 20:
            target = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
            schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        elif "allOf" in schema and len(schema["allOf"]) == 1 and seen < 20:
            target = _resolve(schema["allOf"][0], defs)
            schema = {**target, **{k: v for k, v in schema.items() if k != "allOf"}}
        else:
            return schema
        seen += 1


def _is_object(schema: dict) -> bool:
    return schema.get("type") == "object" and "properties" in schema


def build_tree(schema: dict) -> list:
    """The form's nodes for a config JSON Schema."""
    return _properties(schema, schema.get("$defs", {}), "", "f")


def _properties(schema: dict, defs: dict, prefix: str, id_prefix: str) -> list:
    required = set(schema.get("required", ()))
    return [
        _node(name, prefix + name, sub, name in required, defs, f"{id_prefix}-{_slug(name)}")
        for name, sub in schema.get("properties", {}).items()
    ]


def _node(name: str, path: str, schema: dict, required: bool, defs: dict, html_id: str):
    schema = _resolve(schema, defs)
    description = schema.get("description", "")
    default = schema.get("default", MISSING)
    nullable = False
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives:
        alternatives = [_resolve(a, defs) for a in alternatives]
        non_null = [a for a in alternatives if a.get("type") != "null"]
        nullable = len(non_null) < len(alternatives)
        own = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
        if len(non_null) == 1:
            node = _node(name, path, {**non_null[0], **own}, required, defs, html_id)
            node.nullable = nullable
            return node
        if non_null and all(_is_object(a) for a in non_null):
            return _union(name, path, schema, non_null, defs, html_id, description, default)
        if non_null and all(_is_scalar(a) for a in non_null):
            return _scalar_leaf(name, path, non_null, html_id, description, default, required, nullable)
        return Leaf(name, path, "json", html_id, name, description, default, required, nullable)
    kind = schema.get("type")
    if isinstance(kind, list):
        nullable = "null" in kind
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    leaf = Leaf(name, path, "text", html_id, name, description, default, required, nullable)
    if "const" in schema:
        leaf.widget, leaf.const = "const", schema["const"]
    elif "enum" in schema:
        leaf.widget = "select"
        leaf.choices = [(leaf.display(v), v) for v in schema["enum"]]
    elif _is_object(schema):
        return Group(
            name,
            path,
            html_id,
            name,
            description,
            nullable,
            _properties(schema, defs, path + ".", html_id),
        )
    elif kind == "boolean":
        leaf.widget = "checkbox"
    elif kind in ("integer", "number"):
        leaf.widget = kind
        leaf.attrs["step"] = "1" if kind == "integer" else "any"
        if "minimum" in schema:
            leaf.attrs["min"] = schema["minimum"]
        if "maximum" in schema:
            leaf.attrs["max"] = schema["maximum"]
    elif kind == "string":
        leaf.widget = "text"
    else:  # arrays, free-form objects, anything else: JSON
        leaf.widget = "json"
    return leaf


def _is_scalar(schema: dict) -> bool:
    return "const" in schema or "enum" in schema or schema.get("type") in ("integer", "number", "string")


def _scalar_leaf(name, path, members, html_id, description, default, required, nullable) -> Leaf:
    """A union of plain values (e.g. nproc_per_node: an integer or "auto") as one text input with the
    words offered as suggestions, instead of a JSON box: numbers are typed as numbers, words as words."""
    words = [v for m in members for v in ([m["const"]] if "const" in m else m.get("enum", ()))]
    kinds = sorted({m["type"] for m in members if m.get("type") in ("integer", "number")})
    leaf = Leaf(name, path, "scalar", html_id, name, description, default, required, nullable)
    leaf.choices = [(str(w), w) for w in words]
    leaf.attrs["placeholder"] = " or ".join(
        [*(f"an {k}" if k == "integer" else "a number" for k in kinds), *map(str, words)]
    )
    return leaf


def _union(name, path, schema, members, defs, html_id, description, default) -> Union:
    discriminator = (schema.get("discriminator") or {}).get("propertyName")
    variants = []
    used: set[str] = set()
    for i, member in enumerate(members):
        props = member.get("properties", {})
        consts = {}
        for prop_name, prop in props.items():
            prop = _resolve(prop, defs)
            if "const" in prop:
                consts[prop_name] = prop["const"]
            elif prop_name == discriminator and len(prop.get("enum", ())) == 1:
                consts[prop_name] = prop["enum"][0]
        title = member.get("title") or f"variant {i + 1}"
        if discriminator in consts:
            key = str(consts[discriminator])
        elif len(consts) == 1:
            key = str(next(iter(consts.values())))
        else:
            key = _slug(title).lower()
        while key in used:
            key += "_"
        used.add(key)
        children = _properties(member, defs, path + ".", f"{html_id}-{_slug(key)}")
        for child in children:  # a variant's tag is fixed: a hidden input, not a choice
            if child.type == "leaf" and child.name in consts:
                child.widget, child.const = "const", consts[child.name]
        variants.append(Variant(key, title, member.get("description", ""), children, consts))
    return Union(name, path, html_id, variants, name, description, default, discriminator)


def iter_leaves(nodes, *, all_variants: bool = True):
    for node in nodes:
        if node.type == "leaf":
            yield node
        elif node.type == "group":
            yield from iter_leaves(node.children, all_variants=all_variants)
        else:
            for variant in node.variants:
                if all_variants or variant.selected:
                    yield from iter_leaves(variant.children, all_variants=all_variants)


def flatten(nodes, config: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """(dotted path -> value, union path -> variant key) of a config dict, following the tree."""
    values: dict[str, Any] = {}
    variants: dict[str, str] = {}

    def walk(nodes, cfg):
        cfg = cfg if isinstance(cfg, dict) else {}
        for node in nodes:
            value = cfg.get(node.name, MISSING)
            if node.type == "leaf":
                if value is not MISSING:
                    values[node.path] = value
            elif node.type == "group":
                walk(node.children, value)
            else:
                variant = node.detect(value if value is not MISSING else node.default)
                variants[node.path] = variant.key
                walk(variant.children, value if value is not MISSING else node.default)

    walk(nodes, config)
    return values, variants


def _select_variants(nodes, chosen: dict[str, str]) -> None:
    for node in nodes:
        if node.type == "group":
            _select_variants(node.children, chosen)
        elif node.type == "union":
            selected = node.variant(chosen.get(node.path)) or node.detect(node.default)
            for variant in node.variants:
                variant.selected = variant is selected
                _select_variants(variant.children, chosen)


def preset_fill(nodes, config: dict) -> dict:
    """What the launch page's JS needs to fill the inputs with a preset: input name -> value
    (display string, or a bool for checkboxes) and union selector name -> variant key."""
    values, variants = flatten(nodes, config)
    out_values = {}
    for leaf in iter_leaves(nodes):
        if leaf.path in values and leaf.widget != "const":
            v = values[leaf.path]
            out_values[leaf.input_name] = bool(v) if leaf.widget == "checkbox" else leaf.display(v)
    return {"values": out_values, "variants": {CONFIG + p + VARIANT_SUFFIX: k for p, k in variants.items()}}


# --- the launch form --------------------------------------------------------------------------------

META_FIELDS = ("name", "group", "tags", "queue", "config_json", "config_json_base")


@dataclass
class SweepRow:
    index: int
    path: str = ""
    values: str = ""
    errors: list[str] = field(default_factory=list)


class LaunchForm:
    """Bind with ``initial`` (a config dict: defaults, a preset or a cloned run) to show, or with
    ``data`` (request.POST) to parse. After ``is_valid()``: ``config``, ``grid`` (empty unless the
    sweep section is filled), ``meta`` (name, group, tags, queue)."""

    def __init__(
        self,
        schema: dict,
        *,
        data: QueryDict | None = None,
        initial: dict | None = None,
        meta: dict | None = None,
        pickers: dict[str, list[tuple[str, Any]]] | None = None,
    ):
        self.schema = schema
        self.nodes = build_tree(schema)
        self.pickers = pickers or {}
        self._apply_pickers(initial)
        self.data = data
        self.errors: dict[str, list[str]] = {}  # meta field / "sweep" / "__all__" -> messages
        self.summary: list[tuple[str, str]] = []
        self.config: dict[str, Any] = {}
        self.grid: dict[str, list[Any]] = {}
        self.meta: dict[str, Any] = {
            "name": "", "group": "", "tags": "", "queue": "", "config_json": "", "config_json_base": "",
        }  # fmt: skip
        self.sweep = [SweepRow(i) for i in range(1, SWEEP_ROWS + 1)]
        if data is not None:
            for key in META_FIELDS:
                self.meta[key] = (
                    data.get(key, "") if key.startswith("config_json") else data.get(key, "").strip()
                )
            for row in self.sweep:
                row.path = data.get(f"sweep_field_{row.index}", "").strip()
                row.values = data.get(f"sweep_values_{row.index}", "").strip()
            self._bind_data(data)
        else:
            self.meta.update({k: v for k, v in (meta or {}).items() if v is not None})
            self._bind_initial(initial or {})

    # -- binding -------------------------------------------------------------------------------
    def _apply_pickers(self, initial: dict | None) -> None:
        for leaf in iter_leaves(self.nodes):
            choices = self.pickers.get(leaf.path)
            if choices is None or "." in leaf.path:
                continue
            leaf.widget, leaf.choices = "select", list(choices)
            leaf.attrs = {"data-picker": leaf.path}
            current = (initial or {}).get(leaf.path, MISSING)
            known = any(type(v) is type(current) and v == current for _, v in leaf.choices)
            if current is not MISSING and current is not None and not known:
                leaf.choices.append((f"{current} (not among the choices of this project)", current))

    def _bind_initial(self, config: dict) -> None:
        values, variants = flatten(self.nodes, config)
        _select_variants(self.nodes, variants)
        for leaf, active in self._leaves_with_state():
            value = values.get(leaf.path, leaf.default) if active else leaf.default
            self._show(leaf, value)

    def _bind_data(self, data: QueryDict) -> None:
        chosen = {}

        def choose(nodes):
            for node in nodes:
                if node.type == "group":
                    choose(node.children)
                elif node.type == "union":
                    variant = node.variant(data.get(node.selector_name))
                    if variant is None:  # no selector submitted: recognise the variant by its fields
                        prefix = node.input_name + "."
                        shallow = {
                            k[len(prefix) :]: data.get(k)
                            for k in data
                            if k.startswith(prefix) and "." not in k[len(prefix) :]
                        }
                        variant = node.detect(shallow) if shallow else node.detect(node.default)
                    chosen[node.path] = variant.key
                    for v in node.variants:
                        if v is variant:
                            choose(v.children)

        choose(self.nodes)
        _select_variants(self.nodes, chosen)
        for leaf, active in self._leaves_with_state():
            if not active:
                self._show(leaf, leaf.default)
            elif leaf.widget == "checkbox":
                leaf.checked = leaf.input_name in data and data.get(leaf.input_name) not in (
                    "",
                    "false",
                    "off",
                    "0",
                )
            elif leaf.widget == "const":
                leaf.value = leaf.display(leaf.const)
            else:
                leaf.value = data.get(leaf.input_name, "")

    def _show(self, leaf: Leaf, value: Any) -> None:
        if leaf.widget == "checkbox":
            leaf.checked = bool(value) if value is not MISSING else False
        elif leaf.widget == "const":
            leaf.value = leaf.display(leaf.const)
        else:
            leaf.value = leaf.display(value)

    def _leaves_with_state(self):
        def walk(nodes, active):
            for node in nodes:
                if node.type == "leaf":
                    yield node, active
                elif node.type == "group":
                    yield from walk(node.children, active)
                else:
                    for variant in node.variants:
                        yield from walk(variant.children, active and variant.selected)

        yield from walk(self.nodes, True)

    # -- parsing ---------------------------------------------------------------------------------
    def is_valid(self) -> bool:
        """Parse the submitted strings. False when something could not even be parsed (invalid
        JSON, bad sweep values); the config's own validation happens in the services."""
        assert self.data is not None, "an unbound form has nothing to validate"
        raw_json = self.meta["config_json"].strip()
        if raw_json and raw_json == self.meta["config_json_base"].strip():
            raw_json = ""  # the box as it was pre-filled: not an edit, the fields say what to run
        if raw_json:
            try:
                parsed = json.loads(raw_json)
            except json.JSONDecodeError as exc:
                self.add_errors({"config_json": [f"invalid JSON: {exc}"]})
                parsed = None
            if parsed is not None and not isinstance(parsed, dict):
                self.add_errors({"config_json": ["must be a JSON object"]})
            self.config = parsed if isinstance(parsed, dict) else {}
        else:
            self.config = self._collect(self.nodes)
        self._parse_sweep()
        if self.meta["queue"] and self.meta["queue"] not in settings.ORLAB_RUN_QUEUES:
            self.add_errors({"queue": [f"must be one of {', '.join(settings.ORLAB_RUN_QUEUES)}"]})
        return not self.summary

    @property
    def tags(self) -> list[str]:
        return [t.strip() for t in self.meta["tags"].split(",") if t.strip()]

    def _collect(self, nodes) -> dict:
        out: dict[str, Any] = {}
        for node in nodes:
            if node.type == "leaf":
                value = self._leaf_value(node)
                if value is not MISSING:
                    out[node.name] = value
            elif node.type == "group":
                sub = self._collect(node.children)
                if sub or not node.nullable:
                    out[node.name] = sub
            else:
                out[node.name] = self._collect(node.selected.children)
        return out

    def _leaf_value(self, leaf: Leaf) -> Any:
        if leaf.widget == "const":
            return leaf.const
        if leaf.widget == "checkbox":
            return leaf.checked
        raw = leaf.value.strip()
        if raw == "":
            return MISSING  # the trainer's default (or its "field required")
        if leaf.widget == "json":
            try:
                return json.loads(raw)
            except json.JSONDecodeError as exc:
                self.add_errors({leaf.input_name: [f"invalid JSON: {exc}"]})
                return MISSING
        return leaf.convert(raw)

    def sweep_choices(self) -> list[tuple[str, str]]:
        seen: dict[str, str] = {}
        for leaf in iter_leaves(self.nodes):
            if leaf.sweepable and leaf.path not in seen:
                seen[leaf.path] = leaf.path
        return list(seen.items())

    def _parse_sweep(self) -> None:
        leaves: dict[str, Leaf] = {}
        for leaf in iter_leaves(self.nodes):
            if leaf.sweepable:
                leaves.setdefault(leaf.path, leaf)
        grid: dict[str, list[Any]] = {}
        for row in self.sweep:
            if not row.path and not row.values:
                continue
            if not row.path or not row.values:
                row.errors.append("choose a field and give comma-separated values")
            elif row.path not in leaves:
                row.errors.append(f"{row.path} is not a field of this trainer")
            elif row.path in grid:
                row.errors.append(f"{row.path} is swept twice")
            else:
                tokens = [t.strip() for t in row.values.split(",") if t.strip()]
                if not tokens:
                    row.errors.append("give at least one value")
                elif len(tokens) > MAX_SWEEP_VALUES:
                    row.errors.append(f"at most {MAX_SWEEP_VALUES} values")
                else:
                    grid[row.path] = [leaves[row.path].convert(t) for t in tokens]
            for message in row.errors:
                self.summary.append((f"sweep {row.index}", message))
        self.grid = grid

    # -- errors ------------------------------------------------------------------------------------
    def add_errors(self, field_errors: dict[str, list[str]], message: str = "") -> None:
        """Attach services.RunError.field_errors (or our own) to the inputs they name."""
        before = len(self.summary)
        for key, messages in field_errors.items():
            messages = [str(m) for m in (messages if isinstance(messages, list | tuple) else [messages])]
            label = ""
            if m := re.match(r"^\[(.*?)\]\s+(.*)$", key):  # a sweep point: "[step_size=-1] config.step_size"
                label, key = m.group(1), m.group(2)
                messages = [f"{label}: {msg}" for msg in messages]
            if key == "grid" or key.startswith("grid."):
                path = key[len("grid.") :]
                row = next((r for r in self.sweep if path and r.path == path), None)
                (row.errors if row else self.errors.setdefault("sweep", [])).extend(messages)
                self.summary.extend((f"sweep {path}".strip(), msg) for msg in messages)
                continue
            if key == "config" or key.startswith(CONFIG):
                target = self._find(self.nodes, key[len(CONFIG) :].split(".")) if key != "config" else None
                if target is NOISE:
                    continue
                if target is None:
                    self.errors.setdefault("config", []).extend(messages)
                else:
                    target.errors.extend(messages)
                    key = target.input_name
                self.summary.extend((key, msg) for msg in messages)
                continue
            self.errors.setdefault(key, []).extend(messages)
            self.summary.extend((key, msg) for msg in messages)
        if message and len(self.summary) == before:
            self.summary.append(("", message))

    def _find(self, nodes, segments: list[str]):
        if not segments or not segments[0]:
            return None
        head, rest = segments[0], segments[1:]
        node = next((n for n in nodes if n.name == head), None)
        if node is None or not rest:
            return node
        if node.type == "group":
            return self._find(node.children, rest) or node
        if node.type == "union":
            selected = node.selected
            if rest[0] in {c.name for c in selected.children}:
                return self._find(selected.children, rest) or node
            # pydantic names the union member (its tag or class name) in the error location
            if selected.matches(rest[0]):
                return self._find(selected.children, rest[1:]) or node
            if any(v.matches(rest[0]) for v in node.variants if v is not selected):
                return NOISE
            return self._find(selected.children, rest[1:]) or node
        return node  # an item of a list (P.0.1) belongs to its JSON input
