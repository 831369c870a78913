"""avg@k / pass@k of a policy on a set of verifiable problems (seeds-spec 1.7, 6).

avg@k is the mean of 1[correct] over all k x problems samples (the paper's avg@32); with k samples per
problem (the protocol's n), pass@j (the unbiased estimator of Chen et al.; pass@1 = avg@k), pass^j and maj@j
for j in ``ks`` (default 1, 2, 4, ... k), each with ``<name>_ci`` = [lo, hi], its bootstrap 95 % interval
over problems (trainers.eval.report, trainers.eval.estimators). The protocol that produced the numbers
is returned with them (``trainers.eval.report.scalars`` drops the intervals for a scalar log).

Prompts are rendered with the chat template (``chat_template``: auto | none | a Jinja template;
trainers.common.chat) as in training and rollouts. An engine that already renders (a
``ChatTemplateEngine``, as the RL and DAPO trainers pass) keeps its own mode, so nothing is rendered
twice.

Evaluation rollouts as samples (issue 14): with ``on_samples`` and ``sample_problems``, the rollouts of
the first ``sample_problems`` problems (the head of the fixed problem list, sampled with the same seed at
every evaluation) go to ``on_samples`` in the sample record's format (trainers.common.sample_record) with
``phase = "eval"``: a problem's history across evaluations and checkpoints exists even when training
prompts never repeat. ``samples_per_problem`` (0: all k) bounds the volume to
``sample_problems x samples_per_problem`` rows per evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from trainers.common.chat import render_prompt_text
from trainers.common.rewards import RewardPool
from trainers.common.rollout import ChatTemplateEngine
from trainers.common.sample_record import OnSamples, rollout_sample
from trainers.eval import report

VERIFIER_VERSION = "orlab-verifiers-1 (math-verify, sandboxed tests)"


@dataclass(frozen=True)
class Problem:
    prompt: str
    domain: str  # "math" | "code"
    reference: object  # answer text, or the tests
    source: str = ""  # the row's data_source (or metadata.data_source / metadata.source); "arith" generated

    @property
    def data_source(self) -> str:
        return self.source or self.domain


def _row_source(row: dict) -> str:
    meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
    for value in (row.get("data_source"), meta.get("data_source"), meta.get("source")):
        if isinstance(value, str) and value:
            return value[:100]
    return ""


def load_problems(path: str | None, generated: int, seed: int, *, eval_split: bool) -> list[Problem]:
    if path is None:
        from trainers.common import arith

        train, test = arith.disjoint_splits(
            generated if not eval_split else 1, generated if eval_split else 1, seed=seed
        )
        chosen = test if eval_split else train
        return [Problem(p.prompt, "math", str(p.answer), "arith") for p in chosen]
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            ref = row.get("tests") if row.get("domain") == "code" else row.get("answer")
            out.append(Problem(row["prompt"], row.get("domain", "math"), ref, _row_source(row)))
    return out


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al. 2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def evaluate(
    engine,
    problems: list[Problem],
    pool: RewardPool,
    *,
    k: int,
    temperature: float,
    top_p: float = 1.0,
    max_new_tokens: int,
    seed: int = 0,
    chat_template: str = "auto",
    tokenizer=None,
    on_samples: OnSamples | None = None,
    sample_problems: int = 0,
    samples_per_problem: int = 0,
    checkpoint_step: int | None = None,
    ks: list[int] | None = None,
) -> tuple[dict[str, float], dict]:
    """Returns (metrics, protocol). metrics: avg@k, pass@1, pass@k, no_answer_rate, truncation_rate, and
    pass@j, pass^j, maj@j for j in ``ks`` (1 and k always), each with ``<name>_ci`` = [lo, hi].
    ``tokenizer`` renders the prompts (default: the engine's). ``on_samples`` receives the rollouts of
    the first ``sample_problems`` problems (``samples_per_problem`` each, 0: all k) as sample records
    (module docstring); ``checkpoint_step`` is written into them (a checkpoint's evaluation)."""
    if not isinstance(engine, ChatTemplateEngine):
        engine = ChatTemplateEngine(
            engine, tokenizer if tokenizer is not None else engine.tokenizer, chat_template
        )
    groups = engine.generate(
        [p.prompt for p in problems],
        n=k,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
    )
    items = [
        (p.domain, c.completion_text, p.reference)
        for p, group in zip(problems, groups, strict=True)
        for c in group
    ]
    verdicts = pool.score_batch(items)
    correct, no_answer, truncated = 0, 0, 0
    for i, group in enumerate(groups):
        v = verdicts[i * k : (i + 1) * k]
        correct += sum(x.reward >= 1.0 for x in v)
        no_answer += sum(x.verdict == "no_answer" for x in v)
        truncated += sum(comp.truncated for comp in group)
    if on_samples is not None and sample_problems > 0:
        rows = eval_samples(
            engine, problems, groups, verdicts, k=k, sample_problems=sample_problems,
            samples_per_problem=samples_per_problem, checkpoint_step=checkpoint_step,
        )  # fmt: skip
        if rows:
            on_samples(rows)
    n = max(1, len(problems))
    ks = sorted({1, k, *(ks or report.default_ks(k))})  # a k above the samples per problem is refused
    honest, estimation = report.honest_metrics([p.domain for p in problems], verdicts, k, ks)
    metrics = {
        f"avg@{k}": correct / (n * k),
        "no_answer_rate": no_answer / (n * k),
        "truncation_rate": truncated / (n * k),
        **honest,
    }
    protocol = {
        "k": k,
        "temperature": temperature,
        "top_p": top_p,
        "max_new_tokens": max_new_tokens,
        "problems": len(problems),
        "seed": seed,
        "chat_template": engine.mode if engine.mode in ("auto", "none") else "custom",
        "chat_template_sha256": report.template_hash(engine),
        "verifier": VERIFIER_VERSION,
        **estimation,
    }
    if on_samples is not None and sample_problems > 0:
        protocol["logged_problems"] = min(sample_problems, len(problems))
    return metrics, protocol


def eval_samples(
    engine: ChatTemplateEngine,
    problems: list[Problem],
    groups: list,
    verdicts: list,
    *,
    k: int,
    sample_problems: int,
    samples_per_problem: int = 0,
    checkpoint_step: int | None = None,
) -> list[dict]:
    """The sample records of the first ``sample_problems`` problems' rollouts (``samples_per_problem``
    each, 0: all): group_index = the problem's position in the evaluation set (stable across
    evaluations), member_index = the sample's, phase "eval", the prompt as the model read it."""
    per = k if samples_per_problem <= 0 else min(k, samples_per_problem)
    rows = []
    for gi, (p, group) in enumerate(zip(problems[:sample_problems], groups, strict=False)):
        shown = render_prompt_text(engine.tokenizer, p.prompt, engine.mode)
        for j, c in enumerate(group[:per]):
            v = verdicts[gi * k + j]
            row = rollout_sample(
                prompt=shown, completion=c.completion_text, length=len(c.completion_ids),
                truncated=c.truncated, finish=c.finish_reason, verdict=v, domain=p.domain,
                reference=p.reference, data_source=p.data_source, group_index=gi, member_index=j,
                phase="eval", checkpoint_step=checkpoint_step,
            )  # fmt: skip
            rows.append(row)
    return rows
