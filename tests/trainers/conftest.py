"""Shared by the trainer tests: one torch thread, and the warm start of the tests that check RL and
DAPO learn (built once per session: ~1 min)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from trainers.base import MemorySink, get_spec
from trainers.common import arith


@pytest.fixture
def one_thread():
    """Steadier timings on a shared 2-core box; no result depends on it. Opt in per module with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class WarmStart:
    policy: Path  # the SFT checkpoint
    train: Path  # the same problems, answers only (what RL and DAPO train on)
    held_out: Path  # problems disjoint from train
    chat_template: str  # how the policy reads prompts: pass it to the RL/DAPO configs trained from it


@pytest.fixture(scope="session")
def slipped_warm_start(tmp_path_factory) -> WarmStart:
    """300 SFT steps on 'distilled' arithmetic traces of which half end with a slip (every step right,
    the boxed answer one too high): the policy copies the habit, which verifier-rewarded RL and DAPO's
    step-level advantages can remove (README, "What the CPU demo shows").

    Raw prompts (chat_template none): the tiny model learns the arithmetic much more slowly behind any
    prefix. Measured (2026-12-06, seed 0): greedy held-out accuracy after 300 steps 0.31 raw, 0.15 with
    only a BOS in front (seed 1: 0.38 vs 0.16), 0.17 with the tiny chat template (0.28 after 450 steps);
    RL (test_rl_learns' settings) then moves avg@4 0.315 -> 0.472 from the raw warm start but
    0.157 -> 0.153 from the 300-step templated one, 0.267 -> 0.298 from 450 steps and 0.275 -> 0.363
    from 600 (twice this fixture's time). The
    template path has its own tests (test_sft_micro_batching, test_sft_rl, test_eval_chat_template)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        work = tmp_path_factory.mktemp("slipped-sft")
        train, test = arith.disjoint_splits(2000, 150, seed=0)
        distilled = arith.write_problems(work / "distilled.jsonl", train, slip_fraction=0.5, seed=0)
        sft = get_spec("sft")
        sink = MemorySink(workdir=work)
        sft.train_fn()(
            sft.validate(
                {
                    "steps": 300,
                    "eval_every": 0,
                    "train_dataset": str(distilled),
                    "seed": 0,
                    "chat_template": "none",
                }
            ),
            sink,
        )
        return WarmStart(
            policy=sink.checkpoints[-1][1],
            train=arith.write_problems(work / "train.jsonl", train, with_solution=False),
            held_out=arith.write_problems(work / "held_out.jsonl", test, with_solution=False),
            chat_template="none",
        )
    finally:
        torch.set_num_threads(before)
