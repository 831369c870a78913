"""The architecture's import rules, checked on the source: trainers/ never imports the web stack;
webapp/ reaches trainers only through trainers.base and the workers only through workers.celery."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WEB_STACK = {"django", "rest_framework", "celery", "kombu", "webapp", "workers", "drf_spectacular"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_trainers_import_no_web_stack():
    offenders = {
        str(path.relative_to(ROOT)): sorted(m for m in imported_modules(path) if m.split(".")[0] in WEB_STACK)
        for path in (ROOT / "trainers").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


#: Pure-Python trainer modules (no torch) the web app may read besides the registry: model names
#: (launch refuses paths), the memory estimate computed from the workers' model catalogue, and the shared
#: compute fields (retention rules).
WEB_TRAINER_SEAMS = {
    "trainers.base",
    "trainers.common.model_roots",
    "trainers.common.memory_estimate",
    "trainers.common.compute_config",
}


#: What the web app may import of workers/: the Celery app (to send tasks), and the embedded broker's
#: on-disk layout (the outbox looks into its queue and reservation folders to tell a message that is
#: provably gone from one still queued or held by a live worker; webapp.outbox.broker).
WEB_WORKER_SEAMS = {"workers.celery", "workers.fs_transport"}


def test_webapp_uses_only_the_trainer_seam_and_the_celery_app():
    bad = {}
    for path in (ROOT / "webapp").rglob("*.py"):
        mods = imported_modules(path)
        wrong = sorted(
            m
            for m in mods
            if (m.startswith("trainers") and m not in WEB_TRAINER_SEAMS)
            or (m.startswith("workers") and m not in WEB_WORKER_SEAMS)
        )
        if wrong:
            bad[str(path.relative_to(ROOT))] = wrong
    assert bad == {}


def test_celery_app_module_imports_nothing_of_the_project():
    mods = imported_modules(ROOT / "workers" / "celery.py")
    assert not {m for m in mods if m.split(".")[0] in {"webapp", "trainers", "django"}}


def test_a_trainer_runs_in_a_fresh_interpreter_without_django():
    code = (
        "import sys, trainers.base as b; b.all_specs(); import trainers.tabular.train, trainers.synthetic.train; "
        "assert 'django' not in sys.modules and 'celery' not in sys.modules, 'web stack imported'"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
