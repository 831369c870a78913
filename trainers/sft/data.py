"""Problem/solution examples for SFT and held-out problems for evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trainers.common import arith


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str
    solution: str = ""


def read_problems(path: str | Path, *, need_solution: bool) -> list[Example]:
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        solution = row.get("solution") or (row.get("metadata") or {}).get("solution", "")
        if need_solution and not solution:
            raise ValueError(f"{path}: line {i} has no 'solution' (needed for SFT)")
        out.append(Example(row["prompt"], str(row.get("answer", "")), solution))
    return out


def generated(
    n_train: int, n_eval: int, seed: int, slip_fraction: float = 0.0
) -> tuple[list[Example], list[Example]]:
    train, test = arith.disjoint_splits(n_train, n_eval, seed=seed)
    slipped = arith.slips(len(train), slip_fraction, seed)
    examples = [
        Example(p.prompt, str(p.answer), p.slipped_solution() if slip else p.solution)
        for p, slip in zip(train, slipped, strict=True)
    ]
    return examples, [Example(p.prompt, str(p.answer), p.solution) for p in test]
