"""Evaluate one policy checkpoint on one benchmark file (what the platform's on-demand evaluation runs).

python -m trainers.eval --checkpoint DIR --benchmark problems.jsonl --k 32 --temperature 0.6

Prompts are rendered with the checkpoint's chat template (``--chat-template``: auto, none or a Jinja
template), as the trainers render them; the policy is held in the inference dtype (bf16 on CUDA by
default, ``--dtype``) on the GPU when there is one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainers.common.chat import ChatTemplateError
from trainers.common.engines import make_engine
from trainers.common.models import load_policy
from trainers.common.precision import inference_precision
from trainers.common.rewards import RewardPool
from trainers.common.sample_record import OnSamples
from trainers.common.sandbox_record import sandbox_record
from trainers.eval.core import evaluate, load_problems


def evaluate_checkpoint(
    checkpoint: str | Path,
    benchmark: str | Path,
    *,
    k: int,
    temperature: float = 0.6,
    top_p: float = 1.0,
    max_new_tokens: int = 512,
    max_problems: int = 0,
    seed: int = 0,
    processes: int = 2,
    chat_template: str = "auto",
    dtype: str = "auto",
    on_samples: OnSamples | None = None,
    sample_problems: int = 16,
    samples_per_problem: int = 0,
    checkpoint_step: int | None = None,
    ks: list[int] | None = None,
) -> tuple[dict[str, float], dict]:
    """Metrics (with ``<name>_ci`` intervals) and protocol of trainers.eval.core.evaluate; ``ks``: the k
    values of pass@k / pass^k / maj@k (default 1, 2, 4, ... k)."""
    precision = inference_precision(dtype)
    model, tokenizer = load_policy(checkpoint, dtype=precision.param_dtype, device=precision.device)
    model.eval()
    engine = make_engine("auto", model, tokenizer, Path(checkpoint))
    problems = load_problems(str(benchmark), 0, seed, eval_split=True)
    if max_problems:
        problems = problems[:max_problems]
    with RewardPool(processes) as pool:
        metrics, protocol = evaluate(
            engine,
            problems,
            pool,
            k=k,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=seed,
            chat_template=chat_template,
            tokenizer=tokenizer,
            on_samples=on_samples,
            sample_problems=sample_problems,
            samples_per_problem=samples_per_problem,
            checkpoint_step=checkpoint_step,
            ks=ks,
        )
    protocol["checkpoint"] = str(checkpoint)
    protocol["dtype"] = precision.name
    protocol.update(sandbox_record(pool))  # which guards scored the programs (code benchmarks)
    return metrics, protocol


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m trainers.eval")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--benchmark", required=True, help="problems JSONL: {prompt, answer} or {prompt, tests}")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--max-problems", type=int, default=0)
    p.add_argument(
        "--chat-template", default="auto", help="auto (the tokenizer's), none, or a Jinja template"
    )
    p.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"))
    p.add_argument("--samples-out", help="write the first problems' rollouts here (JSONL sample records)")
    p.add_argument(
        "--sample-problems", type=int, default=16, help="problems whose rollouts --samples-out gets"
    )
    p.add_argument("--checkpoint-step", type=int, default=None, help="written into the sample records")
    p.add_argument(
        "--ks", type=lambda v: [int(x) for x in v.split(",") if x.strip()], default=None,
        help="k values of pass@k, pass^k, maj@k, comma-separated, each <= --k (default 1,2,4,...,k)",
    )  # fmt: skip
    a = p.parse_args(argv)
    for path in (a.checkpoint, a.benchmark):
        if not Path(path).exists():
            print(f"error: {path} does not exist", file=sys.stderr)
            return 2
    if a.ks and not all(1 <= k <= a.k for k in a.ks):
        print(f"error: --ks: every k must be from 1 to --k ({a.k}), got {a.ks}", file=sys.stderr)
        return 2
    samples: list[dict] = []
    try:
        metrics, protocol = evaluate_checkpoint(
            a.checkpoint, a.benchmark, k=a.k, temperature=a.temperature, top_p=a.top_p,
            max_new_tokens=a.max_new_tokens, max_problems=a.max_problems, chat_template=a.chat_template,
            dtype=a.dtype, on_samples=samples.extend if a.samples_out else None,
            sample_problems=a.sample_problems, checkpoint_step=a.checkpoint_step, ks=a.ks,
        )  # fmt: skip
    except ChatTemplateError as exc:
        print(f"error: --chat-template: {exc}", file=sys.stderr)
        return 2
    if a.samples_out:
        Path(a.samples_out).write_text("".join(json.dumps(row) + "\n" for row in samples))
    print(json.dumps({"metrics": metrics, "protocol": protocol}))
    return 0
