"""What a Python module imports, read from its source: the one reader behind the boundary tests
(tests/test_trainer_boundaries.py, tests/test_webapp_boundaries.py). Not a test itself."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, source: str | None = None, *, root: Path = ROOT, bases: bool = False) -> set[str]:
    """Every module ``path`` imports, as absolute names. Every import counts: top-level and
    function-local, ``import a.b``, ``from a import b`` (as ``a.b``: a submodule, or an attribute of
    ``a``), relative imports, and ``importlib.import_module("...")`` with a literal name. ``bases``:
    also name ``a`` itself for ``from a import b``. ``source``: the module's text, if not the file's."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    own = module_name(path, root)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if bases or any(alias.name == "*" for alias in node.names):
                names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names
