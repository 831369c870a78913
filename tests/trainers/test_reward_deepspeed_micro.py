"""The reward trainer on DeepSpeed (CPU, gloo, one process) with token-budget micro-batches: our
micro-batches close DeepSpeed's accumulation with its boundary flag and are not divided again, so the
losses and gradient norms are the torch loop's; DeepSpeed's bf16 mode trains and saves bf16 weights."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file

from trainers.base import MemorySink
from trainers.common import deepspeed_glue
from trainers.common.demo_data import generate_pairs, write_jsonl
from trainers.common.tiny import build_tiny_model
from trainers.reward.config import RewardConfig
from trainers.reward.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def process_group():
    yield
    deepspeed_glue.destroy_process_group()


def run(root, name, **fields):
    model = root / "model"
    if not (model / "config.json").is_file():
        build_tiny_model(model, seed=0, hidden=64, layers=2, heads=4)
        write_jsonl(generate_pairs(64, seed=0), root / "pairs.jsonl")
    base = {"model_path": str(model), "train_dataset": str(root / "pairs.jsonl"), "lr": 1e-3, "batch_size": 4,
            "grad_accum": 2, "max_steps": 3, "max_length": 96, "warmup_ratio": 0.0, "threads": 1,
            "micro_batch_tokens": 200}  # fmt: skip
    sink = MemorySink(workdir=root / name)
    train(RewardConfig.model_validate({**base, **fields}), sink)
    return sink


def test_deepspeed_micro_batches_match_the_torch_loop_and_bf16_trains(tmp_path):
    plain = run(tmp_path, "torch")
    ds = run(tmp_path, "ds", engine="deepspeed", zero_stage=2)
    assert min(ds.series("train/micro_batches")) >= 4  # 8 pairs per step, a few per forward
    assert ds.series("train/loss") == pytest.approx(plain.series("train/loss"), rel=1e-5)
    assert ds.series("train/grad_norm") == pytest.approx(plain.series("train/grad_norm"), rel=1e-5)
    bf16 = run(tmp_path, "bf16", engine="deepspeed", zero_stage=2, dtype="bfloat16")
    loss = bf16.series("train/loss")
    assert all(math.isfinite(x) for x in loss) and loss == pytest.approx(plain.series("train/loss"), abs=0.05)
    weights = load_file(str(bf16.checkpoints[-1][1] / "model.safetensors"))
    assert {v.dtype for v in weights.values()} == {torch.bfloat16}
