"""Issue 16 point 9: a tabular method never demands a field it does not use. soft_pi (the theory's
soft policy iteration, pi <- softmax(Q_tau / tau)) has no step size: its config needs none, and it
learns without one; every other method still demands its step size, at the field."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from trainers.base import MemorySink
from trainers.tabular.config import STEP_SIZE_METHODS, TabularConfig
from trainers.tabular.spec import PRESETS
from trainers.tabular.train import train

GARNET = {"kind": "garnet", "states": 10, "actions": 3, "branching": 3, "seed": 0, "gamma": 0.9}
METHODS = ("projected_pg", "projected_q_ascent", "softmax_pg", "softmax_npg", "entropy_softmax_pg",
           "entropy_softmax_npg", "soft_pi", "hadamard_pg")  # fmt: skip


def test_only_soft_pi_goes_without_a_step_size():
    assert set(METHODS) - STEP_SIZE_METHODS == {"soft_pi"}
    assert "step_size" not in TabularConfig.model_json_schema().get("required", [])
    TabularConfig.model_validate({"method": "soft_pi", "tau": 0.1, "mdp": GARNET})
    for method in sorted(STEP_SIZE_METHODS):
        with pytest.raises(ValidationError) as caught:
            TabularConfig.model_validate({"method": method, "tau": 0.1, "mdp": GARNET})
        errors = caught.value.errors()
        assert [e["loc"] for e in errors] == [("step_size",)], method
        assert f"required for method {method}" in errors[0]["msg"]
    assert "step_size" not in PRESETS["soft-pi"]


def test_soft_pi_without_a_step_size_learns(tmp_path):
    sink = MemorySink(workdir=tmp_path / "a")
    config = TabularConfig.model_validate({"method": "soft_pi", "tau": 0.1, "iterations": 12, "mdp": GARNET})
    summary = train(config, sink)
    gap = np.array(sink.series("gap"))
    # The regularised gap falls from above 0.1 to the rounding floor in 12 steps (locally quadratic):
    # at least 10 orders of magnitude, monotonically (observed 0.6 -> ~1e-15).
    assert gap[0] > 0.1 and gap[-1] <= 1e-11 * gap[0]
    assert np.all(np.diff(gap) <= 1e-12)
    assert summary["final_gap"] == gap[-1] and summary["iterations"] == 12
    assert "step_size" not in sink.metrics  # nothing to log: it has none
    # a step size given to soft_pi is ignored: the same iterates
    with_step = MemorySink(workdir=tmp_path / "b")
    train(TabularConfig.model_validate({**config.model_dump(), "step_size": 7.0}), with_step)
    assert with_step.series("gap") == sink.series("gap")
