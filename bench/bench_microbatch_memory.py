"""Peak memory and time of one RL update, before and after token-budget micro-batching (issue 10).

    python -m bench.bench_microbatch_memory [--prompts 4] [--full-prompts 64] [--steps 2] [--json out.json]

Workload of the issue: a random-init Qwen2-style model with a 32k vocabulary (32,768 rows; hidden 128,
4 layers, 4 heads, 2 KV heads; trainers/common/bpe_tokenizer.py), prompts x 8 samples x 256 new
tokens. The completions are synthetic (random ids of exactly 256 tokens, prompts of 32-96 tokens):
the update's cost depends on the lengths, not on what was sampled, and sampling 512 x 256 tokens on
this CPU would take longer than the update. One step = the on-policy OR1 update of the RL trainer:
log-probs and full-vocabulary entropy (no entropy gradient, the trainer's setting while the entropy
coefficient is 0), the PPO-clip loss at the global token mean, backward, clip, AdamW step.

* ``before``: the code path before issue 10, copied from git history (commit c10a3cc,
  trainers/rl/batch.py ``build_batch`` and ``logprobs_and_entropy``; trainers/rl/train.py ran them on
  the whole batch): one forward of every sequence, full (B, L-1, V) fp32 logits, log_softmax and its
  exp over all of them.
* ``after``: what the trainer does now, ``trainers.rl.update.update_minibatch``: sequences grouped by
  ``split_by_token_budget`` into micro-batches of ``micro_batch_tokens`` (the config default, 16,384),
  each through ``token_logprobs`` (response positions only, the LM head in chunks whose backward
  recomputes their logits), loss weighted so the accumulated gradients are the un-split update's, one
  optimizer step.

How peak memory is measured: each variant runs in a fresh subprocess; before each timed step the
process's peak resident set (VmHWM in /proc/self/status) is reset (writing 5 to /proc/self/clear_refs)
and its resident set (VmRSS) read; the step's peak memory is VmHWM after the step minus VmRSS before
it: everything the update allocated on top of the loaded model, batch and optimizer, LM head and
logits included (tracemalloc does not see torch's allocations; the RSS does). glibc is told to serve
every block of 1 MiB or more with mmap (MALLOC_MMAP_THRESHOLD_), so freed tensors leave the RSS at
once and the high-water mark is that of live memory, not of the allocator's free lists. In the
side-by-side runs the first step of each variant (AdamW allocating its state, first-touch costs) is
a warm-up and not counted.

The before path at the issue's full size (64 prompts x 8 = 512 sequences of ~320 tokens) needs one
(512, 319, 32768) fp32 logits tensor of 21.4 GB before log_softmax and its exp double it: it cannot
run on a 23 GB machine. So both variants are measured side by side at ``--prompts`` (4 x 8 = 32
sequences by default, the before path's peak then ~7 GB), and the after variant also at the full
``--full-prompts`` size, whose peak is what the before path's lower bound (the logits alone) is
compared with. Targets (issue 10): peak <= 1/3 of before, step time <= 1.1x before.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PY, ROOT, cli, result

SAMPLES, NEW_TOKENS, PROMPT_LEN = 8, 256, (32, 96)
VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE = 32768, 128, 4, 4, 2, 352
MICRO_BATCH_TOKENS = 16384  # the config default (trainers/common/compute_config.py)
TARGET_MEMORY, TARGET_TIME = 1 / 3, 1.1
WORKLOAD = (
    f"random-init Qwen2-style model, vocab {VOCAB}, hidden {HIDDEN}, {LAYERS} layers, {HEADS} heads "
    f"({KV_HEADS} KV); synthetic batch of prompts x {SAMPLES} samples x {NEW_TOKENS} new tokens, "
    f"prompts {PROMPT_LEN[0]}-{PROMPT_LEN[1]} tokens; fp32 on the CPU"
)


# --- the child: one variant in a fresh process ------------------------------------------------------


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _synthetic(prompts: int, seed: int):
    """(prompt ids, completion ids) pairs and their group advantages."""
    import torch

    from trainers.rl.core import group_advantages

    g = torch.Generator().manual_seed(seed)
    seqs = []
    for _ in range(prompts):
        plen = int(torch.randint(PROMPT_LEN[0], PROMPT_LEN[1] + 1, (1,), generator=g))
        prompt = torch.randint(0, VOCAB, (plen,), generator=g).tolist()
        for _ in range(SAMPLES):
            seqs.append((prompt, torch.randint(0, VOCAB, (NEW_TOKENS,), generator=g).tolist()))
    rewards = torch.randint(0, 2, (len(seqs),), generator=g).float()
    groups = torch.arange(prompts).repeat_interleave(SAMPLES)
    return seqs, group_advantages(rewards, groups)


def _old_build_batch(sequences, pad_id: int):
    """trainers/rl/batch.py ``build_batch`` at commit c10a3cc (right-padded; position t predicts t+1)."""
    import torch

    width = max(len(p) + len(c) for p, c in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(sequences), width), dtype=torch.long)
    resp = torch.zeros((len(sequences), width), dtype=torch.float32)
    for i, (p, c) in enumerate(sequences):
        n = len(p) + len(c)
        ids[i, :n] = torch.tensor(p + c)
        attn[i, :n] = 1
        resp[i, len(p) : n] = 1.0
    return ids, attn, resp[:, 1:]


def _old_logprobs_and_entropy(model, ids, attn, temperature: float, entropy_grad: bool):
    """trainers/rl/batch.py ``logprobs_and_entropy`` at commit c10a3cc: full logits, then log_softmax."""
    import torch

    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()
    logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def _step_before(model, optimizer, seqs, advantages, pad_id: int) -> int:
    """The update as trainers/rl/train.py ran it at commit c10a3cc (one on-policy update)."""
    import torch

    from trainers.rl.core import policy_loss

    ids, attn, resp = _old_build_batch(seqs, pad_id)
    logp, ent = _old_logprobs_and_entropy(model, ids, attn, 1.0, entropy_grad=False)
    out = policy_loss(logp, logp.detach(), advantages, resp, entropy=ent, entropy_coef=0.0)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return int(resp.sum())


def _step_after(model, optimizer, seqs, advantages, pad_id: int) -> int:
    """The trainer's update now: trainers.rl.update.update_minibatch on the whole batch."""
    import torch

    from trainers.common.policy_step import PolicyLogprobs, TorchStepper
    from trainers.common.rollout_batch import build_batch
    from trainers.rl.config import AlgoConfig
    from trainers.rl.update import update_minibatch

    batch = build_batch(seqs, pad_id)
    old_logp = torch.zeros(batch.response_mask.shape)
    update_minibatch(
        PolicyLogprobs(model), TorchStepper(model, optimizer, 1.0), batch, list(range(len(batch))),
        advantages, old_logp, old_from_forward=True, ref_logp=None, algo=AlgoConfig(), temperature=1.0,
        entropy_coef=0.0, budget=MICRO_BATCH_TOKENS,
    )  # fmt: skip
    return int(batch.response_mask.sum())


def child(
    variant: str, model_dir: str, prompts: int, steps: int, warmup: int, threads: int, seed: int
) -> dict[str, Any]:
    import gc

    import torch

    from trainers.common.models import load_policy

    torch.set_num_threads(threads)
    model, tok = load_policy(model_dir)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    seqs, advantages = _synthetic(prompts, seed)
    step_fn = _step_before if variant == "before" else _step_after
    peaks, times = [], []
    tokens = 0
    for i in range(warmup + steps):
        gc.collect()
        rss = _status_kib("VmRSS")
        _reset_peak()
        t0 = time.perf_counter()
        tokens = step_fn(model, optimizer, seqs, advantages, tok.pad_token_id)
        took = time.perf_counter() - t0
        peak = _status_kib("VmHWM") - rss
        if i >= warmup:
            peaks.append(peak / 2**20)
            times.append(took)
    return {
        "variant": variant,
        "sequences": len(seqs),
        "response_tokens": tokens,
        "peak_gib": max(peaks),
        "peaks_gib": [round(p, 3) for p in peaks],
        "step_s": statistics.median(times),
        "steps_s": [round(t, 3) for t in times],
    }


# --- the parent -------------------------------------------------------------------------------------


def build_model(directory: Path) -> Path:
    import torch

    from trainers.common.bpe_tokenizer import build_qwen_style_model

    return build_qwen_style_model(
        directory, vocab_size=VOCAB, hidden_size=HIDDEN, layers=LAYERS, heads=HEADS, kv_heads=KV_HEADS,
        intermediate=INTERMEDIATE, tokenizer_vocab=1024, max_position=1024, dtype=torch.float32,
    )  # fmt: skip


def measure(
    variant: str, model_dir: Path, prompts: int, steps: int, threads: int, warmup: int = 1
) -> dict[str, Any]:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=str(2**20), PYTHONUNBUFFERED="1")
    cmd = [PY, "-m", "bench.bench_microbatch_memory", "--child", variant, "--model", str(model_dir),
           "--prompts", str(prompts), "--steps", str(steps), "--warmup", str(warmup),
           "--threads", str(threads)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{variant} at {prompts} prompts failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"{variant:<6} {out['sequences']:>4} sequences: peak {out['peak_gib']:.2f} GiB "
        f"(steps {out['peaks_gib']}), step {out['step_s']:.2f} s (steps {out['steps_s']})",
        flush=True,
    )
    return out


def run(args) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="orlab-bench-mb-") as tmp:
        model_dir = build_model(Path(tmp) / "model")
        before = measure("before", model_dir, args.prompts, args.steps, args.threads)
        after = measure("after", model_dir, args.prompts, args.steps, args.threads)
        # one step, no warm-up (hours otherwise on this CPU): AdamW's first-step state, 2 x 5M float32
        # parameters = 40 MB, is inside this peak
        full = (
            measure("after", model_dir, args.full_prompts, 1, args.threads, warmup=0)
            if args.full_prompts
            else None
        )
    ratio_mem = after["peak_gib"] / before["peak_gib"]
    ratio_time = after["step_s"] / before["step_s"]
    shape = f"{args.prompts} prompts x {SAMPLES} x {NEW_TOKENS}"
    rows = [
        result("I10", f"update peak memory, after / before ({shape})", round(ratio_mem, 3), "x",
               round(TARGET_MEMORY, 3), "lower",
               note=f"before {before['peak_gib']:.2f} GiB, after {after['peak_gib']:.2f} GiB; {WORKLOAD}",
               before=before, after=after),
        result("I10", f"update step time, after / before ({shape})", round(ratio_time, 3), "x", TARGET_TIME,
               "lower", note=f"before {before['step_s']:.2f} s, after {after['step_s']:.2f} s"),
    ]  # fmt: skip
    if full is not None:
        width = PROMPT_LEN[1] + NEW_TOKENS - 1  # the widest row's logits positions
        logits_gib = full["sequences"] * width * VOCAB * 4 / 2**30
        rows.append(
            result("I10", f"update peak memory, after ({args.full_prompts} prompts x {SAMPLES} x {NEW_TOKENS})",
                   round(full["peak_gib"], 2), "GiB", round(logits_gib * TARGET_MEMORY, 2), "lower",
                   note=f"before: not runnable here; its fp32 logits alone are {logits_gib:.1f} GiB "
                   f"(goal = 1/3 of that lower bound); step {full['step_s']:.1f} s", after_full=full)
        )  # fmt: skip
    return rows


def configure(parser) -> None:
    parser.add_argument("--prompts", type=int, default=4, help="prompts of the side-by-side comparison")
    parser.add_argument(
        "--full-prompts", type=int, default=64, help="prompts of the after-only full-size run (0: skip)"
    )
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")


def main() -> int:
    if "--child" in sys.argv:  # a measurement subprocess: print one JSON line
        import argparse

        p = argparse.ArgumentParser()
        p.add_argument("--child", choices=("before", "after"))
        p.add_argument("--model")
        p.add_argument("--prompts", type=int)
        p.add_argument("--steps", type=int)
        p.add_argument("--warmup", type=int)
        p.add_argument("--threads", type=int)
        a = p.parse_args()
        print(json.dumps(child(a.child, a.model, a.prompts, a.steps, a.warmup, a.threads, seed=0)))
        return 0
    return cli("RL update: peak memory and time before/after micro-batching (CPU)", run, configure)


if __name__ == "__main__":
    raise SystemExit(main())
