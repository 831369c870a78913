"""The RL sample record (issue 14) as the trainers log it, through the in-memory sink: whole groups with
consistent group/member indices, each group's status as the trainer's filter decided it, per-token arrays
of the right length on the sampled groups, and evaluation rollouts on the same problems at every
evaluation (in-run and of a checkpoint). DAPO's candidate groups are checked on test_dapo_compute's run.

The policy is a tiny model taught in a few seconds to answer ``\\boxed{d}`` with d uniform in 1-3 (as in
test_rl_deepspeed), on problems whose answers are 1-3: groups come out mixed, solved or unsolved."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest
import torch

from trainers.base import MemorySink
from trainers.common.chat import prompt_ids
from trainers.common.models import load_policy
from trainers.common.sample_record import group_status, token_offsets
from trainers.common.tiny import build_tiny_model, mark_char_tokenizer
from trainers.eval.run import evaluate_checkpoint
from trainers.rl.config import RLConfig
from trainers.rl.train import train

pytestmark = pytest.mark.usefixtures("one_thread")

PROBLEMS = [("1+1=", "2"), ("0+1=", "1"), ("2+1=", "3"), ("1+2=", "3"), ("0+2=", "2")]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl-samples")
    directory = build_tiny_model(root / "policy", seed=0, hidden=64, layers=2, heads=4)
    model, tok = load_policy(directory)
    pairs = [
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
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    mark_char_tokenizer(directory)
    data = root / "problems.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": p, "answer": a, "domain": "math", "data_source": "toy"}) + "\n"
            for p, a in PROBLEMS
        )
    )
    return directory, data, tok


@pytest.fixture(scope="module")
def rl_run(setup, tmp_path_factory):
    policy, data, _ = setup
    cfg = RLConfig.model_validate(
        {"model_path": str(policy), "train_dataset": str(data), "eval_dataset": str(data), "steps": 2, "seed": 0,
         "rollout": {"n": 4, "prompts_per_step": 4, "engine": "torch",
                     "stages": [{"until_step": 10**9, "max_response": 12}]},
         "optim": {"lr": 1e-3, "weight_decay": 0.0},
         "eval": {"every": 1, "k": 3, "max_problems": 4, "sample_problems": 3, "samples_per_problem": 2},
         "checkpoint_every": 0, "reward_processes": 1, "threads": 1,
         "sample_groups_per_step": "all", "token_stats_groups_per_step": 2}
    )  # fmt: skip
    workdir = tmp_path_factory.mktemp("rl-samples-run")
    sink = MemorySink(workdir=workdir)
    train(cfg, sink)
    return sink


def by_group(rows):
    groups = defaultdict(list)
    for step, s in rows:
        groups[(step, s["group_index"])].append(s)
    return groups


def test_whole_groups_with_their_filter_status_and_advantages(rl_run):
    train_rows = [(step, s) for step, s in rl_run.samples if s["phase"] == "train"]
    assert sorted({step for step, _ in train_rows}) == [1, 2]
    groups = by_group(train_rows)
    assert sorted(groups) == [(step, g) for step in (1, 2) for g in range(4)]  # every group of each step
    answers = dict(PROBLEMS)
    statuses = set()
    for members in groups.values():
        assert [m["member_index"] for m in members] == [0, 1, 2, 3]
        assert len({m["prompt"] for m in members}) == 1 and members[0]["prompt"].endswith("\nassistant: ")
        rewards = [m["reward"] for m in members]
        # the trainer's filter keeps groups whose rewards differ (filter_zero_adv_groups on)
        expected = group_status(rewards, kept=len(set(rewards)) > 1)
        assert {m["group_status"] for m in members} == {expected}
        statuses.add(expected)
        advantages = [m["advantage"] for m in members]
        if expected == "kept":
            assert abs(sum(advantages)) < 1e-4 and any(a != 0 for a in advantages)
        else:
            assert advantages == [0.0] * 4
        for m in members:
            assert m["rewards"] == {"math_verifier": m["reward"]}
            assert m["verdict"] in ("correct", "wrong", "no_answer") and (m["verdict"] == "correct") == (
                m["reward"] == 1.0
            )
            problem = m["prompt"].removeprefix("<bos>user: ").removesuffix("\nassistant: ")
            assert m["expected_answer"] == answers[problem] and m["data_source"] == "toy"
            assert m["finish_reason"] in ("stop", "length") and m["truncated"] == (
                m["finish_reason"] == "length"
            )
            assert 0 < m["length"] <= 12
    assert "kept" in statuses and statuses <= {"kept", "solved_all", "unsolved_all"}


def test_the_first_groups_carry_token_arrays_of_the_completions_length(rl_run, setup):
    _, _, tok = setup
    train_rows = [(step, s) for step, s in rl_run.samples if s["phase"] == "train"]
    with_tokens = [(step, s) for step, s in train_rows if "tokens" in s]
    assert sorted({(step, s["group_index"]) for step, s in with_tokens}) == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert len(with_tokens) == 16
    for _, s in with_tokens:
        t, text = s["tokens"], s["completion"]
        assert set(t) == {"offsets", "logprobs", "entropies"}  # no engine log-probs from the torch sampler
        assert len(t["offsets"]) == len(t["logprobs"]) == len(t["entropies"]) == s["length"]
        offsets = t["offsets"]
        assert offsets[0] == 0 and all(a < b for a, b in zip(offsets, offsets[1:], strict=False))
        assert offsets[-1] <= len(text)
        assert all(lp <= 0 for lp in t["logprobs"]) and all(e >= 0 for e in t["entropies"])
    # the offsets are where each token's text starts
    ids = tok.encode("\\boxed{12}", add_special_tokens=False) + [tok.eos_token_id]
    assert token_offsets(tok, ids, "\\boxed{12}") == list(range(10)) + [10]


def test_evaluation_rollouts_are_logged_on_the_same_problems_each_time(rl_run):
    evals = [(step, s) for step, s in rl_run.samples if s["phase"] == "eval"]
    assert sorted({step for step, _ in evals}) == [0, 1, 2]  # before training, then every step
    seen = {}
    for step in (0, 1, 2):
        rows = [s for st, s in evals if st == step]
        assert [(s["group_index"], s["member_index"]) for s in rows] == [
            (g, j) for g in range(3) for j in range(2)
        ]
        seen[step] = [s["prompt"] for s in rows]
        assert all("advantage" not in s and "checkpoint_step" not in s for s in rows)
    assert seen[0] == seen[1] == seen[2]
    assert seen[0][::2] == [f"<bos>user: {p}\nassistant: " for p, _ in PROBLEMS[:3]]


def test_a_checkpoint_evaluation_logs_its_rollouts_with_the_checkpoint_step(setup):
    policy, data, _ = setup
    rows: list[dict] = []
    metrics, protocol = evaluate_checkpoint(
        policy, data, k=2, max_new_tokens=12, processes=1, on_samples=rows.extend, sample_problems=2,
        checkpoint_step=7,
    )  # fmt: skip
    assert [(s["group_index"], s["member_index"]) for s in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert {s["checkpoint_step"] for s in rows} == {7} and {s["phase"] for s in rows} == {"eval"}
    assert protocol["logged_problems"] == 2 and "avg@2" in metrics
