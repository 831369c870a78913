"""The RL trainer on two gloo ranks started by torch.distributed's launcher (``torchrun -m trainers.rl``):
the same losses, gradient norms and statistics as one process on the same global batch (rel 1e-4), with
DDP (engine torch) and DeepSpeed ZeRO-2/3 across the ranks; checkpoints written once by rank 0, and a
two-rank resume from one of them continues as the uninterrupted run.

Three prompts per step on two ranks: rank 0 rolls out one, rank 1 two, so the ranks hold different row
counts and pad their micro-batch passes (a small token budget makes several). A fixed entropy bonus and a
KL term give non-zero gradients although the tiny random policy earns no reward."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.base import MemorySink, get_spec

pytestmark = [pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {
    "steps": 2,
    "seed": 3,
    "checkpoint_every": 1,
    "samples_per_step": 3,
    "reward_processes": 1,
    "threads": 1,
    "micro_batch_tokens": 40,
    "optim": {"lr": 0.001},
    "rollout": {"n": 2, "prompts_per_step": 3, "stages": [{"until_step": 10**9, "max_response": 8}]},
    "eval": {"every": 0, "k": 1, "max_problems": 2},
    "data": {"generated_train": 20, "generated_eval": 2},
    "algo": {"filter_zero_adv_groups": False, "kl_coef": 0.1},
    "entropy": {"adaptive": False, "fixed_coef": 0.01},
}
COMPARED = (
    "actor/pg_loss", "actor/total_loss", "actor/kl_loss", "actor/grad_norm", "policy/entropy",
    "policy/sampled_entropy", "reward/mean", "response_length/mean", "advantages/abs_mean",
    "batch/kept_group_ratio",
)  # fmt: skip


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict[int, dict[str, float]]:
    spec = get_spec("rl")
    sink = MemorySink(workdir=tmp_path_factory.mktemp("rl-one"))
    spec.train_fn()(spec.validate(CONFIG), sink)
    steps = sorted(sink.metrics["actor/total_loss"])
    return {s: {k: sink.metrics[k][s] for k in COMPARED} for s in steps}


def two_ranks(tmp_path: Path, workdir: Path, resume: Path | None = None, **overrides) -> dict[int, dict]:
    """``torchrun --nproc-per-node 2 -m trainers.rl``; returns rank 0's JSON lines by step."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**CONFIG, **overrides}))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "--max-restarts", "0", "-m", "trainers.rl", "--config", str(config), "--workdir", str(workdir)]  # fmt: skip
    if resume is not None:
        command += ["--resume", str(resume)]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    return {r["step"]: r for r in rows if "actor/total_loss" in r}


def assert_same(got: dict[int, dict], want: dict[int, dict[str, float]], steps) -> None:
    assert sorted(got) == list(steps)
    for step in steps:
        for key in COMPARED:
            assert got[step][key] == pytest.approx(want[step][key], rel=1e-4, abs=1e-7), (step, key)


def test_two_ranks_with_ddp_match_one_process_write_checkpoints_once_and_resume(one_process, tmp_path):
    work = tmp_path / "run"
    assert_same(two_ranks(tmp_path, work), one_process, [1, 2])
    first = work / "checkpoint-00000001"
    files = sorted(p.name for p in first.iterdir())
    assert "model.safetensors" in files and "optimizer.pt" in files and "trainer_state.json" in files
    assert json.loads((first / "trainer_state.json").read_text())["step"] == 1

    resumed = two_ranks(tmp_path, tmp_path / "resumed", resume=first)
    assert_same(resumed, one_process, [2])


@pytest.mark.parametrize("zero_stage", [2, 3])
def test_two_ranks_with_deepspeed_zero_match_one_process(one_process, tmp_path, zero_stage):
    work = tmp_path / "run"
    got = two_ranks(tmp_path, work, engine="deepspeed", zero_stage=zero_stage)
    assert_same(got, one_process, [1, 2])
    # each rank wrote its optimizer partition, rank 0 the model
    partitions = sorted(
        p.name for p in (work / "checkpoint-00000002" / "deepspeed" / "state").glob("*optim*")
    )
    assert len(partitions) == 2, partitions
