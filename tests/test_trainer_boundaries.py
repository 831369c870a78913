"""The trainers' layering, checked on the source of every module (issue 12, point 4).

* ``trainers.base`` imports no other trainers module (it finds the trainer packages' ``spec`` modules
  by name at run time).
* ``trainers.common`` imports only ``trainers.base`` and itself; ``trainers.eval`` only those and itself;
  ``trainers.cli`` only ``trainers.base`` and ``trainers.common``.
* A method package (every other package under trainers/: rl, dapo, sft, reward, tabular, regression,
  synthetic, and any added later) imports only ``trainers.base``, ``trainers.common``, ``trainers.eval``,
  ``trainers.cli`` and itself: never another method package's modules. What two of them need lives in
  trainers.common or trainers.eval.
* workers/ reaches trainers through the registry (``trainers.base``: ``run``, ``get_spec`` and what a
  spec exposes, scoring and evaluation included) plus the few platform seams of trainers.common named in
  WORKER_TRAINER_SEAMS; never a method package or trainers.eval.

Every import counts: top-level and function-local, ``import a.b``, ``from a import b`` (as ``a.b`` when
``b`` is a submodule), relative imports, and ``importlib.import_module("...")`` with a literal name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.import_reader import imports_of

ROOT = Path(__file__).resolve().parent.parent
TRAINERS = ROOT / "trainers"
SHARED = {"common", "eval"}

#: trainers.common modules the workers may import besides trainers.base, platform plumbing rather than
#: training: the process group of a multi-rank run (workers.rank_entry), the model catalogue a worker
#: reports (workers.registry), the sandbox guards a run's scoring announces (workers.sinks), and the
#: generated data the demo seeds (workers.demo).
WORKER_TRAINER_SEAMS = {
    "trainers.base",
    "trainers.common.distributed",
    "trainers.common.model_roots",
    "trainers.common.sandbox_record",
    "trainers.common.arith",
    "trainers.common.demo_data",
}


def trainer_imports(path: Path, source: str | None = None) -> set[str]:
    """The trainers.* modules ``path`` imports, cut to the granularity the rules talk about:
    ``trainers.<package>`` for packages, ``trainers.base`` / ``trainers.cli`` for the two modules;
    names that are attributes, not modules (``from trainers.base import get_spec``), fold into their
    module."""
    out = set()
    for name in imports_of(path, source):
        parts = name.split(".")
        if parts[0] != "trainers" or len(parts) == 1:
            continue
        out.add(f"trainers.{parts[1]}")
    return out


def method_packages() -> list[str]:
    return sorted(
        p.name
        for p in TRAINERS.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name not in SHARED
    )


def allowed_for(path: Path) -> set[str]:
    rel = path.relative_to(TRAINERS).parts
    if rel == ("base.py",) or rel == ("__init__.py",):
        return set()
    if rel == ("cli.py",):
        return {"trainers.base", "trainers.common"}
    top = rel[0]
    if top == "common":
        return {"trainers.base", "trainers.common"}
    if top == "eval":
        return {"trainers.base", "trainers.common", "trainers.eval"}
    return {"trainers.base", "trainers.common", "trainers.eval", "trainers.cli", f"trainers.{top}"}


def test_the_method_packages_are_the_registered_ones():
    """Every method package registers a kind (so the registry is the way in), and the rules below
    cover every package the registry discovers."""
    from trainers.base import all_specs

    entries = {spec.entry.split(":")[0].split(".")[1] for spec in all_specs()}
    assert set(method_packages()) == entries
    assert {"rl", "dapo", "sft", "reward", "tabular", "regression", "synthetic"} <= set(method_packages())


def test_trainer_modules_import_only_the_shared_layers():
    bad = {}
    for path in sorted(TRAINERS.rglob("*.py")):
        wrong = sorted(trainer_imports(path) - allowed_for(path))
        if wrong:
            bad[str(path.relative_to(ROOT))] = wrong
    assert bad == {}


def test_workers_reach_trainers_only_through_the_registry():
    bad = {}
    for path in sorted((ROOT / "workers").rglob("*.py")):
        wrong = sorted(
            name for name in imports_of(path) if name.split(".")[0] == "trainers" and not _within_seams(name)
        )
        if wrong:
            bad[str(path.relative_to(ROOT))] = wrong
    assert bad == {}


def _within_seams(name: str) -> bool:
    """``name`` is a seam module or an attribute imported from one (``trainers.base.get_spec``)."""
    return name in WORKER_TRAINER_SEAMS or name.rpartition(".")[0] in WORKER_TRAINER_SEAMS


@pytest.mark.parametrize(
    ("source", "where", "expected"),
    [
        ("from trainers.rl.train import load_problems\n", "trainers/dapo/train.py", {"trainers.rl"}),
        ("from trainers import sft\n", "trainers/rl/train.py", {"trainers.sft"}),
        ("from ..rl import core\n", "trainers/eval/core.py", {"trainers.rl"}),
        ("def f():\n    import trainers.reward.score\n", "trainers/eval/run.py", {"trainers.reward"}),
        (
            "import importlib\nimportlib.import_module('trainers.dapo.values')\n",
            "trainers/sft/x.py",
            {"trainers.dapo"},
        ),
        ("from . import steps\n", "trainers/dapo/actor.py", {"trainers.dapo"}),
    ],
)
def test_the_checker_sees_every_form_of_import(source, where, expected):
    """The rules are only as good as the import scan: an import in each form is found (and a
    package's own relative import stays allowed)."""
    path = ROOT / where
    found = trainer_imports(path, source)
    assert expected <= found
    allowed = allowed_for(path)
    if where.startswith("trainers/dapo/") and expected == {"trainers.dapo"}:
        assert not (found - allowed)
    else:
        assert found - allowed, f"{source!r} in {where} should break the rule"


def test_the_worker_check_refuses_a_method_package():
    assert _within_seams("trainers.base.get_spec")
    assert _within_seams("trainers.common.model_roots")
    assert not _within_seams("trainers.reward.score.score_pairs")
    assert not _within_seams("trainers.eval.run.evaluate_checkpoint")
    assert not _within_seams("trainers.common.rollout")
