"""TabularConfig validation (errors name their field), the registered spec and its presets, and the
import boundaries of trainers.tabular (no numpy in config/spec, no platform code anywhere)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from trainers.base import REGISTRY
from trainers.tabular.config import TabularConfig, format_errors

ROOT = Path(__file__).resolve().parents[2]
TWO_STATE = {
    "P": [[[1, 0], [0, 1]], [[0, 1], [1, 0]]],
    "r": [[0.4, 0], [1, 0]],
    "gamma": 0.9,
    "rho": [0.5, 0.5],
}


def errors_of(raw: dict) -> dict[str, str]:
    """{'mdp.gamma': message, ...} of an invalid config (fails if the config is valid)."""
    with pytest.raises(ValidationError) as info:
        TabularConfig.model_validate(raw)
    return {".".join(map(str, e["loc"])): e["msg"] for e in info.value.errors()}


def npg(mdp: dict, **fields) -> dict:
    return {"method": "softmax_npg", "step_size": 1.0, "mdp": mdp, **fields}


def with_mdp(**changes) -> dict:
    return npg({**TWO_STATE, **changes})


def test_explicit_mdp_without_kind_is_accepted():
    cfg = TabularConfig.model_validate(npg(TWO_STATE))
    assert cfg.mdp.kind == "explicit"
    assert TabularConfig.model_validate(cfg.model_dump()) == cfg  # JSON round trip


@pytest.mark.parametrize(
    "changes, field, fragment",
    [
        ({"P": [[[1, 0], [0, 1]], [[0, 1]]]}, "mdp.P", "P[1] has 1 actions"),
        ({"P": [[[1, 0], [0, 1]], [[0, 1], [1, 0, 0]]]}, "mdp.P", "P[1][1] has 3 entries"),
        ({"P": [[[0.5, 0.6], [0, 1]], [[0, 1], [1, 0]]]}, "mdp.P", "P[0][0] sums to"),
        ({"P": [[[1.5, -0.5], [0, 1]], [[0, 1], [1, 0]]]}, "mdp.P", "negative"),
        ({"P": []}, "mdp.P", "at least one state"),
        ({"r": [[0.4, 0], [1, 0], [0, 0]]}, "mdp.r", "r has 3 rows"),
        ({"r": [[0.4], [1, 0]]}, "mdp.r", "r[0] has 1 entries"),
        ({"rho": [0.5, 0.6]}, "mdp.rho", "sums to"),
        ({"rho": [1.0]}, "mdp.rho", "expected S=2"),
        ({"gamma": 1.0}, "mdp.gamma", "less than 1"),
        ({"gamma": -0.1}, "mdp.gamma", "greater than or equal to 0"),
        ({"delta": 3}, "mdp.delta", "Extra inputs"),
    ],
)
def test_explicit_mdp_errors_name_the_field(changes, field, fragment):
    errors = errors_of(with_mdp(**changes))
    assert field in errors, errors
    assert fragment in errors[field]


@pytest.mark.parametrize(
    "raw, field, fragment",
    [
        ({"method": "vanilla", "step_size": 1.0, "mdp": TWO_STATE}, "method", "softmax_npg"),
        (npg(TWO_STATE, step_size=0.0), "step_size", "greater than 0"),
        (npg(TWO_STATE, iterations=0), "iterations", "greater than or equal to 1"),
        (npg(TWO_STATE, iterations=2_000_000), "iterations", "less than or equal to"),
        (npg(TWO_STATE, checkpoint_every=-1), "checkpoint_every", "greater than or equal to 0"),
        (npg(TWO_STATE, unknown=1), "unknown", "Extra inputs"),
        ({"method": "soft_pi", "step_size": 1.0, "tau": 0.0, "mdp": TWO_STATE}, "tau", "must be > 0"),
        ({"method": "entropy_softmax_pg", "step_size": 1, "tau": 0, "mdp": TWO_STATE}, "tau", "must be > 0"),
        (npg({"kind": "garnet", "states": 3, "actions": 2, "branching": 4}), "mdp.branching", "<= states"),
        (npg({"kind": "garnet", "states": 0, "actions": 2, "branching": 1}), "mdp.states", "greater than"),
        (
            npg({"kind": "garnet", "states": 4, "actions": 2, "branching": 2, "gamma": 1.5}),
            "mdp.gamma",
            "less than 1",
        ),
        (npg({"kind": "named", "name": "maze"}), "mdp.name", "chain"),
        (npg({"kind": "named", "name": "chain", "gamma": 1.0}), "mdp.gamma", "less than 1"),
        (npg({"kind": "tabular"}), "mdp.kind", "unknown MDP kind 'tabular'"),
        (npg({"r": [[1.0]]}), "mdp.kind", "missing"),
    ],
)
def test_config_errors_name_the_field(raw, field, fragment):
    errors = errors_of(raw)
    assert field in errors, errors
    assert fragment in errors[field]


def test_entropy_npg_alpha_above_one_is_rejected_on_step_size():
    raw = {"method": "entropy_softmax_npg", "step_size": 2.0, "tau": 0.1, "mdp": {**TWO_STATE, "gamma": 0.9}}
    errors = errors_of(raw)
    assert list(errors) == ["step_size"]
    assert (
        "alpha = step_size*tau/(1-gamma) <= 1" in errors["step_size"] and "alpha = 2" in errors["step_size"]
    )
    # alpha = 1 exactly is allowed (it is soft policy iteration).
    TabularConfig.model_validate({**raw, "step_size": 1.0})


def test_format_errors_gives_one_line_per_field():
    with pytest.raises(ValidationError) as info:
        TabularConfig.model_validate(
            npg({"kind": "garnet", "states": 3, "actions": 2, "branching": 4, "gamma": 1})
        )
    assert sorted(format_errors(info.value)) == [
        "mdp.branching: must be <= states (3): the successors of (s, a) are distinct states",
        "mdp.gamma: Input should be less than 1",
    ]


def test_spec_is_registered_with_valid_presets():
    import trainers.tabular.spec  # noqa: F401  (registers on import)

    spec = REGISTRY["tabular"]
    assert spec.config_model() is TabularConfig
    assert spec.primary_metrics == ("gap", "entropy")
    assert set(spec.log_scale_metrics) == {"gap", "gap_inf", "dist_to_opt"}
    assert {"npg-garnet", "softmax-pg-garnet", "entropy-npg", "hadamard", "long-npg"} <= set(spec.presets)
    for preset in spec.presets.values():
        spec.validate(preset)  # raises, naming the field, on a broken preset
    long = spec.validate(spec.presets["long-npg"])
    assert long.iterations >= 100_000 and long.checkpoint_every > 0


def test_every_schema_field_has_a_description():
    schema = TabularConfig.model_json_schema()
    models = [schema, *schema.get("$defs", {}).values()]
    missing = [
        f"{model.get('title')}.{name}"
        for model in models
        for name, prop in model.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert missing == []


def test_import_boundaries():
    """config and spec import no numpy (the web app reads them); nothing imports the platform."""
    code = (
        "import sys\n"
        "import trainers.tabular.spec, trainers.tabular.config\n"
        "assert 'numpy' not in sys.modules, 'numpy imported by config/spec'\n"
        "import trainers.tabular.__main__, trainers.tabular.train, trainers.tabular.rates\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'django', 'rest_framework', 'celery', 'webapp', 'workers', 'torch'})\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
