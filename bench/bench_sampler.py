"""Rollout throughput on the CPU: TorchSampler (KV cache) against the no-cache reference.

    python -m bench.bench_sampler [--prompts 16] [--n 8] [--max-new-tokens 64] [--repeats 3]

The workload is a GRPO rollout in miniature: the tiny char-level Qwen2 model (hidden 128, 4 layers,
4 heads; built locally, random weights), 16 chat-formatted arithmetic prompts x 8 samples, 64 new
tokens, temperature 1.0, one batch of 128 rows, one torch thread. Both samplers get the same seed and
draw the same tokens (checked), so tokens/s compare like for like. Target: the KV-cache sampler at
least 3x the no-cache tokens/s. Results go to stdout and bench/sampler_results.json.

No database, no web stack: unlike the other bench scripts this one needs only torch and transformers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "sampler_results.json"
TARGET_SPEEDUP = 3.0


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_busy(interval: float = 0.5) -> float | None:
    """Share of all CPUs busy over ``interval`` s (/proc/stat): the machine is shared, and other
    people's work skews every number, so the result records it."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)

    try:
        t0, i0 = sample()
        time.sleep(interval)
        t1, i1 = sample()
    except OSError:
        return None
    return None if t1 == t0 else round(1 - (i1 - i0) / (t1 - t0), 3)


def machine_info() -> dict[str, Any]:
    import torch

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    try:
        date = subprocess.run(["date"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        date = dt.datetime.now(dt.UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
    return {
        "date": date,
        "date_iso": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": version("transformers"),
        "torch_threads": torch.get_num_threads(),
        "cpu_busy_before": _cpu_busy(),
    }


def make_prompts(tokenizer, count: int) -> list[str]:
    """Chat-formatted arithmetic questions (about 65 characters, so 65 tokens, each)."""
    prompts = []
    for i in range(count):
        a, b = 17 + 7 * i, 40 + 3 * i
        question = f"What is {a} + {b}? Put the answer in \\boxed{{}}."
        prompts.append(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
            )
        )
    return prompts


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from trainers.common.models import load_policy
    from trainers.common.rollout import TorchSampler, sample_without_cache
    from trainers.common.tiny import build_tiny_model

    torch.set_num_threads(args.threads)
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="orlab-bench-sampler-") as tmp:
        model, tokenizer = load_policy(build_tiny_model(tmp, seed=0))
    prompts = make_prompts(tokenizer, args.prompts)
    batch = args.prompts * args.n
    knobs = dict(n=args.n, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens)
    sampler = TorchSampler(model, tokenizer, batch_size=batch)

    def cached(seed: int):
        return sampler.generate(prompts, seed=seed, **knobs)

    def uncached(seed: int):
        return sample_without_cache(model, tokenizer, prompts, seed=seed, batch_size=batch, **knobs)

    # Warm-up (allocator, oneDNN kernels, lazy imports) on a small slice.
    sampler.generate(prompts[:2], n=2, temperature=1.0, max_new_tokens=8, seed=0)
    sample_without_cache(model, tokenizer, prompts[:2], n=2, temperature=1.0, max_new_tokens=8, seed=0)

    rows = []
    outputs = {}
    for name, fn, repeats in (
        ("TorchSampler (KV cache)", cached, args.repeats),
        ("sample_without_cache", uncached, args.repeats_uncached),
    ):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            groups = fn(args.seed)
            times.append(time.perf_counter() - start)
        outputs[name] = [[c.completion_ids for c in g] for g in groups]
        completions = [c for g in groups for c in g]
        tokens = sum(len(c.completion_ids) for c in completions)
        wall = statistics.median(times)
        rows.append(
            {
                "sampler": name,
                "sequences": len(completions),
                "new_tokens": tokens,
                "truncated_share": round(sum(c.truncated for c in completions) / len(completions), 3),
                "wall_s_median": round(wall, 3),
                "wall_s_all": [round(t, 3) for t in times],
                "tokens_per_s": round(tokens / wall, 1),
            }
        )
    same = outputs["TorchSampler (KV cache)"] == outputs["sample_without_cache"]
    speedup = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
    info["cpu_busy_after"] = _cpu_busy()
    prompt_lengths = [len(tokenizer.encode(p)) for p in prompts]
    return {
        "benchmark": "bench_sampler",
        "machine": info,
        "workload": {
            "model": "tiny qwen2 (hidden 128, 4 layers, 4 heads, 2 kv heads, char vocab "
            f"{model.config.vocab_size}), random init seed 0, float32",
            "prompts": args.prompts,
            "samples_per_prompt": args.n,
            "batch_rows": batch,
            "prompt_tokens_min_max": [min(prompt_lengths), max(prompt_lengths)],
            "max_new_tokens": args.max_new_tokens,
            "temperature": 1.0,
            "seed": args.seed,
        },
        "results": rows,
        "identical_tokens": same,
        "speedup": round(speedup, 2),
        "target_speedup": TARGET_SPEEDUP,
        "passed": speedup >= TARGET_SPEEDUP and same,
    }


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"date:    {m['date']}")
    print(
        f"machine: {m['cpu']} ({m['nproc']} CPUs), kernel {m['kernel']}, Python {m['python']}, "
        f"torch {m['torch']}, transformers {m['transformers']}, torch threads {m['torch_threads']}"
    )
    print(f"load:    CPUs busy before {m['cpu_busy_before']}, after {m['cpu_busy_after']} (shared machine)")
    w = report["workload"]
    print(
        f"workload: {w['prompts']} prompts x {w['samples_per_prompt']} samples = {w['batch_rows']} rows "
        f"(prompt {w['prompt_tokens_min_max'][0]}-{w['prompt_tokens_min_max'][1]} tokens), "
        f"{w['max_new_tokens']} new tokens max, T={w['temperature']}"
    )
    print()
    header = f"{'sampler':<26}{'tokens':>8}{'trunc':>7}{'wall s':>9}{'tokens/s':>11}"
    print(header)
    print("-" * len(header))
    for r in report["results"]:
        print(
            f"{r['sampler']:<26}{r['new_tokens']:>8}{r['truncated_share']:>7.2f}"
            f"{r['wall_s_median']:>9.2f}{r['tokens_per_s']:>11.0f}"
        )
    print()
    verdict = "PASS" if report["passed"] else "MISS"
    print(
        f"speedup {report['speedup']:.1f}x (target >= {report['target_speedup']:.0f}x): {verdict}; "
        f"identical tokens: {report['identical_tokens']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the KV-cache sampler")
    parser.add_argument("--repeats-uncached", type=int, default=1, help="timed runs of the reference")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    args = parser.parse_args(argv)
    report = run(args)
    print_report(report)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
