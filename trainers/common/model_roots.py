"""Model directories a worker may load, named relative to operator-configured roots.

Why names and not paths: a user never hands a worker a file path (architecture, "Trust boundary").
The operator lists roots in ``ORLAB_MODEL_ROOTS`` (``os.pathsep``-separated, like ``PATH``); a model is
a directory holding a ``config.json`` directly under a root (``Qwen2.5-7B``) or one level deeper
(``Qwen/Qwen2.5-7B``, the Hub's org/name layout). The worker registry reports this catalogue, the web
app validates launches against it (without ever seeing the files), and the trainers turn a name back
into a directory with :func:`resolve_model`.

Reading is cheap and safe: config.json, tokenizer_config.json and the JSON *headers* of the safetensors
files (8 bytes of length, then the header); weights are never loaded. No torch import: the web app
imports :func:`model_name_problem` from here.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

ENV = "ORLAB_MODEL_ROOTS"

#: The config numbers a memory estimator needs, copied into each catalogue entry (None when absent).
CONFIG_NUMBERS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "head_dim",
)

#: A safetensors header larger than this is not a header (the format caps it at 100 MB).
MAX_HEADER_BYTES = 100_000_000


def model_roots() -> list[Path]:
    """The roots named by ``ORLAB_MODEL_ROOTS``, in order (empty entries ignored)."""
    return [Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]


def model_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a catalogue name (None when its shape is fine). Absolute paths, ``..``,
    backslashes and hidden components are refused whatever the roots hold."""
    if not isinstance(name, str) or not name.strip():
        return "a model name must be a non-empty string"
    if "\x00" in name or "\\" in name:
        return "a model name cannot hold NUL characters or backslashes"
    if name.startswith(("/", "~")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        return "a model is named from the workers' catalogue, not by an absolute path"
    parts = PurePosixPath(name).parts
    if ".." in name.split("/"):
        return "a model name cannot contain '..'"
    if len(parts) > 2 or any(p.startswith(".") for p in parts) or name != "/".join(parts):
        return "a model name is 'name' or 'org/name' as listed in the workers' catalogue"
    return None


def resolve_model(name: str, roots: list[Path] | None = None) -> Path:
    """The directory of catalogue model ``name`` under the first root that has it.

    Raises ValueError (with the reason) for a name of the wrong shape, a name that is not under any
    root, or a directory that is a symlink leading outside its root."""
    problem = model_name_problem(name)
    if problem:
        raise ValueError(f"model {name!r}: {problem}")
    roots = model_roots() if roots is None else [Path(r) for r in roots]
    if not roots:
        raise ValueError(f"model {name!r}: no model roots are configured on this worker (set {ENV})")
    for root in roots:
        base = root.resolve()
        candidate = base / name
        if not (candidate / "config.json").is_file():
            continue
        real = candidate.resolve()
        if not real.is_relative_to(base):
            raise ValueError(f"model {name!r}: its directory is a link that leads outside the model root")
        return real
    known = [entry["name"] for entry in catalogue(roots)]
    listing = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
    raise ValueError(f"model {name!r} is not under any model root; the catalogue has: {listing or 'nothing'}")


def model_directory(model_path: str, roots: list[Path] | None = None) -> Path:
    """The directory a trainer loads a non-tiny ``model_path`` from. An absolute path is used as it is:
    the standalone CLI's local directory, or the checkpoint the platform wrote for ``init_from_run``
    (launch refuses user-given paths, so none reaches a worker). Anything else is a catalogue name,
    resolved under the roots by :func:`resolve_model`."""
    expanded = os.path.expanduser(model_path)
    if os.path.isabs(expanded):
        return Path(expanded)
    return resolve_model(model_path, roots)


@dataclass
class Scan:
    """The catalogue and what the operator should know about the roots (missing, unreadable)."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def catalogue(roots: list[Path] | None = None) -> list[dict[str, Any]]:
    """One dict per model directory under ``roots`` (default: :func:`model_roots`), sorted by name.
    Keys: see :func:`describe_model`."""
    return scan(roots).entries


def scan(roots: list[Path] | None = None) -> Scan:
    """The catalogue plus notes. A name found under two roots is the first root's (as resolve_model
    picks it)."""
    roots = model_roots() if roots is None else [Path(r) for r in roots]
    out = Scan()
    seen: set[str] = set()
    for root in roots:
        try:
            base = root.resolve()
        except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
            base = root
        if not _is_dir(base):
            out.notes.append(f"model root {root} is not a directory")
            continue
        for name, directory in _model_dirs(base):
            if name in seen:
                continue
            # an unreadable directory or file skips that model with a note, never the whole report
            try:
                if not directory.resolve().is_relative_to(base):
                    out.notes.append(f"{name}: skipped, a link that leads outside its model root")
                    continue
                out.entries.append(describe_model(directory, name))
            except (OSError, ValueError, RuntimeError) as exc:
                out.notes.append(f"{name}: skipped, {exc}")
                continue
            seen.add(name)
    out.entries.sort(key=lambda e: e["name"])
    return out


def _model_dirs(base: Path):
    """(name, directory) of the directories with a config.json directly under ``base`` or one level
    deeper (org/name). Hidden directories are skipped."""
    for child in _subdirs(base):
        if _is_file(child / "config.json"):
            yield child.name, child
            continue
        for grandchild in _subdirs(child):
            if _is_file(grandchild / "config.json"):
                yield f"{child.name}/{grandchild.name}", grandchild


def _subdirs(path: Path) -> list[Path]:
    try:
        children = list(path.iterdir())
    except OSError:
        return []
    return sorted(p for p in children if not p.name.startswith(".") and _is_dir(p))


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # permission denied: not ours to read
        return False


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def describe_model(directory: Path, name: str) -> dict[str, Any]:
    """A catalogue entry: ``name``, ``architecture`` (config ``architectures[0]``, else its
    ``model_type``), ``model_type``, ``parameters`` and ``parameters_source`` ("safetensors": counted
    from the tensor shapes in the headers; "config": estimated from the config numbers; None),
    ``weights_bytes`` (from the headers, else None), the :data:`CONFIG_NUMBERS`, ``torch_dtype``,
    ``tie_word_embeddings`` and ``chat_template`` (whether the tokenizer carries one)."""
    config = _read_json(directory / "config.json")
    if not isinstance(config, dict):
        raise ValueError("config.json is not a JSON object")
    # Multimodal configs (Gemma 3, Qwen2.5-VL) keep the language model's numbers in text_config.
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    numbers = {key: _int_or_none(config.get(key, text.get(key))) for key in CONFIG_NUMBERS}
    architectures = config.get("architectures") or []
    model_type = str(config.get("model_type") or "")
    tie = config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
    entry: dict[str, Any] = {
        "name": name,
        "architecture": str(architectures[0]) if architectures else model_type,
        "model_type": model_type,
        **numbers,
        "torch_dtype": _dtype_name(config.get("torch_dtype") or config.get("dtype") or text.get("dtype")),
        "tie_word_embeddings": bool(tie),
        "chat_template": has_chat_template(directory),
    }
    counted = safetensors_size(directory)
    if counted is not None:
        entry.update(parameters=counted[0], parameters_source="safetensors", weights_bytes=counted[1])
    else:
        estimate = estimate_parameters(entry)
        entry.update(
            parameters=estimate, parameters_source="config" if estimate else None, weights_bytes=None
        )
    return entry


def has_chat_template(directory: Path) -> bool:
    """Whether the tokenizer saved in ``directory`` has a chat template: in tokenizer_config.json
    (older transformers) or in chat_template.jinja / chat_template.json (transformers >= 4.43)."""
    if (directory / "chat_template.jinja").is_file():
        return True
    for filename in ("tokenizer_config.json", "chat_template.json"):
        path = directory / filename
        if path.is_file():
            try:
                data = _read_json(path)
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("chat_template"):
                return True
    return False


def safetensors_size(directory: Path) -> tuple[int, int] | None:
    """(parameter count, bytes of tensor data) from the headers of the model's safetensors files, or
    None when there are none (or one is unreadable). Uses the shard list of
    model.safetensors.index.json when present, else every ``*.safetensors`` file in the directory."""
    index = directory / "model.safetensors.index.json"
    try:
        if index.is_file():
            weight_map = _read_json(index).get("weight_map") or {}
            files = sorted({directory / str(f) for f in weight_map.values()})
        else:
            files = sorted(directory.glob("*.safetensors"))
        if not files:
            return None
        params = size = 0
        for path in files:
            if not path.resolve().is_relative_to(directory.resolve()):
                return None  # an index naming a file elsewhere: not trusted
            p, s = _header_totals(path)
            params, size = params + p, size + s
        return params, size
    except (OSError, ValueError, AttributeError, TypeError):
        return None


_HEADER_CACHE: dict[tuple[str, int, int], tuple[int, int]] = {}


def _header_totals(path: Path) -> tuple[int, int]:
    """(elements, data bytes) of one safetensors file, read from its header only. Cached by path,
    size and mtime: the registry rescans every few seconds."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key in _HEADER_CACHE:
        return _HEADER_CACHE[key]
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path.name} is not a safetensors file")
        length = int.from_bytes(raw, "little")
        if length > min(MAX_HEADER_BYTES, stat.st_size - 8):
            raise ValueError(f"{path.name} has an implausible header length")
        header = json.loads(f.read(length))
    elements = size = 0
    for key_name, info in header.items():
        if key_name == "__metadata__":
            continue
        elements += math.prod(int(d) for d in info["shape"])
        start, end = info["data_offsets"]
        size += int(end) - int(start)
    _HEADER_CACHE[key] = (elements, size)
    return elements, size


def estimate_parameters(numbers: dict[str, Any]) -> int | None:
    """Parameters of a decoder-only transformer (Llama/Qwen layout) from its config numbers, counted
    by the memory estimator's own rule (trainers.common.memory_estimate.count_parameters, so the
    catalogue and the estimate never disagree); None when a number is missing or not a positive
    integer."""
    from trainers.common.memory_estimate import ModelShape, count_parameters

    try:
        shape = ModelShape.from_info({**numbers, "parameters": None})
    except ValueError:
        return None
    return count_parameters(shape)


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path.name} is not valid JSON ({exc.msg})") from None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _dtype_name(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value.removeprefix("torch.")
    return None
