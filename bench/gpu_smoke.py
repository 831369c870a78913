"""GPU smoke of issue 10: orlab's own trainers on a Qwen2.5-0.5B-shaped model, side by side with TRL.

    make gpu-smoke                       # = python3 -m bench.gpu_smoke, from the source tree
    python3 -m bench.gpu_smoke [--cpu-small] [--out result.json] [--workdir DIR] [--no-trl]

Runs from a checkout WITHOUT ``make install``, with whatever ``python3`` the host has (the GPU hosts:
Python 3.12, torch 2.11 with CUDA, transformers 5.17, no vLLM, no DeepSpeed, no network). On one GPU:

1. builds a random-init Qwen2 model of Qwen2.5-0.5B's shape (vocab 151,936, hidden 896, 24 layers,
   14 heads, 2 KV heads, SwiGLU 4864: 494M parameters) with a byte-level BPE tokenizer carrying the
   Qwen2.5-Instruct chat template (trainers/common/bpe_tokenizer.py);
2. RL (``trainers.rl.train.train`` with a MemorySink, no Django): 3 steps of 32 prompts x 8 samples x
   512 new tokens, bf16, token-budget micro-batches, gradient checkpointing, the chat template, the
   rollout engine vLLM (sleep/wake) where it is installed, else the torch KV-cache sampler on CUDA
   (the report says which ran); zero-advantage filtering off (a random model never earns a reward,
   so every group would be dropped); a checkpoint at step 3;
3. a resume from that checkpoint for 1 more step;
4. DAPO for 2 actor steps (small: 2 prompts, 2 solutions, 2 MC rollouts, 64 tokens);
5. 20 steps of the reward-model trainer on generated preference pairs;
6. an evaluation (avg@k) of the RL checkpoint;
7. TRL's GRPOTrainer on the same model, shape and GPU (HF generate; bf16 autocast over fp32
   weights, gradient checkpointing, micro-batches of 16 sequences accumulated to one optimizer step
   per 256 completions, beta 0: the same update as ours), in a subprocess.

It prints, for the RL shape, rollout tokens/s (generated tokens / generation time), update tokens/s
(trained response tokens / update time), the peak GPU memory (``torch.cuda.max_memory_allocated``)
and the launch-time estimate (trainers/common/memory_estimate.py) for ours and TRL side by side, and
writes everything as JSON to ``--out`` (default: ``$OUT/gpu_smoke.json`` when ``$OUT`` is set, else
bench/gpu_smoke.json). The first RL step (and TRL's) is a warm-up: the speeds
are the median of the later ones. Exit status 1 when a part failed (the others still run).

``--cpu-small`` (automatic when CUDA is absent) runs the same sequence on the CPU with a tiny model
(hidden 64, 2 layers, vocab 2,048 over a 1,024-token tokenizer) and a few tokens, in well under a
minute: tests/bench/test_gpu_smoke_cpu.py runs it. Nothing there measures a GPU.

Packages: besides torch, transformers, tokenizers, safetensors, numpy, pyyaml, jinja2, accelerate,
pandas, pyarrow, fsspec, xxhash, sympy and huggingface_hub (all in the GPU hosts' image), orlab's
trainers need pydantic (+ pydantic-core, annotated-types, typing-inspection, typing-extensions >= 4.16)
and math-verify (+ latex2sympy2_extended, antlr4-python3-runtime); the TRL side needs trl and datasets
(+ dill, multiprocess). None of them is large (4.9 MB together; the command below was checked to
resolve on 2026-12-05). Fetch them here, where pip reaches PyPI, into the ignored ``.whl`` folder
of the checkout (the versions the CPU venv uses; trl is not an orlab dependency)::

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \\
        -d .whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \\
        typing-extensions==4.16.0 math-verify==0.9.0 latex2sympy2_extended==1.11.0 \\
        antlr4-python3-runtime==4.13.2 trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19

and run on the GPU host (the device tool: ``carry: [".whl"]``, timeout about 330 s)::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; \\
    python3 -m pip show pyarrow fsspec accelerate | grep -E '^(Name|Version)'; set -o pipefail; \\
    PYTHONUNBUFFERED=1 make gpu-smoke 2>&1 | tee $OUT/gpu_smoke.log

(``make gpu-smoke`` is ``python3 -m bench.gpu_smoke`` with the checkout on PYTHONPATH; the result
lands in ``$OUT/gpu_smoke.json``.)

(datasets 5.2 wants pyarrow >= 24 and fsspec <= 2026.9.0, which ``--no-deps`` does not check: the
``pip show`` line says whether the host's versions satisfy it; if TRL's part fails on them, add
matching pyarrow/fsspec wheels. Ours does not need datasets.)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Shape:
    """Model and workload of one smoke size."""

    name: str
    # model
    vocab_size: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    tokenizer_vocab: int
    # RL (the measured shape) and its evaluations
    prompts: int
    samples: int
    new_tokens: int
    micro_batch_tokens: int
    eval_problems: int
    # TRL: sequences per micro-batch (accumulated to prompts x samples per optimizer step)
    trl_micro_batch: int
    # DAPO
    dapo_new_tokens: int
    dapo_step_tokens: int
    # reward model
    reward_steps: int
    reward_batch: int
    reward_max_length: int


GPU = Shape(
    name="gpu: Qwen2.5-0.5B shape", vocab_size=151936, hidden=896, layers=24, heads=14, kv_heads=2,
    intermediate=4864, tokenizer_vocab=8192, prompts=32, samples=8, new_tokens=512, micro_batch_tokens=9216,
    eval_problems=8, trl_micro_batch=16, dapo_new_tokens=64, dapo_step_tokens=32, reward_steps=20,
    reward_batch=8, reward_max_length=256,
)  # fmt: skip
CPU_SMALL = Shape(
    name="cpu-small", vocab_size=2048, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=128,
    tokenizer_vocab=1024, prompts=4, samples=4, new_tokens=16, micro_batch_tokens=192, eval_problems=4,
    trl_micro_batch=4, dapo_new_tokens=16, dapo_step_tokens=8, reward_steps=20, reward_batch=4,
    reward_max_length=64,
)  # fmt: skip
RL_STEPS = 3
SEED = 0


# --- environment ------------------------------------------------------------------------------------


def _version(distribution: str) -> str | None:
    """The installed version of a distribution, without importing it (vLLM's import fails outright
    beside a CPU torch, DeepSpeed's takes seconds)."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "gpu_total_gib": (
            round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
            if torch.cuda.is_available()
            else None
        ),
        "host": platform.node(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    for name in ("transformers", "tokenizers", "pydantic", "math-verify", "trl", "datasets", "accelerate",
                 "vllm", "deepspeed"):  # fmt: skip
        env[name] = _version(name)
    from trainers.common import vllm_engine

    env["vllm_available"] = vllm_engine.available()
    return env


# --- measurements -----------------------------------------------------------------------------------


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def reset_peak() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    """``torch.cuda.max_memory_allocated`` since the last :func:`reset_peak` (None on the CPU)."""
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def later_median(values: list[float]) -> float | None:
    """The median without the first (warm-up) value, or the only value there is."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    return round(statistics.median(values[1:] if len(values) > 1 else values), 1)


def model_info(model_dir: Path) -> dict[str, Any]:
    """The catalogue entry the memory estimator reads: config.json's names and the parameter count."""
    from trainers.common.memory_estimate import ModelShape, count_parameters

    info = json.loads((model_dir / "config.json").read_text())
    info["parameters"] = count_parameters(ModelShape.from_info(info))
    return info


def memory_estimate(kind: str, config: Any, model_dir: Path) -> dict[str, Any] | None:
    """The launch-time estimate of a validated config, for the GPU this runs on (None on the CPU)."""
    import torch

    from trainers.common import vllm_engine
    from trainers.common.memory_estimate import estimate_for_config

    if not torch.cuda.is_available():
        return None
    total = torch.cuda.get_device_properties(0).total_memory
    est = estimate_for_config(
        kind, config.model_dump(mode="json"), model_info(model_dir), total,
        gpus_per_node=1, vllm_available=vllm_engine.available(),
    )  # fmt: skip
    if est is None:
        return None
    return {"gib": round(est.total / 2**30, 2), "peak_phase": est.peak_phase, "describe": est.describe()}


# --- data and model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    model: Path
    train: Path  # problems {prompt, answer}
    held_out: Path
    pairs: Path  # preference pairs


def build_inputs(shape: Shape, work: Path) -> Inputs:
    import torch

    from trainers.common import arith
    from trainers.common.bpe_tokenizer import build_qwen_style_model
    from trainers.common.demo_data import generate_pairs, write_jsonl

    model = build_qwen_style_model(
        work / "policy", vocab_size=shape.vocab_size, hidden_size=shape.hidden, layers=shape.layers,
        heads=shape.heads, kv_heads=shape.kv_heads, intermediate=shape.intermediate, seed=SEED,
        tokenizer_vocab=shape.tokenizer_vocab, max_position=4096, dtype=torch.bfloat16,
    )  # fmt: skip
    train, test = arith.disjoint_splits(shape.prompts * (RL_STEPS + 2), 2 * shape.eval_problems, seed=SEED)
    return Inputs(
        model=model,
        train=arith.write_problems(work / "train.jsonl", train, with_solution=False),
        held_out=arith.write_problems(work / "held_out.jsonl", test, with_solution=False),
        pairs=write_jsonl(
            generate_pairs(shape.reward_batch * shape.reward_steps, seed=SEED), work / "pairs.jsonl"
        ),
    )


# --- orlab's trainers ---------------------------------------------------------------------------------


def compute_fields(shape: Shape) -> dict[str, Any]:
    """The issue-10 settings every model trainer gets: bf16, micro-batches, checkpointing, template."""
    return {
        "dtype": "bfloat16",
        "micro_batch_tokens": shape.micro_batch_tokens,
        "gradient_checkpointing": True,
        "chat_template": "auto",
    }


def rollout_engine() -> str:
    from trainers.common import vllm_engine

    return "vllm" if vllm_engine.available() else "torch"


def rl_config(shape: Shape, inputs: Inputs, steps: int):
    from trainers.rl.config import RLConfig

    return RLConfig.model_validate(
        {
            "model_path": str(inputs.model), "train_dataset": str(inputs.train),
            "eval_dataset": str(inputs.held_out), "steps": steps, "seed": SEED, **compute_fields(shape),
            "rollout": {"n": shape.samples, "prompts_per_step": shape.prompts, "temperature": 1.0,
                        "engine": rollout_engine(), "max_prompt": 512,
                        "stages": [{"until_step": 10**9, "max_response": shape.new_tokens}]},
            "algo": {"filter_zero_adv_groups": False},
            "optim": {"lr": 1e-6},
            "eval": {"every": 0, "k": 1, "max_problems": shape.eval_problems},
            "checkpoint_every": 0, "samples_per_step": 4, "reward_processes": 2,
        }
    )  # fmt: skip


def rl_numbers(sink, shape: Shape) -> dict[str, Any]:
    """Per-step speeds and memory from the trainer's own metrics."""
    steps = sorted(s for s in sink.metrics.get("rollout/tokens_per_s", {}) if s > 0)

    def at(key: str) -> list[float | None]:
        series = sink.metrics.get(key, {})
        return [series.get(s) for s in steps]

    rollout, update = at("rollout/tokens_per_s"), at("train/tokens_per_s")
    step_peaks = [x for x in at("memory/peak_gb") if x is not None]
    return {
        # what the run page shows: the largest of the steps' torch.cuda.max_memory_allocated
        "step_peak_gib": round(max(step_peaks), 2) if step_peaks else None,
        "steps": steps,
        "rollout_tokens_per_s": rollout,
        "update_tokens_per_s": update,
        "rollout_tokens_per_s_median": later_median(rollout),
        "update_tokens_per_s_median": later_median(update),
        "peak_gb_per_step": at("memory/peak_gb"),
        "timing_gen_s": at("timing_s/gen"),
        "timing_update_s": at("timing_s/update"),
        "response_length_mean": at("response_length/mean"),
        "logprob_diff_mean": at("rollout/logprob_diff_mean"),
    }


def part_rl(shape: Shape, inputs: Inputs, work: Path) -> dict[str, Any]:
    from trainers.base import MemorySink
    from trainers.rl.train import train

    cfg = rl_config(shape, inputs, RL_STEPS)
    sink = MemorySink(workdir=work / "rl")
    summary = train(cfg, sink)
    if summary.get("step") != RL_STEPS or not sink.checkpoints:
        raise RuntimeError(f"RL did not finish {RL_STEPS} steps with a checkpoint: {summary}")
    return {
        "engine": cfg.rollout.engine,
        "summary": summary,
        "checkpoint": str(sink.checkpoints[-1][1]),
        "estimate": memory_estimate("rl", cfg, inputs.model),
        **rl_numbers(sink, shape),
    }


def part_resume(shape: Shape, inputs: Inputs, work: Path, checkpoint: Path) -> dict[str, Any]:
    from trainers.base import MemorySink
    from trainers.rl.train import train

    sink = MemorySink(workdir=work / "rl-resumed", resume_from=checkpoint)
    summary = train(rl_config(shape, inputs, RL_STEPS + 1), sink)
    trained = sorted(s for s in sink.metrics.get("actor/grad_norm", {}))
    if trained != [RL_STEPS + 1]:
        raise RuntimeError(f"the resume trained steps {trained}, expected only {RL_STEPS + 1}")
    return {"summary": summary, "trained_steps": trained, **rl_numbers(sink, shape)}


def part_dapo(shape: Shape, inputs: Inputs, work: Path) -> dict[str, Any]:
    from trainers.base import MemorySink
    from trainers.dapo.config import DAPOConfig
    from trainers.dapo.train import train

    cfg = DAPOConfig.model_validate(
        {
            "model_path": str(inputs.model), "train_dataset": str(inputs.train),
            "eval_dataset": str(inputs.held_out), "seed": SEED, **compute_fields(shape),
            "generate": {"prompts": 2, "solutions_per_prompt": 2, "mc_rollouts": 2,
                         "max_new_tokens": shape.dapo_new_tokens, "engine": rollout_engine()},
            "critic": {"epochs": 1, "batch_size": 64, "eval_every": 0, "curves": 0,
                       "max_length": 512},
            "actor": {"candidates": 2, "states": 4, "states_per_batch": 2, "epochs": 1,
                      "max_step_tokens": shape.dapo_step_tokens},
            "eval": {"k": 1, "max_new_tokens": shape.dapo_new_tokens, "max_problems": 2},
            "reward_processes": 2,
        }
    )  # fmt: skip
    sink = MemorySink(workdir=work / "dapo")
    summary = train(cfg, sink)
    actor_steps = sorted(sink.metrics.get("actor/loss", {}))
    if len(actor_steps) != 2:
        raise RuntimeError(f"DAPO ran {len(actor_steps)} actor steps, expected 2: {summary}")
    return {
        "summary": {k: v for k, v in summary.items() if isinstance(v, int | float | str | bool)},
        "actor_steps": actor_steps,
        "estimate": memory_estimate("dapo", cfg, inputs.model),
    }


def part_reward(shape: Shape, inputs: Inputs, work: Path) -> dict[str, Any]:
    from trainers.base import MemorySink
    from trainers.reward.config import RewardConfig
    from trainers.reward.train import train

    cfg = RewardConfig.model_validate(
        {
            "model_path": str(inputs.model), "train_dataset": str(inputs.pairs), "seed": SEED,
            **compute_fields(shape), "max_steps": shape.reward_steps, "batch_size": shape.reward_batch,
            "max_length": shape.reward_max_length, "lr": 1e-5, "warmup_ratio": 0.0,
        }
    )  # fmt: skip
    sink = MemorySink(workdir=work / "reward")
    summary = train(cfg, sink)
    steps = sorted(sink.metrics.get("train/loss", {}))
    if len(steps) != shape.reward_steps:
        raise RuntimeError(f"the reward model trained {len(steps)} steps, expected {shape.reward_steps}")
    return {
        "steps": len(steps),
        "loss_first_last": [sink.series("train/loss")[0], sink.series("train/loss")[-1]],
        "tokens_per_s_median": later_median(sink.series("train/tokens_per_s")),
        "estimate": memory_estimate("reward", cfg, inputs.model),
        "summary": {k: v for k, v in summary.items() if isinstance(v, int | float | str | bool)},
    }


def part_eval(shape: Shape, inputs: Inputs, checkpoint: Path) -> dict[str, Any]:
    from trainers.eval.run import evaluate_checkpoint

    metrics, protocol = evaluate_checkpoint(
        checkpoint, inputs.held_out, k=2, temperature=0.6, max_new_tokens=shape.new_tokens,
        max_problems=shape.eval_problems,
    )  # fmt: skip
    return {"metrics": metrics, "protocol": {k: v for k, v in protocol.items() if k != "verifier"}}


# --- TRL ----------------------------------------------------------------------------------------------


def trl_reward(completions, answer, **_):
    """The same verifier as ours, in-process (TRL calls its reward functions in the trainer)."""
    from trainers.common.verifiers.math import verify_math

    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [verify_math(t, a).reward for t, a in zip(texts, answer, strict=True)]


def run_trl(shape: Shape, model_dir: Path, problems: Path, work: Path, steps: int) -> dict[str, Any]:
    """TRL's GRPOTrainer on the same model and shape: one optimizer step per prompts x samples
    completions, ``trl_micro_batch`` sequences per forward, bf16 autocast over fp32 weights,
    gradient checkpointing, beta 0. Generation and step times come from wrapping the trainer's own
    methods (TRL keeps its profiling timings for W&B/MLflow only)."""
    import torch
    from datasets import Dataset, disable_progress_bars
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from trainers.common.models import load_tokenizer

    disable_progress_bars()
    rows = [json.loads(line) for line in problems.read_text().splitlines() if line.strip()]
    dataset = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]} for r in rows]
    )
    cuda = torch.cuda.is_available()
    batch = shape.prompts * shape.samples
    args = GRPOConfig(
        output_dir=str(work), per_device_train_batch_size=shape.trl_micro_batch,
        gradient_accumulation_steps=batch // shape.trl_micro_batch, num_generations=shape.samples,
        max_completion_length=shape.new_tokens, temperature=1.0, learning_rate=1e-6, beta=0.0,
        max_grad_norm=1.0, max_steps=steps, bf16=True, gradient_checkpointing=True, logging_steps=1,
        use_cpu=not cuda, report_to="none", save_strategy="no", disable_tqdm=True, seed=SEED,
        dataloader_num_workers=0,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    trainer = GRPOTrainer(
        model=model, reward_funcs=trl_reward, args=args, train_dataset=dataset,
        processing_class=load_tokenizer(model_dir),
    )  # fmt: skip

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    clock: dict[str, list[float]] = {"gen_s": [], "gen_tokens": [], "gen_score_s": [], "step_s": []}

    def timed(name: str, fn: Callable, count: Callable[[Any], int] | None = None) -> Callable:
        def wrapper(*a, **kw):
            sync()
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            sync()
            clock[name].append(time.perf_counter() - t0)
            if count is not None:
                clock["gen_tokens"].append(count(out))
            return out

        return wrapper

    trainer._generate_single_turn = timed(
        "gen_s", trainer._generate_single_turn, lambda out: sum(len(ids) for ids in out[0])
    )
    trainer._generate_and_score_completions = timed("gen_score_s", trainer._generate_and_score_completions)

    class StepClock(TrainerCallback):
        def on_step_begin(self, *a, **kw):
            sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **kw):
            sync()
            clock["step_s"].append(time.perf_counter() - self.t0)

    trainer.add_callback(StepClock())
    reset_peak()
    trainer.train()
    peak = peak_gib()
    n = min(len(clock["step_s"]), len(clock["gen_s"]), len(clock["gen_score_s"]))
    rollout = [clock["gen_tokens"][i] / clock["gen_s"][i] for i in range(n)]
    update = [clock["gen_tokens"][i] / (clock["step_s"][i] - clock["gen_score_s"][i]) for i in range(n)]
    return {
        "trl": _version("trl"),
        "steps": n,
        "rollout_tokens_per_s": [round(x, 1) for x in rollout],
        "update_tokens_per_s": [round(x, 1) for x in update],
        "rollout_tokens_per_s_median": later_median(rollout),
        "update_tokens_per_s_median": later_median(update),
        "peak_gib": peak,
        "step_s": [round(x, 2) for x in clock["step_s"]],
        "gen_s": [round(x, 2) for x in clock["gen_s"]],
        "generated_tokens": clock["gen_tokens"],
    }


def part_trl(shape: Shape, inputs: Inputs, work: Path, cpu_small: bool) -> dict[str, Any]:
    """TRL in a subprocess (its own CUDA context, accelerate state and peak memory)."""
    out = work / "trl.json"
    cmd = [sys.executable, "-m", "bench.gpu_smoke", "--trl-child", str(inputs.model), str(inputs.train),
           str(work / "trl"), str(out)] + (["--cpu-small"] if cpu_small else [])  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"the TRL run exited with {proc.returncode}")
    return json.loads(out.read_text())


# --- the run ------------------------------------------------------------------------------------------


def run_part(report: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    print(f"\n== {name} ==", flush=True)
    reset_peak()
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as exc:
        traceback.print_exc()
        report["parts"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                 "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        return None
    out = {"ok": True, "seconds": round(time.perf_counter() - t0, 1), "peak_gib": peak_gib(), **out}
    report["parts"][name] = out
    print(f"   {name}: ok in {out['seconds']} s, peak {out['peak_gib']} GiB", flush=True)
    return out


def side_by_side(report: dict[str, Any]) -> str:
    parts = report["parts"]
    ours, trl = parts.get("rl") or {}, parts.get("trl") or {}
    shape = report["shape"]
    est = (ours.get("estimate") or {}).get("gib")
    peak = ours.get("step_peak_gib") or ours.get("peak_gib")
    rows = [
        ("rollout tokens/s (generated)", ours.get("rollout_tokens_per_s_median"), trl.get("rollout_tokens_per_s_median")),
        ("update tokens/s (trained)", ours.get("update_tokens_per_s_median"), trl.get("update_tokens_per_s_median")),
        ("peak GPU memory of training, GiB", peak, trl.get("peak_gib")),
        ("peak GPU memory of the part, GiB", ours.get("peak_gib"), trl.get("peak_gib")),
        ("memory estimate, GiB", est, None),
        ("rollout vs trainer log-prob gap", later_gap(ours.get("logprob_diff_mean")), None),
        ("part wall time, s", ours.get("seconds"), trl.get("seconds")),
    ]  # fmt: skip
    engine = ours.get("engine", "?")
    lines = [
        f"shape: {shape['prompts']} prompts x {shape['samples']} samples x {shape['new_tokens']} new tokens, "
        f"{report['environment']['device']}",
        f"{'':<32}{'orlab (' + engine + ' engine)':>22}{'TRL GRPOTrainer':>20}",
    ]
    for label, a, b in rows:
        lines.append(f"{label:<32}{_fmt(a):>22}{_fmt(b):>20}")
    if est and peak:
        lines.append(f"memory estimate / measured training peak: {est / peak:.2f} (issue 10: within 25 %)")
    failed = [name for name, p in parts.items() if not p.get("ok")]
    state = {
        n: "FAILED" if n in failed else "skipped" if p.get("skipped") else "ok" for n, p in parts.items()
    }
    lines.append("parts: " + ", ".join(f"{n} {s}" for n, s in state.items()))
    return "\n".join(lines)


def later_gap(values: list[float | None] | None) -> float | None:
    """Mean |rollout - trainer| log-prob of the sampled tokens, median over the later steps."""
    values = [v for v in values or [] if v is not None]
    return None if not values else round(statistics.median(values[1:] or values), 4)


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4f}" if abs(x) < 1 else f"{x:,.1f}"
    return str(x)


def default_out() -> Path:
    return (
        Path(os.environ["OUT"]) / "gpu_smoke.json"
        if os.environ.get("OUT")
        else ROOT / "bench" / "gpu_smoke.json"
    )


def run(cpu_small: bool, work: Path, out: Path | None, with_trl: bool) -> dict[str, Any]:
    shape = CPU_SMALL if cpu_small else GPU
    t_start = time.perf_counter()
    report: dict[str, Any] = {"shape": asdict(shape), "environment": environment(), "parts": {}}
    print(json.dumps(report["environment"], indent=1), flush=True)
    built = run_part(report, "build", lambda: {"inputs": {k: str(v) for k, v in asdict(build_inputs(shape, work)).items()}})  # fmt: skip
    if built is not None:
        inputs = Inputs(**{k: Path(v) for k, v in built["inputs"].items()})
        rl = run_part(report, "rl", lambda: part_rl(shape, inputs, work))
        if rl is not None:
            ckpt = Path(rl["checkpoint"])
            run_part(report, "resume", lambda: part_resume(shape, inputs, work, ckpt))
            run_part(report, "eval", lambda: part_eval(shape, inputs, ckpt))
        run_part(report, "dapo", lambda: part_dapo(shape, inputs, work))
        run_part(report, "reward", lambda: part_reward(shape, inputs, work))
        if with_trl:
            run_part(report, "trl", lambda: part_trl(shape, inputs, work, cpu_small))
        else:
            report["parts"]["trl"] = {"ok": True, "skipped": "trl is not installed (or --no-trl)"}
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    report["ok"] = all(p.get("ok") for p in report["parts"].values())
    print("\n" + side_by_side(report), flush=True)
    print(f"total {report['seconds']} s; {'ALL OK' if report['ok'] else 'SOME PARTS FAILED'}", flush=True)
    out = out or default_out()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_smoke", description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-small", action="store_true", help="tiny model on the CPU (automatic without CUDA)")
    p.add_argument(
        "--out", type=Path, help="JSON result file (default $OUT/gpu_smoke.json, else bench/gpu_smoke.json)"
    )
    p.add_argument("--workdir", type=Path, help="keep models and checkpoints here (default: a temp dir)")
    p.add_argument("--no-trl", action="store_true", help="skip the TRL comparison")
    p.add_argument(
        "--trl-child", nargs=4, metavar=("MODEL", "PROBLEMS", "WORKDIR", "OUT"), help=argparse.SUPPRESS
    )
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # the source tree, without `make install`
    import torch

    cpu_small = a.cpu_small or not torch.cuda.is_available()
    if a.trl_child:
        model, problems, work, out = map(Path, a.trl_child)
        result = run_trl(CPU_SMALL if cpu_small else GPU, model, problems, work, steps=RL_STEPS)
        out.write_text(json.dumps(result))
        return 0
    with_trl = not a.no_trl and _version("trl") is not None and _version("datasets") is not None
    with contextlib.ExitStack() as stack:
        if a.workdir:
            a.workdir.mkdir(parents=True, exist_ok=True)
            work = a.workdir
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="orlab-gpu-smoke-")))
        report = run(cpu_small, work, a.out, with_trl)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
