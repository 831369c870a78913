"""The RL trainer's precision, checkpoints, micro-batching and data handling on the tiny model (CPU):
bf16 runs and resumes exactly, checkpoints are written in the training dtype and load without pickle,
micro-batching does not change a step, long prompts are dropped, prompts are drawn without replacement,
stored pass rates drive the offline filter, and the rollout-vs-trainer log-prob gap is logged."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from trainers.base import MemorySink
from trainers.common.checkpoints import OPTIMIZER_FILE, STATE_FILE
from trainers.common.tiny import build_tiny_model
from trainers.rl.config import RLConfig
from trainers.rl.prompts import EpochSampler, read_pass_rates
from trainers.rl.train import Trainer, train

pytestmark = pytest.mark.usefixtures("one_thread")

PROBLEMS = [("1+1=", "2"), ("0+1=", "1"), ("2+1=", "3"), ("1+2=", "3"), ("2+0=", "2"), ("0+3=", "3")]
COMPARED = ("actor/total_loss", "actor/pg_loss", "actor/grad_norm", "policy/entropy", "reward/mean")


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("rl-c") / "policy", seed=0, hidden=64, layers=2, heads=4)


def write_problems(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rows = [{"prompt": p, "answer": a, "domain": "math"} for p, a in PROBLEMS]
    return write_problems(tmp_path_factory.mktemp("rl-d") / "problems.jsonl", rows)


def config(policy, problems, **fields) -> RLConfig:
    # a fixed entropy bonus: a random model never answers right, so the PPO term alone has no gradient
    base = {"model_path": str(policy), "train_dataset": str(problems), "eval_dataset": str(problems), "steps": 2, "seed": 0,
            "rollout": {"n": 4, "prompts_per_step": 2, "engine": "torch",
                        "stages": [{"until_step": 10**9, "max_response": 10}]},
            "algo": {"filter_zero_adv_groups": False},
            "entropy": {"adaptive": False, "fixed_coef": 0.05},
            "optim": {"lr": 1e-3, "weight_decay": 0.0}, "eval": {"every": 0, "k": 1, "max_problems": 2},
            "checkpoint_every": 1, "reward_processes": 1, "threads": 1, "samples_per_step": 0}  # fmt: skip
    return RLConfig.model_validate({**base, **fields})


def run(cfg, workdir, resume_from=None) -> MemorySink:
    workdir.mkdir(parents=True, exist_ok=True)
    sink = MemorySink(workdir=workdir, resume_from=resume_from)
    train(cfg, sink)
    return sink


def test_bf16_on_the_cpu_trains_checkpoints_in_bf16_and_resumes_exactly(policy, data, tmp_path):
    cfg = config(policy, data, dtype="bfloat16")
    full = run(cfg, tmp_path / "full")
    for key in COMPARED:
        assert sorted(full.metrics[key]) == [1, 2] and all(
            math.isfinite(v) for v in full.metrics[key].values()
        )
    assert full.metrics["actor/grad_norm"][1] > 0
    assert "memory/peak_gb" not in full.metrics  # CUDA only

    first = [d for s, d, _ in full.checkpoints if s == 1][0]
    assert {t.dtype for t in load_file(str(first / "model.safetensors")).values()} == {torch.bfloat16}
    assert json.loads((first / "config.json").read_text()).get("dtype") == "bfloat16"
    # orlab's own state: JSON, and tensors only (the fp32 master weights beside the bf16 model)
    state = json.loads((first / STATE_FILE).read_text())
    assert state["kind"] == "rl" and state["step"] == 1
    optimizer = torch.load(first / OPTIMIZER_FILE, weights_only=True)
    assert {t.dtype for t in optimizer["master_weights"].values()} == {torch.float32}

    resumed = run(cfg, tmp_path / "resumed", resume_from=first)
    assert sorted(resumed.metrics["actor/grad_norm"]) == [2]
    for key in COMPARED:
        assert resumed.metrics[key][2] == pytest.approx(full.metrics[key][2], rel=1e-6, abs=1e-9), key


def test_without_optimizer_state_the_checkpoint_still_resumes(policy, data, tmp_path):
    cfg = config(policy, data, save_optimizer=False, steps=1)
    sink = run(cfg, tmp_path / "a")
    directory = sink.checkpoints[-1][1]
    assert not (directory / OPTIMIZER_FILE).exists() and (directory / STATE_FILE).exists()
    resumed = run(config(policy, data, save_optimizer=False, steps=2), tmp_path / "b", resume_from=directory)
    assert sorted(resumed.metrics["actor/grad_norm"]) == [2]  # a fresh AdamW from the saved weights


def test_micro_batching_does_not_change_a_step(policy, data, tmp_path):
    """Several micro-batches per update (a small token budget) give the same steps as one, off-policy
    (old log-probs in micro-batches, two mini-batches) and on-policy."""
    for algo in ({"filter_zero_adv_groups": False}, {"filter_zero_adv_groups": False, "mini_batches": 2}):
        whole = run(config(policy, data, algo=algo), tmp_path / f"whole{len(algo)}")
        split = run(config(policy, data, algo=algo, micro_batch_tokens=40), tmp_path / f"split{len(algo)}")
        assert split.metrics["actor/micro_batches"][1] >= 3 > whole.metrics["actor/micro_batches"][1]
        for key in COMPARED:
            for step in (1, 2):
                assert split.metrics[key][step] == pytest.approx(whole.metrics[key][step], rel=1e-5), (
                    key,
                    step,
                )


def test_the_rollout_log_probs_match_the_trainers_and_the_gap_is_logged(policy, data, tmp_path):
    plain = run(config(policy, data, steps=1, checkpoint_every=0), tmp_path / "plain")
    assert (
        0
        <= plain.metrics["rollout/logprob_diff_mean"][1]
        <= plain.metrics["rollout/logprob_diff_max"][1]
        < 1e-4
    )
    # top-k: the engine reports the renormalised filtered distribution's log-probs, above the full softmax
    rollout = {"n": 4, "prompts_per_step": 2, "engine": "torch", "top_k": 3,
               "stages": [{"until_step": 10**9, "max_response": 10}]}  # fmt: skip
    filtered = run(config(policy, data, steps=1, checkpoint_every=0, rollout=rollout), tmp_path / "topk")
    assert filtered.metrics["rollout/logprob_diff_mean"][1] > 0.05


def test_prompts_over_max_prompt_are_dropped_and_counted(policy, tmp_path):
    rows = [{"prompt": p, "answer": a} for p, a in PROBLEMS[:3]]
    rows += [{"prompt": "1+" * 30 + "1=", "answer": "31"}, {"prompt": "2+" * 40 + "2=", "answer": "82"}]
    data = write_problems(tmp_path / "long.jsonl", rows)
    # the rendered prompt: "<bos>user: " + text + "\nassistant: " (22 more tokens than the text)
    cfg = config(policy, data, steps=3, checkpoint_every=0, samples_per_step=8,
                 rollout={"n": 4, "prompts_per_step": 2, "max_prompt": 40, "engine": "torch",
                          "stages": [{"until_step": 10**9, "max_response": 6}]})  # fmt: skip
    sink = run(cfg, tmp_path / "run")
    assert sink.metrics["data/prompts_over_max"] == {0: 2.0}
    assert sink.metrics["data/active_prompts"][1] == 3
    shown = {s["prompt"] for _, s in sink.samples}
    assert shown and all("+1+1+1" not in p and "+2+2+2" not in p for p in shown)
    assert all(p.startswith("<bos>user: ") and p.endswith("\nassistant: ") for p in shown)  # as rendered


def test_prompts_are_drawn_without_replacement_per_epoch(policy, data, tmp_path):
    cfg = config(policy, data, steps=3, checkpoint_every=0, samples_per_step=8)  # 2 prompts x 4 samples
    sink = run(cfg, tmp_path / "run")
    per_step = {}
    for step, sample in sink.samples:
        if sample["phase"] == "train":  # the evaluations' rollouts are logged too
            per_step.setdefault(step, set()).add(sample["prompt"])
    assert [len(per_step[s]) for s in (1, 2, 3)] == [2, 2, 2]
    assert len(set().union(*per_step.values())) == len(PROBLEMS)  # one epoch: every prompt once


def test_epoch_sampler_passes_drop_the_tail_follow_the_active_set_and_resume():
    sampler = EpochSampler(seed=3)
    active = list(range(7))
    first = [sampler.take(active, 3) for _ in range(2)]
    assert len(set(first[0] + first[1])) == 6  # no repeat within the epoch
    third = sampler.take(active, 3)  # one prompt left in the pass: dropped, a new epoch starts
    assert sampler.epoch == 1 and len(set(third)) == 3
    saved = json.loads(json.dumps(sampler.state_dict()))
    later = [sampler.take(active, 2) for _ in range(3)]
    restored = EpochSampler.from_state(saved)
    assert [restored.take(active, 2) for _ in range(3)] == later
    # a prompt dropped mid-epoch (online filter) is skipped, never drawn again
    shrunk = [i for i in active if i != later[0][0]]
    restored = EpochSampler.from_state(saved)
    assert all(later[0][0] not in restored.take(shrunk, 2) for _ in range(6))


def test_the_offline_filter_uses_stored_pass_rates(policy, tmp_path):
    rates = [0.0, 0.5, 1.0, 0.25, None, 0.75]
    rows = [
        {"prompt": p, "answer": a, **({} if r is None else {"pass_rate": r})}
        for (p, a), r in zip(PROBLEMS, rates, strict=True)
    ]
    data = write_problems(tmp_path / "rated.jsonl", rows)
    assert read_pass_rates(str(data)) == rates
    sink = MemorySink(workdir=tmp_path)
    trainer = Trainer(
        config(policy, data, data={"offline_difficulty_filter": True, "difficulty_samples": 4}), sink
    )
    try:
        out = trainer.offline_difficulty_filter()
    finally:
        trainer.pool.close()
    # rows 1, 3, 5 from their stored rates; row 4 is sampled, and the random policy never solves it
    assert trainer.active == [1, 3, 5]
    assert out == {"data/offline_kept": 3, "data/offline_dropped": 3, "data/offline_stored_pass_rates": 5}
    bad = write_problems(tmp_path / "bad.jsonl", [{"prompt": "1+1=", "answer": "2", "pass_rate": 1.5}])
    with pytest.raises(ValueError, match="row 1: pass_rate"):
        read_pass_rates(str(bad))


@pytest.mark.gpu
def test_on_cuda_the_default_is_bf16_and_the_peak_memory_is_logged(policy, data, tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    sink = run(config(policy, data, steps=1, checkpoint_every=0), tmp_path)  # dtype auto: bf16 on CUDA
    for key in COMPARED:
        assert math.isfinite(sink.metrics[key][1]), key
    assert sink.metrics["memory/peak_gb"][1] > 0
    # the sampler (bf16 autocast) and the trainer (bf16 autocast, fp32 log-softmax) agree to bf16 rounding
    assert sink.metrics["rollout/logprob_diff_mean"][1] < 0.1
    saved = load_file(str(sink.checkpoints[-1][1] / "model.safetensors"))
    assert {t.dtype for t in saved.values()} == {torch.bfloat16}
