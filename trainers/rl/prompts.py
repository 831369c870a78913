"""Which prompts a step trains on: the length limit, epochs without replacement, stored pass rates and
the per-step rollout seed.

OR1 samples each step's prompts with a seeded RandomSampler and ``drop_last``: every epoch is a shuffled
pass over the training set, no prompt repeats within an epoch, and the tail that cannot fill a step is
dropped. :class:`EpochSampler` does the same over the prompts still active (the offline and online
filters shrink that set), and its state is three plain values, saved in checkpoints for an exact resume.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from trainers.common.rollout import mix64


class EpochSampler:
    """Shuffled passes over the active prompts. Epoch e's order is a pure function of (seed, e, the
    prompts active when it began); a step takes the next ``k`` prompts of the pass that are still
    active, and starts a new epoch when fewer than ``k`` are left (``drop_last``)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.epoch = -1  # no pass begun yet
        self.order: list[int] = []
        self.position = 0

    def _new_epoch(self, active: list[int]) -> None:
        self.epoch += 1
        self.order = sorted(active)
        random.Random(f"orlab-rl-epoch:{self.seed}:{self.epoch}").shuffle(self.order)
        self.position = 0

    def take(self, active: list[int], k: int) -> list[int]:
        """The next ``k`` (<= len(active)) distinct prompts of the pass."""
        if not 0 < k <= len(active):
            raise ValueError(f"cannot take {k} prompts from {len(active)} active ones")
        alive = set(active)
        chosen, end = self._next(alive, k)
        if len(chosen) < k:
            self._new_epoch(active)
            chosen, end = self._next(alive, k)
        self.position = end
        return chosen

    def _next(self, alive: set[int], k: int) -> tuple[list[int], int]:
        chosen: list[int] = []
        i = self.position
        while i < len(self.order) and len(chosen) < k:
            if self.order[i] in alive:
                chosen.append(self.order[i])
            i += 1
        return chosen, i

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "order": list(self.order), "position": self.position}

    @classmethod
    def from_state(cls, state: dict) -> EpochSampler:
        sampler = cls(int(state["seed"]))
        sampler.epoch = int(state["epoch"])
        sampler.order = [int(i) for i in state["order"]]
        sampler.position = int(state["position"])
        return sampler


def step_seed(seed: int, step: int) -> int:
    """The rollout seed of training step ``step``: a hash of (run seed, step), so a resumed run, another
    world size or another batch layout samples the same rollouts (the sampler adds prompt and sample)."""
    return mix64(mix64(seed + 0x9E3779B97F4A7C15) ^ step) >> 1


def within_max_prompt(lengths: list[int], max_prompt: int) -> tuple[list[int], int]:
    """Indices of the prompts of at most ``max_prompt`` tokens, and how many were longer."""
    kept = [i for i, n in enumerate(lengths) if n <= max_prompt]
    return kept, len(lengths) - len(kept)


def read_pass_rates(path: str | None) -> list[float | None]:
    """The optional ``pass_rate`` (0..1: the share of samples a reference policy solved) of every row
    of a problems JSONL file, None where a row has none (and for generated problems: ``[]``)."""
    if path is None:
        return []
    rates: list[float | None] = []
    rows = (line for line in Path(path).read_text().splitlines() if line.strip())
    for number, line in enumerate(rows, start=1):
        value = json.loads(line).get("pass_rate")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"row {number}: pass_rate must be a number in [0, 1], got {value!r}")
            if not 0 <= value <= 1:
                raise ValueError(f"row {number}: pass_rate must be in [0, 1], got {value}")
            value = float(value)
        rates.append(value)
    return rates
