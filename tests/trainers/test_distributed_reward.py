"""The reward-model trainer on two gloo ranks (spawned as the worker's rank entry runs them: a
RankZeroSink over rank 0's sink): the same Bradley-Terry losses, pair statistics, gradient norms and
evaluations as one process on the same global batch (rel 1e-4), with DDP (engine torch) and DeepSpeed
ZeRO across the ranks; each checkpoint recorded once by rank 0 after every rank wrote its part, and a
two-rank resume from one of them continues as the uninterrupted run.

Five pairs per step on two ranks: rank 0 takes two, rank 1 three, and a small token budget cuts each
share into several forwards, so the ranks make different numbers of passes and pad them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trainers.two_ranks import run_one_process, run_two_ranks
from trainers.common.demo_data import generate_pairs, write_jsonl
from trainers.common.tiny import build_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

COMPARED = (
    "train/loss", "train/accuracy", "train/grad_norm", "train/margin_mean", "train/chosen_reward_mean",
    "train/rejected_reward_std", "train/lr", "data/chosen_len_mean",
)  # fmt: skip
EVALUATED = ("eval/loss", "eval/accuracy", "eval/margin_mean")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reward-data")
    build_tiny_model(root / "model", seed=0, hidden=64, layers=2, heads=4)
    write_jsonl(generate_pairs(40, seed=0), root / "train.jsonl")
    write_jsonl(generate_pairs(6, seed=1), root / "eval.jsonl")
    return {
        "model_path": str(root / "model"), "train_dataset": str(root / "train.jsonl"),
        "eval_dataset": str(root / "eval.jsonl"), "lr": 1e-3, "batch_size": 5, "grad_accum": 1,
        "max_steps": 3, "max_length": 96, "warmup_ratio": 0.0, "micro_batch_tokens": 200,
        "checkpoint_every": 1, "threads": 1, "seed": 2,
    }  # fmt: skip


@pytest.fixture(scope="module")
def one_process(config, tmp_path_factory) -> dict:
    return run_one_process("reward", config, tmp_path_factory.mktemp("reward-one") / "run")


def assert_same(got: dict, want: dict, steps: list[int], eval_steps: list[int]) -> None:
    for keys, at in ((COMPARED, steps), (EVALUATED, eval_steps)):
        for key in keys:
            assert sorted(got["metrics"].get(key, {}), key=int) == [str(s) for s in at], key
            for step in at:
                assert got["metrics"][key][str(step)] == pytest.approx(
                    want["metrics"][key][str(step)], rel=1e-4, abs=1e-7
                ), (key, step)


def test_two_ranks_with_ddp_match_one_process_write_checkpoints_once_and_resume(
    config, one_process, tmp_path
):
    two = run_two_ranks("reward", config, tmp_path / "two")
    assert_same(two, one_process, [1, 2, 3], [0, 3])
    assert two["metrics"]["train/micro_batches"]["1"] >= 3  # several forwards, the ranks' together
    assert (
        two["summary"]["steps"] == 3
        and two["summary"]["eval_accuracy"] == one_process["summary"]["eval_accuracy"]
    )

    assert [s for s, _ in two["checkpoints"]] == [1, 2, 3]  # recorded once each, when complete
    for listing in two["listings"]:
        assert {"model.safetensors", "optimizer.pt", "trainer_state.json", "reward_model.json"} <= set(
            listing
        )
    first = Path(two["checkpoints"][0][1])

    # resumed on 2 ranks, then stopped after step 2 (rank 0's sink asks; every rank stops there)
    resumed = run_two_ranks("reward", config, tmp_path / "resumed", resume=first, stop_after_step=2)
    assert_same(resumed, one_process, [2], [])
    assert [s for s, _ in resumed["checkpoints"]] == [2]
    assert resumed["summary"]["stopped"] and resumed["summary"]["steps"] == 2


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_two_ranks_with_deepspeed_zero_match_one_process(config, one_process, tmp_path, zero_stage):
    ds = {**config, "engine": "deepspeed", "zero_stage": zero_stage}
    two = run_two_ranks("reward", ds, tmp_path / "ds")
    assert_same(two, one_process, [1, 2, 3], [0, 3])  # every rank scores the eval set (ZeRO-3 gathers)
    last = Path(two["checkpoints"][-1][1])
    partitions = sorted(p.name for p in (last / "deepspeed" / "state").glob("*optim*"))
    assert len(partitions) == 2, partitions  # each rank wrote its optimizer partition, rank 0 the model
    assert "model.safetensors" in two["listings"][-1]
    if zero_stage == 3:  # every rank reloads its partition
        resumed = run_two_ranks("reward", ds, tmp_path / "resumed", resume=Path(two["checkpoints"][1][1]))
        assert_same(resumed, one_process, [3], [3])
