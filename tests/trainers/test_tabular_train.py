"""The training loop: logged metrics, checkpoints, cooperative stop, and exact resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from safetensors.numpy import load_file

from trainers.base import MemorySink
from trainers.tabular.config import TabularConfig
from trainers.tabular.train import train

GARNET = {"kind": "garnet", "states": 10, "actions": 3, "branching": 3, "seed": 0, "gamma": 0.9}
ALL_METHODS = [
    ("projected_pg", 1.0),
    ("projected_q_ascent", 1.0),
    ("softmax_pg", 1.0),
    ("softmax_npg", 1.0),
    ("entropy_softmax_pg", 1.0),
    ("entropy_softmax_npg", 0.5),
    ("soft_pi", 1.0),
    ("hadamard_pg", 0.1),
]
KEYS = {"gap", "value", "gap_inf", "entropy", "dist_to_opt", "step_size"}


def config(method: str, step_size: float, **fields) -> TabularConfig:
    return TabularConfig.model_validate({"method": method, "step_size": step_size, "mdp": GARNET, **fields})


@pytest.mark.filterwarnings("error")  # e.g. log(0) of a projected policy must not warn
@pytest.mark.parametrize("method, step_size", ALL_METHODS)
def test_every_step_is_logged_with_finite_metrics(tmp_path, method, step_size):
    sink = MemorySink(workdir=tmp_path)
    summary = train(config(method, step_size, iterations=60), sink)
    expected = KEYS | ({"suboptimal_mass"} if method == "hadamard_pg" else set())
    assert set(sink.metrics) == expected
    for key in expected:
        assert sorted(sink.metrics[key]) == list(range(61)), key
        assert all(math.isfinite(v) for v in sink.series(key)), key
    gap = np.array(sink.series("gap"))
    assert gap[0] > 0.1 and gap.min() >= -1e-10 and gap[-1] < gap[0]
    assert sink.series("entropy")[0] == pytest.approx(math.log(3))  # the uniform start
    dist = sink.series("dist_to_opt")
    assert min(dist) >= 0.0 and max(dist) <= 2.0
    assert np.all(np.array(sink.series("gap_inf")) >= gap - 1e-12)  # a max over states bounds the rho-mean
    assert set(sink.series("step_size")) == {step_size}
    assert summary == {"final_gap": gap[-1], "iterations": 60, "stopped": False}


def test_regularised_methods_report_the_regularised_gap(tmp_path):
    plain, regularised = MemorySink(workdir=tmp_path / "a"), MemorySink(workdir=tmp_path / "b")
    train(config("softmax_npg", 1.0, iterations=3), plain)
    train(config("entropy_softmax_npg", 0.5, tau=0.1, iterations=3), regularised)
    # Same uniform start: the regularised value adds the discounted entropy bonus tau log(3)/(1 - gamma).
    bonus = 0.1 * math.log(3) / (1 - 0.9)
    assert regularised.series("value")[0] == pytest.approx(plain.series("value")[0] + bonus, abs=1e-12)


def test_projected_pg_reaches_an_exact_optimum_without_warnings(tmp_path):
    sink = MemorySink(workdir=tmp_path)
    with np.errstate(all="raise"):  # any log(0) or 0 * inf would raise here
        train(config("projected_pg", 10.0, iterations=200), sink)
    assert sink.series("dist_to_opt")[-1] == 0.0
    assert sink.series("entropy")[-1] == 0.0


def test_checkpoints_every_n_and_at_the_end(tmp_path):
    sink = MemorySink(workdir=tmp_path)
    train(config("softmax_npg", 1.0, iterations=35, checkpoint_every=10), sink)
    assert [step for step, _, _ in sink.checkpoints] == [10, 20, 30, 35]
    step, directory, metrics = sink.checkpoints[-1]
    assert json.loads((directory / "state.json").read_text()) == {"step": 35, "method": "softmax_npg"}
    theta = load_file(str(directory / "params.safetensors"))["theta"]
    assert theta.shape == (10, 3) and theta.dtype == np.float64
    assert metrics == {"gap": sink.series("gap")[35]}


def test_only_a_final_checkpoint_by_default(tmp_path):
    sink = MemorySink(workdir=tmp_path)
    train(config("projected_pg", 1.0, iterations=20), sink)
    assert [step for step, _, _ in sink.checkpoints] == [20]
    pi = load_file(str(sink.checkpoints[0][1] / "params.safetensors"))["pi"]
    assert np.allclose(pi.sum(axis=1), 1.0)


def test_stop_is_polled_every_step_and_leaves_a_checkpoint(tmp_path):
    sink = MemorySink(workdir=tmp_path)
    sink.stop_after_step = 7
    summary = train(config("softmax_npg", 1.0, iterations=1000), sink)
    assert summary["stopped"] is True and summary["iterations"] == 7
    assert sorted(sink.metrics["gap"]) == list(range(8))
    assert [step for step, _, _ in sink.checkpoints] == [7]


@pytest.mark.parametrize("method, step_size", ALL_METHODS)
def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, method, step_size):
    cfg = config(method, step_size, iterations=40, checkpoint_every=10)
    full = MemorySink(workdir=tmp_path / "full")
    train(cfg, full)

    first = MemorySink(workdir=tmp_path / "first")
    first.stop_after_step = 17
    assert train(cfg, first)["stopped"] is True
    step, directory, _ = first.checkpoints[-1]
    assert step == 17

    resumed = MemorySink(workdir=tmp_path / "resumed", resume_from=directory)
    summary = train(cfg, resumed)
    assert summary["stopped"] is False and summary["iterations"] == 40
    assert min(resumed.metrics["gap"]) == 18  # step 17 is not logged twice
    for key, values in full.metrics.items():
        assert {k: v for k, v in values.items() if k >= 18} == resumed.metrics[key], key  # bit-exact
    # Resuming from a periodic checkpoint works the same way.
    periodic = full.checkpoints[1][1]  # step 20
    again = MemorySink(workdir=tmp_path / "again", resume_from=periodic)
    train(cfg, again)
    assert again.series("gap") == [full.metrics["gap"][k] for k in range(21, 41)]


def test_resume_of_a_finished_run_logs_nothing(tmp_path):
    cfg = config("softmax_npg", 1.0, iterations=5)
    done = MemorySink(workdir=tmp_path / "done")
    train(cfg, done)
    again = MemorySink(workdir=tmp_path / "again", resume_from=done.checkpoints[-1][1])
    summary = train(cfg, again)
    assert again.metrics == {} and again.checkpoints == []
    assert summary == {"final_gap": done.series("gap")[-1], "iterations": 5, "stopped": False}


def test_resume_refuses_a_checkpoint_of_another_method(tmp_path):
    done = MemorySink(workdir=tmp_path / "done")
    train(config("softmax_npg", 1.0, iterations=3), done)
    other = MemorySink(workdir=tmp_path / "other", resume_from=done.checkpoints[-1][1])
    with pytest.raises(ValueError, match="softmax_npg"):
        train(config("softmax_pg", 1.0, iterations=3), other)


def test_named_grid_with_tied_optimal_actions_converges(tmp_path):
    sink = MemorySink(workdir=tmp_path)
    cfg = TabularConfig.model_validate(
        {
            "method": "softmax_npg",
            "step_size": 5.0,
            "iterations": 200,
            "mdp": {"kind": "named", "name": "grid"},
        }
    )
    train(cfg, sink)
    # dist_to_opt measures the distance to the set of optimal policies, so ties do not keep it away from 0.
    assert sink.series("dist_to_opt")[-1] <= 1e-8 and sink.series("gap")[-1] <= 1e-10
