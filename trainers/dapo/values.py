"""Stage 1 of DAPO: Monte-Carlo step values (seeds-spec 2.2).

Sample solutions from pi_ref, split them into steps, and from every prefix state s_t (prompt + the
first t steps, t = 0..T-1) roll out ``mc_rollouts`` completions with pi_ref; v(s_t) is the fraction the
verifier accepts. v(s_T), after the whole solution, is the solution's own reward. Identical prefix
states of one problem (every solution shares s_0, and often the first steps) are rolled out once and
share their estimate: the same state, the same estimate, and much less sampling. All rollouts of an
iteration go to the engine as one batched call (the hot path), then to the reward pool as one batch.

What the engine reads for a state is ``context(problem, steps)``: the trainer passes the chat-template
rendered ids (trainers.dapo.encoding); the default is the raw text prompt + steps.

Several ranks (trainers.common.distributed; no-ops in one process): each rank samples and scores a
contiguous share of the problems, and with them all the prefix states of those problems. Sampling
noise is keyed globally (a solution by its problem's position in ``problems``, a state by its position
in the list of distinct states of all ranks), which are the positions one process uses as its keys:
the samples do not depend on the world size, and the rows, gathered in rank order, are one process's
rows in its order."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from trainers.common import distributed
from trainers.common.rewards import RewardPool
from trainers.common.rollout import RolloutEngine
from trainers.dapo.steps import StepSplitter
from trainers.eval.core import Problem


@dataclass
class Timings:
    """Where the data generation's time went, and how much it sampled."""

    generation_s: float = 0.0
    verification_s: float = 0.0
    rollouts: int = 0  # completions sampled (solutions + MC rollouts)
    tokens: int = 0  # tokens those completions generated


@dataclass(frozen=True)
class State:
    """A prefix state: problem ``problem`` with ``steps`` (the steps so far) after its prompt."""

    problem: int
    steps: tuple[str, ...]

    @property
    def prefix(self) -> str:
        return "".join(self.steps)


#: What an engine is given for a state: a text prompt or token ids (see the module docstring).
Context = Callable[[Problem, Sequence[str]], "str | list[int]"]


def text_context(problem: Problem, steps: Sequence[str]) -> str:
    return problem.prompt + "".join(steps)


def prompt_keys_kwargs(keys: Sequence[int], n: int) -> dict[str, Any]:
    """``prompt_keys`` for ``engine.generate`` of ``n`` prompts: nothing when the keys are the positions
    (every engine's default: one process, rank 0), so an engine that predates prompt keys still serves
    one process, and an explicit ``prompt_keys`` only where a rank's share starts further on."""
    keys = list(keys)
    return {} if keys == list(range(n)) else {"prompt_keys": keys}


def _sample(engine: RolloutEngine, prompts: list[str], timings: Timings, keys: Sequence[int], **kw):
    if not prompts:
        return []  # a rank whose share is empty
    t0 = time.perf_counter()
    groups = engine.generate(prompts, **prompt_keys_kwargs(keys, len(prompts)), **kw)
    timings.generation_s += time.perf_counter() - t0
    for group in groups:
        timings.rollouts += len(group)
        timings.tokens += sum(len(c.completion_ids) for c in group)
    return groups


def _score(pool: RewardPool, items: list[tuple[str, str, Any]], timings: Timings):
    if not items:
        return []
    t0 = time.perf_counter()
    verdicts = pool.score_batch(items)
    timings.verification_s += time.perf_counter() - t0
    return verdicts


def mc_values(
    engine: RolloutEngine,
    pool: RewardPool,
    problems: Sequence[Problem],
    states: Sequence[State],
    *,
    mc_rollouts: int,
    temperature: float,
    top_p: float = 1.0,
    max_new_tokens: int,
    seed: int,
    timings: Timings | None = None,
    context: Context = text_context,
    key_offset: int = 0,
) -> dict[State, float]:
    """v(s) = the fraction of ``mc_rollouts`` pi_ref completions of s that the verifier accepts, for
    every distinct state. A completion is scored on the whole response: prefix + continuation. The
    i-th distinct state samples with prompt key ``key_offset + i`` (a rank's offset among all ranks'
    distinct states; 0 in one process)."""
    timings = timings if timings is not None else Timings()
    unique = list(dict.fromkeys(states))
    if not unique:
        return {}
    groups = _sample(
        engine, [context(problems[s.problem], s.steps) for s in unique], timings,
        range(key_offset, key_offset + len(unique)),
        n=mc_rollouts, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
    )  # fmt: skip
    items = [
        (problems[s.problem].domain, s.prefix + c.completion_text, problems[s.problem].reference)
        for s, group in zip(unique, groups, strict=True)
        for c in group
    ]
    verdicts = _score(pool, items, timings)
    return {
        s: sum(v.reward >= 1 for v in verdicts[i * mc_rollouts : (i + 1) * mc_rollouts]) / mc_rollouts
        for i, s in enumerate(unique)
    }


def reference_text(reference: Any) -> str:
    return reference if isinstance(reference, str) else json.dumps(reference)


def generate_step_data(
    engine: RolloutEngine,
    pool: RewardPool,
    problems: Sequence[Problem],
    splitter: StepSplitter,
    *,
    solutions_per_prompt: int,
    mc_rollouts: int,
    temperature: float,
    top_p: float = 1.0,
    max_new_tokens: int,
    seed: int,
    problem_ids: Sequence[int] | None = None,
    timings: Timings | None = None,
    context: Context = text_context,
) -> list[dict[str, Any]]:
    """One row per sampled solution, in the "step_values" dataset format: prompt, answer, solution,
    steps, values (len(steps) + 1: v(s_0) .. v(s_{T-1}) by Monte Carlo, then the final reward),
    correct, verdict, problem_id (``problem_ids[i]`` for ``problems[i]``; default i), domain.

    Several ranks: every rank passes all the problems, works on its share and returns all the rows
    (see the module docstring); ``timings`` count this rank's own work."""
    problem_ids = list(problem_ids) if problem_ids is not None else list(range(len(problems)))
    timings = timings if timings is not None else Timings()
    mine = range(*distributed.shard_bounds(len(problems)))
    groups = _sample(
        engine, [context(problems[pi], ()) for pi in mine], timings, mine,
        n=solutions_per_prompt, temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, seed=seed,
    )  # fmt: skip
    solutions = [(pi, c.completion_text) for pi, group in zip(mine, groups, strict=True) for c in group]
    verdicts = _score(
        pool, [(problems[pi].domain, text, problems[pi].reference) for pi, text in solutions], timings
    )
    split = [splitter.split(text) for _, text in solutions]
    states = [
        State(pi, tuple(steps[:t]))
        for (pi, _), steps in zip(solutions, split, strict=True)
        for t in range(len(steps))
    ]
    # a state belongs to one problem, so the ranks' distinct states are disjoint and, in rank order,
    # one process's distinct states in its order
    key_offset, _ = distributed.offset_and_total(len(set(states)))
    values = mc_values(
        engine, pool, problems, states, mc_rollouts=mc_rollouts, temperature=temperature, top_p=top_p,
        max_new_tokens=max_new_tokens, seed=seed + 1, timings=timings, context=context, key_offset=key_offset,
    )  # fmt: skip
    rows = []
    for (pi, text), steps, verdict in zip(solutions, split, verdicts, strict=True):
        problem = problems[pi]
        prefix_values = [values[State(pi, tuple(steps[:t]))] for t in range(len(steps))]
        rows.append(
            {
                "prompt": problem.prompt,
                "answer": reference_text(problem.reference),
                "solution": text,
                "steps": steps,
                "values": [*prefix_values, float(verdict.reward)],
                "correct": verdict.correct,
                "verdict": verdict.verdict,
                "problem_id": problem_ids[pi],
                "domain": problem.domain,
            }
        )
    return distributed.gather_lists(rows)
