"""webapp.ui (the HTML pages) and webapp.api (the REST API) never import each other (issue 12.3): what
both need lives below them (services, selectors, webapp.selectors, webapp.errors). Checked on the
source, every module of both packages, every import statement (inside functions too), absolute and
relative."""

from __future__ import annotations

from pathlib import Path

from tests.import_reader import imports_of

ROOT = Path(__file__).resolve().parent.parent
WEBAPP = ROOT / "webapp"


def imported(path: Path, root: Path = ROOT) -> set[str]:
    """Every module an import statement of ``path`` names (for ``from x import y``: x and x.y)."""
    return imports_of(path, root=root, bases=True)


def _offenders(own: str, other: str) -> dict[str, list[str]]:
    bad = {}
    for path in sorted((WEBAPP / own).rglob("*.py")):
        wrong = sorted(
            m for m in imported(path) if m == f"webapp.{other}" or m.startswith(f"webapp.{other}.")
        )
        if wrong:
            bad[str(path.relative_to(ROOT))] = wrong
    return bad


def test_the_pages_never_import_the_api():
    assert _offenders("ui", "api") == {}


def test_the_api_never_imports_the_pages():
    assert _offenders("api", "ui") == {}


def test_the_checker_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "webapp" / "ui"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text(
        "import webapp.api.views\n"
        "from webapp import api\n"
        "from ..api import errors\n"
        "def f():\n    from webapp.api.table_views import X\n"
    )
    got = imported(pkg / "a.py", root=tmp_path)
    assert {"webapp.api.views", "webapp.api", "webapp.api.errors", "webapp.api.table_views"} <= got
