"""The RL trainer on DeepSpeed ZeRO-2 and ZeRO-3, on the CPU in one process (gloo): the same steps as
the torch engine, rollouts from the updated weights, checkpoints that load and resume.

Why the torch and DeepSpeed runs must agree: both step the same torch AdamW on the same rollouts (the
rollout seeds come from the trainer's own RNG, not torch's), DeepSpeed clips by its config instead of
clip_grad_norm_, and in one process ZeRO only re-lays the fp32 tensors out (flat buffers; ZeRO-3
partitions and gathers them). What remains is float summation order in the flat-buffer grad norm and
update: measured ~3e-7 relative on the grad norm, so the tolerance below is 1e-4. Step 2 samples with
the weights step 1 left, so it agrees only if the update and the weight sync agree too.

The policy is a tiny model taught in a few seconds to answer ``\\boxed{d}`` with d uniform in 1-3, on
problems whose answers are 1-3: a third of the samples are right, so most groups are mixed and the PPO
term (not only the entropy bonus) drives the update, as in a real run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from trainers.base import MemorySink
from trainers.common import deepspeed_glue
from trainers.common.chat import prompt_ids
from trainers.common.models import load_policy
from trainers.common.tiny import build_tiny_model, mark_char_tokenizer
from trainers.rl.config import RLConfig
from trainers.rl.train import Trainer, train

pytestmark = pytest.mark.usefixtures("one_thread")

PROBLEMS = [("1+1=", "2"), ("0+1=", "1"), ("2+1=", "3"), ("1+2=", "3")]
COMPARED = ("actor/total_loss", "actor/pg_loss", "actor/grad_norm", "policy/entropy", "reward/mean")


@pytest.fixture(scope="module", autouse=True)
def process_group():
    """DeepSpeed initialises torch.distributed (gloo, world size 1); undo it for later tests."""
    yield
    deepspeed_glue.destroy_process_group()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl-ds")
    directory = build_tiny_model(root / "policy", seed=0, hidden=64, layers=2, heads=4)
    model, tok = load_policy(directory)
    pairs = [  # the prompt as the trainer renders it (the tiny tokenizer's chat template)
        (prompt_ids(tok, p, "auto"), tok.encode(f"\\boxed{{{d}}}") + [tok.eos_token_id])
        for p, _ in PROBLEMS
        for d in "123"
    ]
    width = max(len(p) + len(c) for p, c in pairs)
    ids = torch.full((len(pairs), width), tok.pad_token_id)
    labels = torch.full((len(pairs), width), -100)
    for i, (p, c) in enumerate(pairs):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5  # the format is learnt; the digit stays a coin toss among three
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    mark_char_tokenizer(directory)
    data = root / "problems.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": p, "answer": a, "domain": "math"}) + "\n" for p, a in PROBLEMS)
    )
    return directory, data


def config(setup, **fields) -> RLConfig:
    policy, data = setup
    base = {"model_path": str(policy), "train_dataset": str(data), "eval_dataset": str(data), "steps": 2, "seed": 0,
            "rollout": {"n": 4, "prompts_per_step": 4, "engine": "torch",
                        "stages": [{"until_step": 10**9, "max_response": 12}]},
            "optim": {"lr": 1e-3, "weight_decay": 0.0}, "eval": {"every": 0, "k": 1, "max_problems": 2},
            "checkpoint_every": 1, "reward_processes": 1, "threads": 1, "samples_per_step": 0}  # fmt: skip
    return RLConfig.model_validate({**base, **fields})


def run(cfg, workdir, resume_from=None) -> MemorySink:
    workdir.mkdir(parents=True, exist_ok=True)
    sink = MemorySink(workdir=workdir, resume_from=resume_from)
    train(cfg, sink)
    return sink


@pytest.fixture(scope="module")
def torch_run(setup, tmp_path_factory):
    return run(config(setup), tmp_path_factory.mktemp("torch"))


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_steps_like_the_torch_engine(setup, torch_run, tmp_path, stage):
    ds = run(config(setup, engine="deepspeed", zero_stage=stage), tmp_path)
    assert torch.distributed.get_backend() == "gloo" and torch.distributed.get_world_size() == 1
    assert "batch/skipped" not in ds.metrics  # mixed groups: both steps updated the policy
    for key in COMPARED:
        values = ds.metrics[key]
        assert sorted(values) == [1, 2] and all(math.isfinite(v) for v in values.values()), key
        for step in (1, 2):
            assert values[step] == pytest.approx(torch_run.metrics[key][step], rel=1e-4, abs=1e-7), (
                key,
                step,
            )
    assert ds.metrics["actor/grad_norm"][1] > 1e-3  # a real gradient, not a zero loss

    # checkpoints: whole parameters (gathered under ZeRO-3) that load_policy reads, equal to torch's,
    # and moved away from the starting policy
    policy, _ = setup
    start = load_file(str(policy / "model.safetensors"))
    saved = load_file(str(ds.checkpoints[-1][1] / "model.safetensors"))
    reference = load_file(str(torch_run.checkpoints[-1][1] / "model.safetensors"))
    assert set(saved) == set(reference) == set(start)
    for name in saved:
        assert saved[name].shape == start[name].shape, name
        # a key bias has no true gradient (the softmax does not change when every key moves by the same
        # vector): Adam normalises its rounding noise into steps of up to lr, whose sign summation order
        # decides
        atol = 2 * 2 * 1e-3 if name.endswith("k_proj.bias") else 1e-5
        assert torch.allclose(saved[name], reference[name], atol=atol), name
    moved = max(float((saved[n] - start[n]).abs().max()) for n in saved)
    assert moved > 1e-3
    model, _ = load_policy(ds.checkpoints[-1][1])
    assert sum(p.numel() for p in model.parameters()) == sum(t.numel() for n, t in start.items())
    assert (ds.checkpoints[-1][1] / "deepspeed").is_dir()


def test_under_zero3_the_sampler_gets_the_gathered_weights(setup, tmp_path):
    sink = MemorySink(workdir=tmp_path)
    trainer = Trainer(config(setup, engine="deepspeed", zero_stage=3), sink)
    try:
        sampler_model = trainer.engine.model
        assert sampler_model is not trainer.model  # ZeRO-3 partitions the policy: a dense copy samples
        before = {n: p.detach().clone() for n, p in sampler_model.named_parameters()}
        assert "batch/skipped" not in trainer.step(1)
        trainer.sync_rollout_weights()
        with deepspeed_glue.full_parameters(trainer.model, 3):
            policy = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        for name, p in sampler_model.named_parameters():
            assert torch.equal(p, policy[name]), name
        assert any(not torch.equal(before[n], policy[n]) for n in policy)
    finally:
        trainer.pool.close()


def test_a_deepspeed_checkpoint_resumes_exactly_and_only_on_deepspeed(setup, tmp_path):
    cfg = config(setup, engine="deepspeed", zero_stage=2)
    full = run(cfg, tmp_path / "full")
    first = [d for s, d, _ in full.checkpoints if s == 1][0]
    resumed = run(cfg, tmp_path / "resumed", resume_from=first)
    assert sorted(resumed.metrics["actor/grad_norm"]) == [2]  # step 1 is not logged again
    for key in COMPARED:
        assert resumed.metrics[key][2] == pytest.approx(full.metrics[key][2], rel=1e-6, abs=1e-9), key
    with pytest.raises(ValueError, match="engine=deepspeed zero_stage=2"):
        Trainer(config(setup), MemorySink(workdir=tmp_path / "torch", resume_from=first))


def test_zero2_in_micro_batches_steps_like_the_unsplit_torch_engine(setup, torch_run, tmp_path):
    """Gradient accumulation on DeepSpeed: the boundary flag closes the mini-batch and the loss is not
    divided a second time, so several micro-batches step like the torch engine's single one."""
    ds = run(config(setup, engine="deepspeed", zero_stage=2, micro_batch_tokens=40), tmp_path)
    assert ds.metrics["actor/micro_batches"][1] >= 3 and torch_run.metrics["actor/micro_batches"][1] == 1
    for key in COMPARED:
        for step in (1, 2):
            assert ds.metrics[key][step] == pytest.approx(torch_run.metrics[key][step], rel=1e-4, abs=1e-7), (
                key,
                step,
            )


def test_deepspeed_bf16_mode_runs_on_the_cpu_and_checkpoints_in_bf16(setup, tmp_path):
    ds = run(config(setup, engine="deepspeed", zero_stage=2, dtype="bfloat16", steps=1), tmp_path)
    for key in COMPARED:
        assert math.isfinite(ds.metrics[key][1]), key
    assert ds.metrics["actor/grad_norm"][1] > 0
    saved = load_file(str(ds.checkpoints[-1][1] / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
