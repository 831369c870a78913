"""Iterative DAPO: each iteration regenerates the step values and retrains the critic with the
previous iteration's actor as pi_ref, publishes its own dataset and ends with its own checkpoint; a
resumed run starts at the first unfinished iteration."""

import pytest

from trainers.base import MemorySink, get_spec
from trainers.common.models import load_policy

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow, pytest.mark.timeout(600)]

TINY = {
    "generated_train": 40,
    "generated_eval": 4,
    "steps": {"mode": "delimiter", "delimiter": "\n", "max_steps": 4},
    "generate": {"prompts": 8, "solutions_per_prompt": 2, "mc_rollouts": 2, "max_new_tokens": 40},
    "critic": {"epochs": 1, "batch_size": 4, "max_length": 64, "val_fraction": 0.34, "eval_every": 0},
    "actor": {
        "candidates": 4,
        "epochs": 1,
        "states": 16,
        "states_per_batch": 4,
        "max_step_tokens": 24,
        "lr": 1e-4,
    },
    "eval": {"k": 1, "temperature": 0.0, "max_new_tokens": 40},
    "reward_processes": 1,
    "iterations": 2,
}


def stage_runs(sink) -> list[int]:
    """The stages in step order with repeats collapsed: [0, 1, 2, 0, 1, 2] for two iterations."""
    out: list[int] = []
    for _, stage in sorted(sink.metrics["stage"].items()):
        if not out or out[-1] != int(stage):
            out.append(int(stage))
    return out


def test_two_iterations_regenerate_data_and_critic_from_the_new_actor(slipped_warm_start, tmp_path):
    # from the warm start (a random policy never answers right: every advantage would be 0)
    spec = get_spec("dapo")
    sink = MemorySink(workdir=tmp_path)
    config = {
        **TINY,
        "model_path": str(slipped_warm_start.policy),
        "train_dataset": str(slipped_warm_start.train),
        "chat_template": slipped_warm_start.chat_template,
    }
    summary = spec.train_fn()(spec.validate(config), sink)
    assert stage_runs(sink) == [0, 1, 2, 0, 1, 2]
    assert [name for _, name, _, _ in sink.datasets] == ["dapo-step-values-iter0", "dapo-step-values-iter1"]
    assert [e[1] for e in sink.evaluations].count("critic-calibration") == 2
    assert len(sink.checkpoints) == 2 and sink.checkpoints[-1][0] == summary["step"]
    start, first, second = (
        load_policy(p)[0] for p in [slipped_warm_start.policy, *(c[1] for c in sink.checkpoints)]
    )

    def distance(a, b):
        return sum(float((x - y).abs().sum()) for x, y in zip(a.parameters(), b.parameters(), strict=True))

    # each iteration's actor moved on from the previous one (its pi_ref)
    assert distance(start, first) > 0 and distance(first, second) > 0


def test_a_resume_after_the_first_iteration_runs_only_the_second(tmp_path):
    spec = get_spec("dapo")
    full = MemorySink(workdir=tmp_path / "a")
    (tmp_path / "a").mkdir()
    spec.train_fn()(spec.validate(TINY), full)
    resumed = MemorySink(workdir=tmp_path / "b", resume_from=full.checkpoints[0][1])
    (tmp_path / "b").mkdir()
    spec.train_fn()(spec.validate(TINY), resumed)
    assert [name for _, name, _, _ in resumed.datasets] == ["dapo-step-values-iter1"]
    assert min(resumed.metrics["stage"]) > full.checkpoints[0][0]  # nothing before the checkpoint again
