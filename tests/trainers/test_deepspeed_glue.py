"""DeepSpeed on the CPU in one process (gloo): a ZeRO-2 and a ZeRO-3 training run of the reward
trainer, matching the plain torch loop, and a DeepSpeed checkpoint that resumes exactly.

The shared-memory comm op that deepspeed.init_distributed would JIT-compile (35-130 s) is skipped by
trainers.common.deepspeed_glue (docs/packaging.md); the optimizer is a torch AdamW, so no FusedAdam
build either."""

from __future__ import annotations

import importlib
import math
import os

import pytest
import torch

from trainers.base import MemorySink
from trainers.common import deepspeed_glue
from trainers.common.demo_data import generate_pairs, write_jsonl
from trainers.common.tiny import build_tiny_model
from trainers.reward.config import RewardConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def process_group():
    """The runs below initialise torch.distributed (gloo, world size 1); undo it for later tests."""
    yield
    deepspeed_glue.destroy_process_group()
    assert not torch.distributed.is_initialized()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    model = build_tiny_model(root / "model", seed=0, hidden=64, layers=2, heads=4)
    data = write_jsonl(generate_pairs(64, seed=0), root / "pairs.jsonl")
    return model, data


def config(setup, **fields) -> RewardConfig:
    model, data = setup
    base = {"model_path": str(model), "train_dataset": str(data), "lr": 1e-3, "batch_size": 4, "grad_accum": 2,
            "max_steps": 3, "max_length": 96, "warmup_ratio": 0.0, "threads": 1}  # fmt: skip
    return RewardConfig.model_validate({**base, **fields})


def run(cfg, workdir, resume_from=None):
    from trainers.reward.train import train

    sink = MemorySink(workdir=workdir, resume_from=resume_from)
    return sink, train(cfg, sink)


def test_the_single_process_environment_gets_defaults_and_a_free_port(monkeypatch):
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    env = deepspeed_glue.ensure_single_process_env()
    assert env["MASTER_ADDR"] == "127.0.0.1" and (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == (
        "0",
        "1",
        "0",
    )
    assert 0 < int(env["MASTER_PORT"]) < 65536
    monkeypatch.setenv("MASTER_PORT", "29123")
    assert deepspeed_glue.ensure_single_process_env()["MASTER_PORT"] == "29123"  # kept when set
    config = deepspeed_glue.ds_config(micro_batch=4, grad_accum=2, zero_stage=3)
    assert config["train_batch_size"] == 8 and config["zero_optimization"] == {"stage": 3}
    assert "optimizer" not in config  # a torch optimizer is passed in: no FusedAdam build


def test_skip_shm_op_build_patches_the_comm_module():
    deepspeed_glue.skip_shm_op_build()
    assert importlib.import_module("deepspeed.comm.torch").build_shm_op() is None


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_trains_like_the_torch_loop(setup, tmp_path, stage):
    torch_sink, _ = run(config(setup), tmp_path / "torch")
    ds_sink, summary = run(config(setup, engine="deepspeed", zero_stage=stage), tmp_path / "ds")
    assert os.environ["WORLD_SIZE"] == "1" and torch.distributed.get_backend() == "gloo"
    loss = ds_sink.series("train/loss")
    assert len(loss) == 3 and all(math.isfinite(x) for x in loss)
    # Same data, same AdamW, same clipping: the same losses (step 1 before any update, 2-3 after).
    assert loss == pytest.approx(torch_sink.series("train/loss"), rel=1e-4)
    assert ds_sink.series("train/grad_norm") == pytest.approx(torch_sink.series("train/grad_norm"), rel=1e-3)
    assert loss[2] != pytest.approx(loss[0], rel=1e-3)  # the parameters moved
    from safetensors.torch import load_file

    ds_weights = load_file(str(ds_sink.checkpoints[-1][1] / "model.safetensors"))  # gathered under ZeRO-3
    torch_weights = load_file(str(torch_sink.checkpoints[-1][1] / "model.safetensors"))
    assert set(ds_weights) == set(torch_weights)
    for name, value in torch_weights.items():
        assert torch.allclose(ds_weights[name], value, atol=1e-4), name
    assert (ds_sink.checkpoints[-1][1] / "deepspeed").is_dir() and summary["steps"] == 3


def test_a_deepspeed_checkpoint_resumes_exactly(setup, tmp_path):
    cfg = config(setup, engine="deepspeed", zero_stage=2, max_steps=4, checkpoint_every=2)
    full, _ = run(cfg, tmp_path / "full")
    resumed, _ = run(cfg, tmp_path / "resumed", resume_from=full.checkpoints[0][1])
    assert sorted(resumed.metrics["train/loss"]) == [3, 4]
    for step in (3, 4):
        assert resumed.metrics["train/loss"][step] == pytest.approx(
            full.metrics["train/loss"][step], rel=1e-6
        )
        assert resumed.metrics["train/lr"][step] == pytest.approx(full.metrics["train/lr"][step], rel=1e-9)
