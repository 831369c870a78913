"""Reward-model training throughput on the CPU: our trainer vs TRL's RewardTrainer vs a bare loop.

``python -m bench.bench_reward [--steps 24] [--warmup 2] [--rounds 2] [--out bench/reward_results.json]``

The workload: the tiny Qwen2-style backbone of trainers.common.tiny (hidden 128, 4 layers, 4 heads,
character vocabulary, random init) as a sequence classifier; 2,048 synthetic preference pairs whose
prompt + response is about 64 characters (arithmetic: the chosen answer is right, the rejected one
off by a little), rendered with the tiny chat template; batch 32 pairs (64 sequences per forward),
fp32, AdamW, gradient clipping at 1.0, ``torch.set_num_threads(1)``.

Each implementation runs ``warmup + steps`` optimizer steps; pairs/s is ``steps x 32`` over the wall
time from the end of the last warm-up step to the end of the last step, measured from outside (a
sink or a callback that reads the clock), so data collation, logging and bookkeeping count:

* ``ours``: trainers.reward.train.train (engine torch, seq_cls head, metrics logged every step);
* ``trl``: trl.RewardTrainer with the same model, tokenizer, conversations, batch and lr, and TRL's
  own defaults otherwise (RewardConfig turns on gradient_checkpointing and bf16 autocast, both slow
  on a CPU; logging_steps=10): what a user of TRL gets;
* ``trl-fp32``: the same with gradient_checkpointing=False, bf16=False and logging_steps=1, i.e.
  the same math and logging as ours: the fair comparison of the loops themselves;
  both TRL runs are skipped, with the install command, when trl is missing (it is not a dependency
  of orlab: ``.venv/bin/pip install trl``);
* ``bare``: the smallest correct loop (pre-tokenized, HF's own pooling, no metrics): a ceiling.

The implementations take turns for ``rounds`` rounds; other processes on the machine slow a round
down, so the best of the rounds is the figure to compare, and the spread says how noisy it was (the
1-minute load average is recorded with every measurement). Writes the JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
N_PAIRS = 2048
BATCH = 32
LR = 1e-4
MAX_LENGTH = 256
TARGET_PAIRS_PER_S = 33.0  # the goal on its reference machine (bare loop 37.7, TRL 19.5)


# --- workload ----------------------------------------------------------------------------------------


def synthetic_pairs(n: int = N_PAIRS, seed: int = 0) -> list[dict[str, Any]]:
    """Rows in the platform's export format; prompt + response is about 64 characters."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        wrong = a + b + rng.choice((-10, -2, -1, 1, 2, 10))
        prompt = f"Please add {a} and {b} for me. What is {a}+{b}?"
        rows.append(
            {
                "id": str(i),
                "prompt": prompt,
                "chosen": f"{a}+{b} = {a + b}, so {a + b}.",
                "rejected": f"{a}+{b} = {wrong}, so {wrong}.",
                "source": "math",
            }
        )
    return rows


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass

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
        "host": platform.node(),
        "cpu": cpu,
        "nproc": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        **{name: version(name) for name in ("torch", "transformers", "trl", "accelerate", "deepspeed")},
    }


def rate(stamps: list[float], warmup: int, steps: int) -> float:
    """pairs/s between the end of step ``warmup`` and the end of step ``warmup + steps``."""
    return steps * BATCH / (stamps[warmup + steps - 1] - stamps[warmup - 1])


# --- the three implementations -------------------------------------------------------------------------


class _ClockSink:
    """A MemorySink that also notes when each training step was logged."""

    def __init__(self, workdir: Path):
        from trainers.base import MemorySink

        self.inner = MemorySink(workdir=workdir)
        self.stamps: list[float] = []
        self.resume_from = None
        self.workdir = workdir

    def log(self, step, metrics):
        if "train/loss" in metrics:
            self.stamps.append(time.perf_counter())
        self.inner.log(step, metrics)

    def log_samples(self, step, samples):
        pass

    def checkpoint_dir(self, step):
        return self.inner.checkpoint_dir(step)

    def save_checkpoint(self, step, directory, metrics=None):
        self.inner.save_checkpoint(step, directory, metrics)

    def should_stop(self):
        return False


def measure_ours(model_dir: Path, data_path: Path, warmup: int, steps: int, work: Path) -> dict[str, Any]:
    from trainers.reward.config import RewardConfig
    from trainers.reward.train import train

    cfg = RewardConfig.model_validate(
        {
            "model_path": str(model_dir),
            "train_dataset": str(data_path),
            "batch_size": BATCH,
            "lr": LR,
            "max_steps": warmup + steps,
            "max_length": MAX_LENGTH,
            "warmup_ratio": 0.0,
            "threads": 1,
        }
    )
    sink = _ClockSink(work)
    train(cfg, sink)
    loss = sink.inner.series("train/loss")
    return {"pairs_per_s": rate(sink.stamps, warmup, steps), "first_loss": loss[0], "last_loss": loss[-1]}


def measure_trl(
    model_dir: Path, rows: list[dict[str, Any]], warmup: int, steps: int, work: Path, *, matched: bool
) -> dict[str, Any]:
    import torch
    from datasets import Dataset, disable_progress_bars
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    from trainers.common.models import load_tokenizer

    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    disable_progress_bars()
    torch.manual_seed(0)
    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, local_files_only=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in rows
        ]
    )
    args = RewardConfig(
        output_dir=str(work),
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        max_steps=warmup + steps,
        max_length=MAX_LENGTH,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        max_grad_norm=1.0,
        **({"gradient_checkpointing": False, "bf16": False, "logging_steps": 1} if matched else {}),
        use_cpu=True,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = RewardTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, callbacks=[Clock()]
    )
    trainer.remove_callback(PrinterCallback)  # with disable_tqdm it prints every log dict
    torch.set_num_threads(1)  # Trainer setup may touch it
    out = trainer.train()
    return {
        "pairs_per_s": rate(stamps, warmup, steps),
        "train_loss": float(out.training_loss),
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "bf16": bool(args.bf16),
        "logging_steps": args.logging_steps,
    }


def measure_bare(model_dir: Path, rows: list[dict[str, Any]], warmup: int, steps: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification

    from trainers.common.data import PreferenceEncoder, row_from_mapping
    from trainers.common.models import load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, local_files_only=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.train()
    enc = PreferenceEncoder(tokenizer, MAX_LENGTH).encode(
        [row_from_mapping(r, i) for i, r in enumerate(rows)]
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    order = torch.randperm(len(enc), generator=torch.Generator().manual_seed(0)).tolist()
    pad = tokenizer.pad_token_id
    stamps = []
    for step in range(warmup + steps):
        idx = order[step * BATCH : (step + 1) * BATCH]
        seqs = [enc.chosen[i] for i in idx] + [enc.rejected[i] for i in idx]
        longest = max(map(len, seqs))
        ids = torch.tensor([s + [pad] * (longest - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (longest - len(s)) for s in seqs])
        rewards = model(input_ids=ids, attention_mask=mask).logits.squeeze(-1)
        loss = -F.logsigmoid(rewards[:BATCH] - rewards[BATCH:]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    return {"pairs_per_s": rate(stamps, warmup, steps)}


# --- driver ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_reward", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--steps", type=int, default=24, help="measured optimizer steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps first")
    parser.add_argument("--rounds", type=int, default=2, help="times each implementation is measured")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "reward_results.json")
    args = parser.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or (args.warmup + args.steps) * BATCH > N_PAIRS:
        parser.error(f"need warmup >= 1, steps >= 1 and (warmup + steps) x {BATCH} <= {N_PAIRS}")

    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(1)
    try:
        import trl  # noqa: F401

        have_trl = True
    except ImportError:
        have_trl = False
        print(
            "trl is not installed: measuring only ours and the bare loop. To compare with TRL's RewardTrainer:"
        )
        print("    .venv/bin/pip install trl      (a bench-only tool: not an orlab dependency)")

    from trainers.common.demo_data import write_jsonl
    from trainers.common.tiny import build_tiny_model

    info = machine()
    print(f"# reward-model training throughput, {info['date']}")
    print(f"# {info['cpu']}, {info['nproc']} CPUs, python {info['python']}, torch {info['torch']}, ", end="")
    print(f"transformers {info['transformers']}, trl {info['trl']}; torch threads: 1")

    work = Path(tempfile.mkdtemp(prefix="orlab-bench-reward-"))
    model_dir = build_tiny_model(work / "tiny", seed=0)  # hidden 128, 4 layers, 4 heads, char vocabulary
    rows = synthetic_pairs()
    data_path = write_jsonl(rows, work / "pairs.jsonl")
    lengths = [len(r["prompt"]) + len(r["chosen"]) for r in rows]
    print(f"# {len(rows)} pairs, prompt + response {min(lengths)}-{max(lengths)} characters "
          f"(mean {sum(lengths) / len(lengths):.0f}); batch {BATCH}; {args.warmup} warm-up + {args.steps} "
          "measured steps per run")  # fmt: skip

    names = ["ours", "trl", "trl-fp32", "bare"] if have_trl else ["ours", "bare"]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_no in range(args.rounds):
        order = names if round_no % 2 == 0 else names[::-1]
        for name in order:
            run_dir = work / f"{name}-{round_no}"
            run_dir.mkdir()
            load_before = os.getloadavg()[0]
            t0 = time.perf_counter()
            if name == "ours":
                result = measure_ours(model_dir, data_path, args.warmup, args.steps, run_dir)
            elif name.startswith("trl"):
                result = measure_trl(
                    model_dir, rows, args.warmup, args.steps, run_dir, matched=name == "trl-fp32"
                )
            else:
                result = measure_bare(model_dir, rows, args.warmup, args.steps)
            result.update(round=round_no, wall_s=round(time.perf_counter() - t0, 1), loadavg_1m=load_before)
            runs[name].append(result)
            print(f"round {round_no + 1}  {name:8s} {result['pairs_per_s']:6.1f} pairs/s   "
                  f"(load avg {load_before:.1f}, {result['wall_s']:.0f} s)", flush=True)  # fmt: skip

    summary = {}
    for name, results in runs.items():
        values = [r["pairs_per_s"] for r in results]
        summary[name] = {"best": max(values), "worst": min(values), "spread": max(values) - min(values)}
    print()
    print(f"{'':8s} {'best':>8s} {'worst':>8s}  pairs/s")
    for name, s in summary.items():
        print(f"{name:8s} {s['best']:8.1f} {s['worst']:8.1f}")
    ours = summary["ours"]["best"]
    verdict = "PASS" if ours >= TARGET_PAIRS_PER_S else "BELOW TARGET"
    line = f"ours: {ours:.1f} pairs/s (target >= {TARGET_PAIRS_PER_S:.0f}: {verdict})"
    if "trl" in summary:
        line += f"; {ours / summary['trl']['best']:.2f}x TRL as shipped"
        line += f", {ours / summary['trl-fp32']['best']:.2f}x TRL fp32"
    line += f"; {ours / summary['bare']['best']:.2f}x the bare loop"
    print(line)

    record = {
        "machine": info,
        "workload": {
            "model": "trainers.common.tiny (Qwen2, hidden 128, 4 layers, 4 heads, char vocab), seq_cls",
            "pairs": N_PAIRS,
            "batch_pairs": BATCH,
            "warmup_steps": args.warmup,
            "measured_steps": args.steps,
            "threads": 1,
            "dtype": "float32",
            "trl": "RewardConfig defaults (gradient_checkpointing, bf16); trl-fp32: both off, logging_steps=1",
        },
        "runs": runs,
        "summary": summary,
        "target_pairs_per_s": TARGET_PAIRS_PER_S,
        "ours_meets_target": ours >= TARGET_PAIRS_PER_S,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
