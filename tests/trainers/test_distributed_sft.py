"""The SFT trainer on two gloo ranks (spawned as the worker's rank entry runs them: a RankZeroSink over
rank 0's sink): the same losses, token accuracies, gradient norms and evaluation as one process on the
same global batch (rel 1e-4), each checkpoint recorded once by rank 0 after it is complete, and a
two-rank resume from one of them continues as the uninterrupted run.

Five sequences per step on two ranks: rank 0 takes two, rank 1 three, and a small token budget cuts
each share into several micro-batches, so the ranks make different numbers of passes and pad them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainers.two_ranks import run_one_process, run_two_ranks

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CONFIG = {
    "model_path": "tiny",
    "chat_template": "none",
    "steps": 3,
    "batch_size": 5,
    "lr": 2e-3,
    "warmup_steps": 1,
    "max_length": 40,
    "micro_batch_tokens": 64,
    "generated_train": 30,
    "generated_eval": 2,
    "max_new_tokens": 4,
    "eval_every": 0,  # evaluated at the last step only (on rank 0)
    "checkpoint_every": 1,
    "threads": 1,
    "seed": 5,
}
COMPARED = ("train/loss", "train/token_accuracy", "train/grad_norm", "train/lr")


def assert_same(got: dict, want: dict, steps: list[int]) -> None:
    for key in COMPARED:
        assert sorted(got["metrics"][key], key=int) == [str(s) for s in steps], key
        for step in steps:
            assert got["metrics"][key][str(step)] == pytest.approx(
                want["metrics"][key][str(step)], rel=1e-4, abs=1e-7
            ), (key, step)


def test_two_ranks_match_one_process_write_checkpoints_once_and_resume(tmp_path):
    one = run_one_process("sft", CONFIG, tmp_path / "one")
    two = run_two_ranks("sft", CONFIG, tmp_path / "two")
    assert_same(two, one, [1, 2, 3])
    assert two["metrics"]["train/micro_batches"]["1"] >= 3  # several passes per rank, padded
    assert two["metrics"]["eval/accuracy"] == one["metrics"]["eval/accuracy"]  # rank 0's, at step 3

    # one record per checkpoint (0-based step of the update), made when the folder was complete
    assert [s for s, _ in two["checkpoints"]] == [0, 1, 2]
    for listing in two["listings"]:
        assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= set(listing), listing
    first = Path(two["checkpoints"][0][1])
    assert first.parent == tmp_path / "two"

    # resumed on 2 ranks, then stopped after step 2 (rank 0's sink asks; every rank stops there)
    resumed = run_two_ranks("sft", CONFIG, tmp_path / "resumed", resume=first, stop_after_step=2)
    assert_same(resumed, one, [2])
    assert [s for s, _ in resumed["checkpoints"]] == [1]
    assert resumed["summary"] == {"stopped": True, "step": 1}
