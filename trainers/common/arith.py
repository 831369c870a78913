"""Generated multi-step arithmetic: the CPU demo's task for SFT, RL, DAPO and evaluation.

A problem is a sum such as ``17+25+9``; its reference solution is written in steps, one partial sum
per line, ending with the answer in \\boxed{} (the format math verifiers read):

    17+25=42
    42+9=51
    \\boxed{51}

Small enough for the tiny character-level model to learn partly by SFT in minutes, hard enough
(carries, three terms) that it is not perfect, so RL and DAPO have room to improve it."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

STEP_DELIMITER = "\n"


@dataclass(frozen=True)
class ArithProblem:
    terms: tuple[int, ...]

    @property
    def prompt(self) -> str:
        return "+".join(map(str, self.terms)) + "="

    @property
    def answer(self) -> int:
        return sum(self.terms)

    def steps(self) -> list[str]:
        out, acc = [], self.terms[0]
        for t in self.terms[1:]:
            out.append(f"{acc}+{t}={acc + t}")
            acc += t
        return out + [f"\\boxed{{{acc}}}"]

    @property
    def solution(self) -> str:
        return STEP_DELIMITER.join(self.steps())

    def slipped_solution(self) -> str:
        """The solution with a slip in the last line: every step right, the boxed answer one too high.
        What unverified distillation data contains; SFT copies the habit, a verifier-rewarded RL (or
        DAPO, whose critic sees the value drop at that step) removes it."""
        return STEP_DELIMITER.join(self.steps()[:-1] + [f"\\boxed{{{self.answer + 1}}}"])


def generate(
    n: int, *, seed: int, max_value: int = 30, terms: tuple[int, int] = (2, 3)
) -> list[ArithProblem]:
    rng = random.Random(seed)
    return [
        ArithProblem(tuple(rng.randint(1, max_value) for _ in range(rng.randint(*terms)))) for _ in range(n)
    ]


def slips(n: int, fraction: float, seed: int) -> list[bool]:
    """Which of n solutions carry the last-line slip (seeded, independent of the problems' seed)."""
    rng = random.Random(seed + 7919)
    return [rng.random() < fraction for _ in range(n)]


def write_problems(
    path: str | Path,
    problems: list[ArithProblem],
    *,
    with_solution: bool = True,
    slip_fraction: float = 0.0,
    seed: int = 0,
) -> Path:
    """JSONL in the platform's problem format: {prompt, answer[, solution]}. ``slip_fraction`` of the
    solutions end with a wrong boxed answer (``ArithProblem.slipped_solution``); answers stay right."""
    path = Path(path)
    slipped = slips(len(problems), slip_fraction, seed)
    with open(path, "w") as f:
        for p, slip in zip(problems, slipped, strict=True):
            row = {"prompt": p.prompt, "answer": str(p.answer), "domain": "math"}
            if with_solution:
                row["solution"] = p.slipped_solution() if slip else p.solution
            f.write(json.dumps(row) + "\n")
    return path


def disjoint_splits(n_train: int, n_test: int, *, seed: int = 0, **kw) -> tuple[list, list]:
    """Train and held-out problems with no prompt in common."""
    train = generate(n_train, seed=seed, **kw)
    seen = {p.prompt for p in train}
    test: list[ArithProblem] = []
    k = 1
    while len(test) < n_test:
        for p in generate(n_test * 2, seed=seed + 1000 * k, **kw):
            if p.prompt not in seen and len(test) < n_test:
                seen.add(p.prompt)
                test.append(p)
        k += 1
    return train, test
