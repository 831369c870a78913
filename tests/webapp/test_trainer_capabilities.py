"""Trainers declare their capabilities in their spec and the web app reads them there (issue 12, point 6).

Two halves prove it: a kind registered here, unknown to the web app's source, gets every feature its
spec declares (evaluation, scoring, policy checkpoints, published datasets, run-page panels) and a kind
declaring none gets none; and no webapp module, template or script compares a run's kind with a trainer
kind literal (``external``, the web app's own kind, is the one literal allowed).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from django.test import Client

from trainers.base import REGISTRY, TrainerSpec, all_specs, register
from webapp.datasets import services as dataset_services
from webapp.datasets.models import Dataset
from webapp.datasets.step_values import step_values_publish
from webapp.runs import capabilities, model_refs, services
from webapp.runs.models import Checkpoint, Run

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db


def probe_settings(config, step):
    """The new kind's evaluation settings: its own response limit, doubled after step 100."""
    limit = int(config.get("limit", 64))
    return {"max_new_tokens": limit * 2 if step > 100 else limit, "k": 3}


PROBE = TrainerSpec(
    kind="probe-capable",
    title="a kind the web app has never heard of",
    description="registered by the test only",
    config="trainers.synthetic.config:SyntheticConfig",
    entry="trainers.synthetic.train:train",
    policy_checkpoints=True,
    evaluator="trainers.eval.run:evaluate_checkpoint",
    evaluation_settings=f"{__name__}:probe_settings",
    scorer="trainers.reward.score:score_pairs",
    publishes_datasets=("step_values",),
    panels=("memory", "scoring"),
)
PLAIN = TrainerSpec(
    kind="probe-plain",
    title="a kind that declares nothing",
    description="registered by the test only",
    config="trainers.synthetic.config:SyntheticConfig",
    entry="trainers.synthetic.train:train",
)


@pytest.fixture(autouse=True)
def _registered():
    all_specs()  # discover the real trainers first
    for spec in (PROBE, PLAIN):
        register(spec)
    try:
        yield
    finally:
        for spec in (PROBE, PLAIN):
            REGISTRY.pop(spec.kind, None)


@pytest.fixture
def runs(project):
    made = {}
    for spec in (PROBE, PLAIN):
        run = Run.objects.create(
            project=project,
            name=spec.kind,
            kind=spec.kind,
            status="succeeded",
            queue="cpu",
            config={"limit": 40, "eval": {"temperature": 0.3}},
        )
        made[spec.kind] = (run, Checkpoint.objects.create(run=run, step=150, path=f"/tmp/{spec.kind}"))
    return made


def _dataset(project, name, kind):
    return Dataset.objects.create(
        project=project, name=name, kind=kind, status="ready", version=1, row_count=3
    )


def test_a_new_kind_is_evaluated_with_the_settings_its_spec_gives(project, runs):
    bench = _dataset(project, "bench", "problems")
    run, ckpt = runs[PROBE.kind]
    evaluation = services.evaluation_request(checkpoint=ckpt, benchmark=bench)
    assert evaluation.protocol["max_new_tokens"] == 80 and evaluation.protocol["k"] == 3  # probe_settings
    assert evaluation.protocol["temperature"] == 0.3  # the config's eval section, as for every kind
    _, plain_ckpt = runs[PLAIN.kind]
    with pytest.raises(services.RunError) as refused:
        services.evaluation_request(checkpoint=plain_ckpt, benchmark=bench)
    message = refused.value.field_errors["checkpoint"][0]
    assert PROBE.kind in message and PLAIN.kind not in message  # the kinds that evaluate, from the registry


def test_a_new_kind_scores_datasets_when_its_spec_has_a_scorer(alice, project, runs):
    prefs = _dataset(project, "prefs", "preference")
    job = dataset_services.scoring_job_create(user=alice, dataset=prefs, checkpoint=runs[PROBE.kind][1])
    assert job.checkpoint_id == runs[PROBE.kind][1].pk
    with pytest.raises(dataset_services.ImportRejected):
        dataset_services.scoring_job_create(user=alice, dataset=prefs, checkpoint=runs[PLAIN.kind][1])


def test_a_new_kind_with_policy_checkpoints_can_be_started_from(project, runs):
    probe_run, probe_ckpt = runs[PROBE.kind]
    plain_run, plain_ckpt = runs[PLAIN.kind]
    assert model_refs.model_ref_errors({"model_path": f"checkpoint:{probe_ckpt.pk}"}, project) == {}
    assert (
        "not a policy"
        in model_refs.model_ref_errors({"model_path": f"checkpoint:{plain_ckpt.pk}"}, project)[
            "config.model_path"
        ][0]
    )
    services._check_dataset_refs(PLAIN.kind, {"init_from_run": probe_run.pk}, project)  # no error
    with pytest.raises(services.RunError) as refused:
        services._check_dataset_refs(PLAIN.kind, {"init_from_run": plain_run.pk}, project)
    assert PROBE.kind in refused.value.field_errors["config.init_from_run"][0]


def test_a_new_kind_publishes_only_the_datasets_its_spec_declares(project, runs, tmp_path):
    path = tmp_path / "values.jsonl"
    row = '{"prompt": "1+1=", "answer": "2", "solution": "2", "steps": ["2"], "values": [0.5, 1.0], '
    path.write_text(row + '"correct": true, "verdict": "correct"}\n')
    dataset = step_values_publish(runs[PROBE.kind][0], kind="step_values", name="v", path=path, meta={})
    assert dataset.kind == "step_values" and dataset.source_run_id == runs[PROBE.kind][0].pk
    with pytest.raises(dataset_services.ImportRejected):
        step_values_publish(runs[PLAIN.kind][0], kind="step_values", name="w", path=path, meta={})


def test_a_new_kind_gets_the_run_page_panels_its_spec_asks_for(alice, runs):
    client = Client()
    client.force_login(alice)
    probe = client.get(f"/runs/{runs[PROBE.kind][0].pk}/").content.decode()
    plain = client.get(f"/runs/{runs[PLAIN.kind][0].pk}/").content.decode()
    for testid in ("scoring-section", "memory-section"):
        assert f'data-testid="{testid}"' in probe
        assert f'data-testid="{testid}"' not in plain
    assert "run-scoring.js" in probe and "run-scoring.js" not in plain


def test_the_trainers_api_lists_each_kind_s_capabilities(api):
    trainers = {t["kind"]: t for t in api.get("/api/trainers/?page_size=100").json()["results"]}
    assert trainers[PROBE.kind]["capabilities"] == {
        "policy_checkpoints": True,
        "evaluate_checkpoints": True,
        "score_datasets": True,
        "publishes_datasets": ["step_values"],
        "panels": ["memory", "scoring"],
    }
    assert trainers[PLAIN.kind]["capabilities"] == {
        "policy_checkpoints": False,
        "evaluate_checkpoints": False,
        "score_datasets": False,
        "publishes_datasets": [],
        "panels": [],
    }
    assert (
        trainers["reward"]["capabilities"]["score_datasets"]
        and trainers["rl"]["capabilities"]["evaluate_checkpoints"]
    )


def test_external_and_unregistered_kinds_have_no_capabilities():
    for kind in ("external", "no-such-kind"):
        assert capabilities.spec_of(kind) is None
        assert not capabilities.evaluates_checkpoints(kind) and not capabilities.scores_datasets(kind)
        assert not capabilities.policy_checkpoints(kind)
        assert capabilities.panels(kind) == () and capabilities.publishes(kind) == ()


def test_a_spec_asking_for_an_unknown_panel_or_scoring_without_a_scorer_is_refused():
    common = {"title": "t", "description": "d", "config": PLAIN.config, "entry": PLAIN.entry}
    with pytest.raises(ValueError, match="unknown run-page panels"):
        TrainerSpec(kind="x", panels=("charts-in-3d",), **common)
    with pytest.raises(ValueError, match="needs a scorer"):
        TrainerSpec(kind="x", panels=("scoring",), **common)


# --- no kind list in the web app -----------------------------------------------------------------------


def _trainer_kinds() -> set[str]:
    return {spec.kind for spec in all_specs()} - {PROBE.kind, PLAIN.kind}


def _kind_literals(node: ast.AST, kinds: set[str]) -> list[str]:
    """Trainer kind strings in ``node``: a string constant, or the members of a tuple, list or set."""
    if isinstance(node, ast.Constant) and node.value in kinds:
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and e.value in kinds]
    return []


def kind_checks_in(source: str, kinds: set[str]) -> list[str]:
    """Comparisons with a trainer kind literal (``run.kind == "rl"``, ``kind in ("sft", "rl")``) and
    names bound to kind literals (``POLICY_KINDS = ("sft", "rl", "dapo")``, ``REWARD_KIND = "reward"``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                found += [f"line {node.lineno}: compares with {k!r}" for k in _kind_literals(side, kinds)]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if any("KIND" in n.upper() for n in names) and node.value is not None:
                found += [
                    f"line {node.lineno}: {names[0]} = {k!r}" for k in _kind_literals(node.value, kinds)
                ]
    return found


#: a kind compared with a literal in a template ({% if run.kind == "reward" %}) or a script
TEMPLATE_KIND_CHECK = re.compile(r"""kind\s*(?:==|!=|===|!==|\bin\b)\s*["'\[(]\s*["']?([\w-]+)""")


def test_the_webapp_holds_no_trainer_kind_in_its_conditions():
    kinds = _trainer_kinds()
    bad = {}
    for path in sorted((ROOT / "webapp").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        found = kind_checks_in(path.read_text(), kinds)
        if found:
            bad[str(path.relative_to(ROOT))] = found
    for pattern in ("templates/**/*.html", "webapp/**/*.js"):
        for path in sorted(ROOT.glob(pattern)):
            found = [m[1] for m in TEMPLATE_KIND_CHECK.finditer(path.read_text()) if m[1] in kinds]
            if found:
                bad[str(path.relative_to(ROOT))] = found
    assert bad == {}


@pytest.mark.parametrize(
    "source",
    [
        'if run.kind == "reward":\n    pass\n',
        'ok = checkpoint.run.kind not in ("sft", "rl", "dapo")\n',
        'POLICY_KINDS = ("sft", "rl", "dapo")\n',
        'REWARD_KIND = "reward"\n',
        'x = "tabular" != kind\n',
    ],
)
def test_the_kind_check_finds_each_form(source):
    assert kind_checks_in(source, _trainer_kinds())


def test_the_kind_check_leaves_external_and_field_names_alone():
    source = 'if run.kind == "external":\n    pass\nfields = ["reward", "advantage"]\nrow = s.get("reward")\n'
    assert kind_checks_in(source, _trainer_kinds()) == []
    assert not [
        m for m in TEMPLATE_KIND_CHECK.finditer('{% if run.kind != "external" %}') if m[1] in _trainer_kinds()
    ]
    assert [m[1] for m in TEMPLATE_KIND_CHECK.finditer("{% if run.kind == 'reward' %}")] == ["reward"]
