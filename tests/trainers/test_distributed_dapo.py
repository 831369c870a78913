"""The DAPO trainer on two gloo ranks (spawned as the worker's rank entry runs them: a RankZeroSink over
rank 0's sink): the same step values, critic and actor losses, gradient norms, statistics and
evaluations as one process on the same global batches (rel 1e-4), each checkpoint recorded once by
rank 0 after it is complete, and a two-rank resume from it gives what a one-process resume gives.

Odd global batches (5 critic sequences, 5 actor states a step) split 2/3 over the ranks, and a small
token budget makes one micro-batch per actor state, so the ranks make different numbers of passes and
pad them. The tiny random policy never answers right (every MC value is 0), but the fresh critic's
values still differ between states, so the actor's advantages and gradients are not zero. One actor
step per iteration: AdamW's first step turns the float rounding of near-zero gradient elements (which
any change of summation order brings) into differences of up to lr per element, so a second actor step
agrees only to ~2e-4, in one process too (measured: micro_batch_tokens 64 vs 10**6 moved the second
step's loss by 1.6e-4 relative).

The actor's and the critic's backward across the ranks are also checked on their own, on reference
log-probs far from the policy's (log-ratios of order 10, so their statistics are not rounding noise):
loss, statistics and every gradient as one process's (rel 1e-5)."""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.trainers.two_ranks import run_one_process, run_two_ranks
from trainers.common import distributed
from trainers.common.deepspeed_glue import free_port
from trainers.common.models import ValueModel, load_policy
from trainers.common.policy_step import PolicyLogprobs
from trainers.common.tiny import build_tiny_model
from trainers.dapo.actor import actor_backward
from trainers.dapo.critic import PrefixSequence, critic_backward

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

CONFIG = {
    "model_path": "tiny",
    "chat_template": "none",
    "seed": 3,
    "threads": 1,
    "reward_processes": 1,
    "micro_batch_tokens": 64,
    "generated_train": 40,
    "generated_eval": 2,
    "steps": {"mode": "delimiter", "delimiter": "\n", "max_steps": 4},
    "generate": {"prompts": 5, "solutions_per_prompt": 2, "mc_rollouts": 2, "max_new_tokens": 16},
    "critic": {"epochs": 1, "batch_size": 5, "max_length": 64, "val_fraction": 0.4, "eval_every": 0},
    "actor": {
        "candidates": 3,
        "epochs": 1,
        "states": 5,
        "states_per_batch": 5,
        "max_step_tokens": 16,
        "lr": 1e-5,
    },
    "eval": {"k": 1, "temperature": 0.0, "max_new_tokens": 8},
}
#: what depends on the machine's speed or memory, not on the computation
UNCOMPARED = ("timing_s/", "gen/rollouts_per_s", "gen/tokens_per_s", "memory/")
#: statistics of the log-ratio, which before the actor's first update is float32 rounding noise (~1e-6:
#: summed log-probs of ~-20) that differs with the micro-batch split; checked by the backward test below
NOISE_AT_FIRST_UPDATE = ("actor/abs_log_ratio", "actor/corr_log_ratio_adv")


def assert_same(got: dict, want: dict) -> None:
    keys = {k for k in want["metrics"] if not k.startswith(UNCOMPARED)}
    assert keys == {k for k in got["metrics"] if not k.startswith(UNCOMPARED)}
    first_actor = min(int(s) for s in want["metrics"]["actor/loss"])
    for key in sorted(keys):
        assert sorted(got["metrics"][key], key=int) == sorted(want["metrics"][key], key=int), key
        for step, value in want["metrics"][key].items():
            if key in NOISE_AT_FIRST_UPDATE and int(step) == first_actor:  # the only actor step
                continue
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(got["metrics"][key][step]), (key, step)
                continue
            assert got["metrics"][key][step] == pytest.approx(value, rel=1e-4, abs=1e-6), (key, step)


def step_values(workdir: Path, iteration: int) -> list[dict]:
    return [json.loads(line) for line in (workdir / f"step-values-iter{iteration}.jsonl").open()]


def test_two_ranks_match_one_process_write_checkpoints_once_and_resume(tmp_path):
    one = run_one_process("dapo", CONFIG, tmp_path / "one")
    two = run_two_ranks("dapo", CONFIG, tmp_path / "two")
    # the same samples whatever the world size (noise keyed by global position), gathered in order
    assert step_values(tmp_path / "two", 0) == step_values(tmp_path / "one", 0)
    assert_same(two, one)
    assert {"critic/loss", "critic/ece", "actor/loss", "actor/grad_norm", "val/accuracy"} <= set(
        two["metrics"]
    )
    assert len(two["metrics"]["actor/loss"]) == 1 and all(
        v > 0 for v in two["metrics"]["actor/loss"].values()
    )

    # one record of the iteration's checkpoint, made when rank 0 had written all of it
    assert [s for s, _ in two["checkpoints"]] == [s for s, _ in one["checkpoints"]]
    assert len(two["checkpoints"]) == 1
    assert {"model.safetensors", "critic", "optimizer.pt", "trainer_state.json"} <= set(two["listings"][0])
    checkpoint = Path(two["checkpoints"][0][1])
    assert checkpoint.parent == tmp_path / "two"

    # a second iteration resumed from it: two ranks as one process (the resumed run regenerates data
    # with the checkpoint's actor as pi_ref and trains a new critic and actor)
    more = {**CONFIG, "iterations": 2}
    resumed_one = run_one_process("dapo", more, tmp_path / "resumed-one", resume=checkpoint)
    resumed_two = run_two_ranks("dapo", more, tmp_path / "resumed-two", resume=checkpoint)
    assert step_values(tmp_path / "resumed-two", 1) == step_values(tmp_path / "resumed-one", 1)
    assert_same(resumed_two, resumed_one)
    assert min(int(s) for s in resumed_two["metrics"]["stage"]) > two["checkpoints"][0][0]
    assert [s for s, _ in resumed_two["checkpoints"]] == [s for s, _ in resumed_one["checkpoints"]]
    assert len(resumed_two["checkpoints"]) == 1


# --- the two backward passes on their own -------------------------------------------------------------
def _ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(4, 90) for _ in range(n)]


def _backward_results(directory: str) -> dict:
    """Gradients and statistics of one actor and one critic backward of fixed global batches (5 states
    x 3 candidates, 5 critic sequences), in this process's world: 1, or 2 ranks each taking its share."""
    rng = random.Random(0)
    contexts = [_ids(rng, rng.randint(5, 14)) for _ in range(5)]
    actions = [[_ids(rng, rng.randint(1, 7)) for _ in range(3)] for _ in range(5)]
    gen = torch.Generator().manual_seed(0)
    ref = -torch.rand(5, 3, generator=gen) * 10
    adv = torch.rand(5, 3, generator=gen) * 2 - 1
    seqs = []
    for _ in range(5):
        ids = _ids(rng, rng.randint(6, 20))
        ends = sorted(rng.sample(range(2, len(ids)), rng.randint(1, 4)))
        seqs.append(PrefixSequence(ids, ends, [rng.random() for _ in ends], rng.random() < 0.5))

    def wrapped(module: torch.nn.Module) -> torch.nn.Module:
        if distributed.world_size() == 1:
            return module
        return torch.nn.parallel.DistributedDataParallel(module, broadcast_buffers=False)

    model, tok = load_policy(directory)
    model.train()
    out, entropy = actor_backward(
        model, contexts, actions, ref, adv, tok.pad_token_id, beta=0.5, center=True, token_budget=3 * 21,
        forward=wrapped(PolicyLogprobs(model)),
    )  # fmt: skip
    torch.manual_seed(1)  # the same fresh value head everywhere
    critic = ValueModel(load_policy(directory)[0].base_model)
    critic.train()
    critic_value = critic_backward(
        critic, seqs, tok.pad_token_id, loss="bce", token_budget=40, forward=wrapped(critic)
    )
    return {
        "actor": [float(out.loss), out.abs_log_ratio, out.corr_log_ratio_adv, out.adv_mean, entropy],
        "critic": critic_value,
        "actor_grads": [p.grad.clone() for p in model.parameters()],
        "critic_grads": [p.grad.clone() for p in critic.parameters()],
    }


def _backward_rank(rank: int, port: int, directory: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE="2",
    )  # fmt: skip
    torch.set_num_threads(1)
    distributed.init(timeout_s=120)
    try:
        results = _backward_results(directory)
        if rank == 0:
            torch.save(results, out)
    except BaseException:
        distributed.close(synchronise=False)
        raise
    distributed.close()


def test_actor_and_critic_backward_on_two_ranks_equal_one_process(tmp_path):
    directory = str(build_tiny_model(tmp_path / "tiny", seed=3, hidden=32, layers=2))
    one = _backward_results(directory)
    out = tmp_path / "rank0.pt"
    mp.start_processes(
        _backward_rank, args=(free_port(), directory, str(out)), nprocs=2, start_method="spawn"
    )
    two = torch.load(out)
    assert one["actor"][0] > 0 and abs(one["actor"][2]) > 0.05 and one["critic"] > 0
    assert two["actor"] == pytest.approx(one["actor"], rel=1e-5)
    assert two["critic"] == pytest.approx(one["critic"], rel=1e-5)
    for kind in ("actor_grads", "critic_grads"):
        assert len(two[kind]) == len(one[kind])
        for got, want in zip(two[kind], one[kind], strict=True):
            scale = max(float(want.abs().max()), 1e-12)
            assert float((got - want).abs().max()) <= 1e-5 * scale, kind
