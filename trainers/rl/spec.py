from collections.abc import Mapping
from typing import Any

from trainers.base import CPU_ONLY, TrainerSpec, hardware, register


def evaluation_settings(config: Mapping[str, Any], step: int) -> dict[str, Any]:
    """An on-demand evaluation of an RL checkpoint generates up to the response limit of the stage
    ``step`` is in (trainers.rl.train.stage_at's rule) (TrainerSpec.evaluation_settings)."""
    stages = (config.get("rollout") or {}).get("stages") or []
    current = next((s for s in stages if step < s.get("until_step", 0)), stages[-1] if stages else None)
    if current and "max_response" in current:
        return {"max_new_tokens": current["max_response"]}
    return {}


# The CPU demo. 16 updates per rollout batch (4 mini-batches x 4 epochs, off-policy) make the entropy
# move within 40 steps, and the controller's step and cap are scaled up so it can act that fast: the
# AEC run holds entropy near the target while the run without it drifts down (README, "What the CPU
# demo shows").
_TINY = {
    "model_path": "tiny",
    # Raw prompts: the 4-layer character model learns the arithmetic far more slowly behind a chat
    # prefix (measured: greedy held-out accuracy after 300 SFT steps 0.31 raw vs 0.17 templated, and RL
    # from the templated warm start does not move; tests/trainers/conftest.py). Real models use auto.
    "chat_template": "none",
    "steps": 40,
    "rollout": {
        "n": 8,
        "prompts_per_step": 16,
        "temperature": 1.0,
        "stages": [{"until_step": 1000000000, "max_response": 40}],
    },
    "algo": {"mini_batches": 4, "ppo_epochs": 4},
    "entropy": {"adaptive": True, "target": 0.2, "delta": 5e-3, "max": 0.1},
    "optim": {"lr": 5e-5, "weight_decay": 0.0},
    # the first 32 held-out problems' rollouts at every evaluation: their solve rates over the run
    "eval": {"every": 10, "k": 4, "temperature": 0.6, "max_problems": 100, "sample_problems": 32},
    "checkpoint_every": 20,
    "reward_processes": 1,
    # every group of every step as samples (16 x 8 = 128 a step), one group with per-token arrays
    "sample_groups_per_step": "all",
    "token_stats_groups_per_step": 1,
}

#: what every real-model preset shares: bf16, one decoder layer's activations at a time
_BIG_COMPUTE = {"dtype": "bfloat16", "gradient_checkpointing": True, "micro_batch_tokens": 16384}

#: Several ranks run through torch.distributed.run (README, "Several processes, several hosts"); tested
#: on the CPU with gloo only: NCCL on GPUs has not run yet.
_UNTESTED_ON_GPU = "Multi-rank RL is tested on the CPU (gloo); it has not run on GPUs yet"
_OR1_7B = hardware(
    "1 node x 8 GPUs with 80 GB (A100/H100), vLLM and DeepSpeed: ZeRO-2 across 8 processes "
    f"(nproc_per_node: 8). {_UNTESTED_ON_GPU}",
    gpu_memory_gb=80,
    gpus_per_node=8,
)

SPEC = register(
    TrainerSpec(
        kind="rl",
        title="RL for reasoning (Skywork-OR1 / MAGIC)",
        description="GRPO with verifiable rewards: n samples per prompt, group-normalised advantages, "
        "token-level PPO-clip, rejection of zero-advantage groups, adaptive entropy control, multi-stage "
        "context length.",
        config="trainers.rl.config:RLConfig",
        entry="trainers.rl.train:train",
        queue="gpu",
        primary_metrics=("reward/accuracy", "policy/entropy", "val/pass@1"),
        dataset_fields=("train_dataset", "eval_dataset"),
        presets={
            "tiny-cpu-demo": _TINY,
            "tiny-cpu-demo-no-aec": {**_TINY, "entropy": {"adaptive": False, "fixed_coef": 0.0}},
            # OR1-7B's first stage: 8K responses. Needs vLLM: the torch sampler's KV cache for 256 rows of
            # 10K tokens (~150 GB) fits no GPU. Needs bf16 DeepSpeed ZeRO-2 over 8 GPUs with checkpointing
            # (~36 GB at the update, ~65 GB while vLLM holds half of each GPU): see preset_hardware.
            "or1-7b-stage1-8k": {
                "model_path": "DeepSeek-R1-Distill-Qwen-7B",
                "steps": 780,
                "rollout": {
                    "stages": [{"until_step": 780, "max_response": 8192}],
                    "engine": "vllm",
                    "gpu_memory_utilization": 0.5,
                },
                "data": {"offline_difficulty_filter": True},
                **_BIG_COMPUTE,
                "engine": "deepspeed",
                "zero_stage": 2,
                "nproc_per_node": 8,
            },
            # The 8K -> 16K -> 32K schedule: a 34K-token sequence is its own micro-batch (~46 GB at the
            # update).
            "or1-7b-multistage": {
                "model_path": "DeepSeek-R1-Distill-Qwen-7B",
                "steps": 2160,
                "rollout": {"engine": "vllm", "gpu_memory_utilization": 0.5},
                **_BIG_COMPUTE,
                "engine": "deepspeed",
                "zero_stage": 2,
                "nproc_per_node": 8,
            },
            # 32B needs 141 GB GPUs: vLLM runs without tensor parallelism here, so each GPU holds the bf16
            # weights (65 GB) plus a 33K-token KV cache next to its ZeRO-3 shard (1/16 of 16 bytes/parameter).
            "or1-32b-multistage": {
                "model_path": "DeepSeek-R1-Distill-Qwen-32B",
                "steps": 1120,
                "rollout": {
                    "stages": [
                        {"until_step": 400, "max_response": 16384},
                        {"until_step": 800, "max_response": 24576},
                        {"until_step": 1000000000, "max_response": 32768},
                    ],
                    "engine": "vllm",
                    "gpu_memory_utilization": 0.6,
                },
                **_BIG_COMPUTE,
                "engine": "deepspeed",
                "zero_stage": 3,
                "nproc_per_node": 8,
                "nodes": 2,
            },
        },
        preset_hardware={
            "tiny-cpu-demo": CPU_ONLY,
            "tiny-cpu-demo-no-aec": CPU_ONLY,
            "or1-7b-stage1-8k": _OR1_7B,
            "or1-7b-multistage": _OR1_7B,
            "or1-32b-multistage": hardware(
                "2 nodes x 8 GPUs with 141 GB (H200), vLLM and DeepSpeed: ZeRO-3 across 16 processes "
                "(nproc_per_node: 8, nodes: 2); 80 GB GPUs are too small (vLLM runs without tensor "
                f"parallelism). {_UNTESTED_ON_GPU}",
                gpu_memory_gb=141,
                gpus_per_node=8,
                nodes=2,
            ),
        },
        policy_checkpoints=True,
        evaluator="trainers.eval.run:evaluate_checkpoint",
        evaluation_settings="trainers.rl.spec:evaluation_settings",
        panels=("memory",),
    )
)
