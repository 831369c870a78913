"""DAPO on the CPU: rollouts per second of the step-value generation, and where a run's time goes.

    python -m bench.bench_dapo [--sft-steps 300] [--policy DIR] [--threads 1]

The workload is the "tiny-cpu-demo" preset of the dapo trainer: the tiny char-level Qwen2 model
warm-started by SFT on generated arithmetic whose traces slip half the time (``--sft-steps`` steps,
or an existing policy directory with ``--policy``), 300 training prompts x 2 solutions, 4 Monte-Carlo rollouts per distinct step
prefix, at most 40 new tokens, the KV-cache sampler, one reward process. Reported: rollouts/s and
tokens/s of the generation (solutions + MC rollouts), and the wall time of generation, verification
(the reward pool), critic training and actor training (candidate sampling shown apart). Results go
to stdout and bench/dapo_results.json.

No database, no web stack: the trainer runs in-process with a MemorySink.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_sampler import machine_info

RESULTS = Path(__file__).resolve().parent / "dapo_results.json"


def warm_start(workdir: Path, steps: int) -> Path:
    from trainers.base import MemorySink, get_spec

    spec = get_spec("sft")
    sink = MemorySink(workdir=workdir)
    spec.train_fn()(
        # the demo's warm start: half the distilled traces end with a slipped boxed answer
        spec.validate(
            {
                "steps": steps,
                "eval_every": 0,
                "generated_train": 2000,
                "generated_slip_fraction": 0.5,
                "seed": 0,
                "chat_template": "none",  # raw prompts, as the dapo tiny preset reads them
            }
        ),
        sink,
    )
    return sink.checkpoints[-1][1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from trainers.base import MemorySink, get_spec

    torch.set_num_threads(args.threads)
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="orlab-bench-dapo-") as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        policy = Path(args.policy) if args.policy else warm_start(tmp_path / "sft", args.sft_steps)
        sft_s = time.perf_counter() - t0 if not args.policy else 0.0
        spec = get_spec("dapo")
        cfg = spec.validate({**spec.presets["tiny-cpu-demo"], "model_path": str(policy)})
        sink = MemorySink(workdir=tmp_path / "dapo")
        (tmp_path / "dapo").mkdir()
        t1 = time.perf_counter()
        summary = spec.train_fn()(cfg, sink)
        total = time.perf_counter() - t1
    timings = summary["timings"]
    gen = sink.metrics
    parts = {
        "generation_s": timings["generation_s"],
        "verification_s": timings["verification_s"],
        "critic_training_s": timings["critic_s"],
        "actor_candidates_s": timings["actor_candidates_s"],
        "actor_training_s": timings["actor_train_s"],
    }
    parts["other_s"] = total - sum(parts.values())  # loading, evaluation, checkpoints, critic scoring
    return {
        "machine": info,
        "command": "python -m bench.bench_dapo " + " ".join(sys.argv[1:]),
        "config": cfg.model_dump(mode="json"),
        "sft_warm_start_s": round(sft_s, 1),
        "rollouts": timings["rollouts"],
        "rollouts_per_s": next(iter(gen["gen/rollouts_per_s"].values())),
        "tokens_per_s": next(iter(gen["gen/tokens_per_s"].values())),
        "total_s": round(total, 1),
        "split_s": {k: round(v, 1) for k, v in parts.items()},
        "split_share": {k: round(v / total, 3) for k, v in parts.items()},
        "val_accuracy": {"before": sink.series("val/accuracy")[0], "after": sink.series("val/accuracy")[-1]},
        "critic_ece": {"before": sink.series("critic/ece")[0], "after": sink.series("critic/ece")[-1]},
        "critic_auc_after": sink.series("critic/auc")[-1],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_dapo")
    parser.add_argument("--sft-steps", type=int, default=300, help="SFT warm-start steps (without --policy)")
    parser.add_argument("--policy", help="an existing policy directory to start from instead")
    parser.add_argument("--threads", type=int, default=1)
    result = run(parser.parse_args(argv))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("machine", "config")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
