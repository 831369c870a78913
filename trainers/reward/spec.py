"""Registers the reward-model trainer (kind "reward") with its presets. Imports only trainers.base.

The paper-like presets are starting points, not the paper's settings: Skywork-Reward's learning
rate, epochs, batch size and max length are not public (seeds-spec 3.1, [U]). Their ``model_path``
is a placeholder to replace with a local copy of the base model.
"""

from trainers.base import CPU_ONLY, TrainerSpec, hardware, register

PRESETS = {
    # A random-init tiny model on demo pairs (python -m trainers.common.demo_data): held-out accuracy
    # climbs from about 0.5 to 0.8-0.9 within a few minutes on one CPU core.
    "tiny-cpu-demo": {
        "model_path": "tiny",
        "head": "seq_cls",
        "lr": 1e-3,
        "epochs": 2,
        "batch_size": 16,
        "max_length": 160,
        "warmup_ratio": 0.05,
        "scheduler": "cosine",
        "eval_every": 50,
        "checkpoint_every": 200,
        "threads": 1,
    },
    # Skywork-Reward-Llama-3.1-8B-like: lr 3e-6 and 2 epochs are unverified guesses (seeds-spec 3.1).
    "skywork-llama-8b": {
        "model_path": "/models/Meta-Llama-3.1-8B-Instruct",
        "head": "seq_cls",
        "lr": 3e-6,
        "epochs": 2,
        "batch_size": 4,
        "grad_accum": 32,
        "max_length": 4096,
        "warmup_ratio": 0.03,
        "scheduler": "cosine",
        "dtype": "bfloat16",
        "gradient_checkpointing": True,
        "engine": "deepspeed",
        "zero_stage": 3,
        "nproc_per_node": 8,
        "eval_every": 100,
        "checkpoint_every": 200,
    },
    # Skywork-Reward-Gemma-2-27B-like: lr 2e-6 and 2 epochs are unverified guesses; eager attention
    # because SDPA degrades Gemma-2 (Skywork-Reward README).
    "skywork-gemma-27b": {
        "model_path": "/models/gemma-2-27b-it",
        "head": "seq_cls",
        "lr": 2e-6,
        "epochs": 2,
        "batch_size": 2,
        "grad_accum": 64,
        "max_length": 4096,
        "warmup_ratio": 0.03,
        "scheduler": "cosine",
        "dtype": "bfloat16",
        "gradient_checkpointing": True,
        "attn_implementation": "eager",
        "engine": "deepspeed",
        "zero_stage": 3,
        "nproc_per_node": 8,
        "eval_every": 100,
        "checkpoint_every": 200,
    },
}

#: Checked against the memory estimate (tests/trainers/test_memory_estimate_presets.py): ZeRO-3 over 8 GPUs
#: keeps 1/8 of the 16 bytes/parameter; gradient checkpointing keeps one layer's activations at a time.
#: The trainer runs DeepSpeed ZeRO-3 across ranks (trainers/reward/train.py), but only 2 gloo ranks on
#: the CPU have run it (tests/trainers/test_distributed_reward.py): the summaries say so.
_UNTESTED = (
    "Multi-rank training (DeepSpeed ZeRO-3, 8 ranks) is implemented and tested on the CPU only (2 gloo "
    "ranks match one process); no GPU has run it yet (NCCL, bf16, this model size are untested)"
)
PRESET_HARDWARE = {
    "tiny-cpu-demo": CPU_ONLY,
    "skywork-llama-8b": hardware(
        "1 node x 8 GPUs with 80 GB (A100/H100) and DeepSpeed: ZeRO-3 across 8 processes "
        f"(nproc_per_node: 8). {_UNTESTED}",
        gpu_memory_gb=80,
        gpus_per_node=8,
    ),
    "skywork-gemma-27b": hardware(
        "1 node x 8 GPUs with 141 GB (H200) and DeepSpeed: ZeRO-3 across 8 processes (nproc_per_node: 8); "
        f"eager attention stores every score of a layer, so 80 GB GPUs need 16 of them. {_UNTESTED}",
        gpu_memory_gb=141,
        gpus_per_node=8,
    ),
}

SPEC = register(
    TrainerSpec(
        kind="reward",
        title="Reward model (Bradley-Terry)",
        description="Pairwise Bradley-Terry reward model in the Skywork-Reward style (arXiv 2410.18451): a "
        "sequence classifier or value head read at the last token, trained on preference pairs; reports "
        "accuracy per subset and RewardBench section scores on a held-out set. Real models need a GPU; the "
        "tiny-cpu-demo preset runs on a CPU.",
        config="trainers.reward.config:RewardConfig",
        entry="trainers.reward.train:train",
        queue="gpu",
        primary_metrics=("train/loss", "eval/accuracy"),
        dataset_fields=("train_dataset", "eval_dataset"),
        presets=PRESETS,
        preset_hardware=PRESET_HARDWARE,
        scorer="trainers.reward.score:score_pairs",
        panels=("memory", "scoring"),
    )
)
