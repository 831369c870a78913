from collections.abc import Mapping
from typing import Any

from trainers.base import CPU_ONLY, TrainerSpec, register


def evaluation_settings(config: Mapping[str, Any], step: int) -> dict[str, Any]:
    """An on-demand evaluation of an SFT checkpoint repeats the run's greedy evaluation: k 1,
    temperature 0, its max_new_tokens (TrainerSpec.evaluation_settings)."""
    found: dict[str, Any] = {"k": 1, "temperature": 0.0, "top_p": 1.0}
    if "max_new_tokens" in config:
        found["max_new_tokens"] = config["max_new_tokens"]
    return found


SPEC = register(
    TrainerSpec(
        kind="sft",
        title="SFT warm start",
        description="Supervised fine-tuning on problem/solution pairs (loss on the solution tokens), "
        "with greedy held-out accuracy through the math verifier.",
        config="trainers.sft.config:SFTConfig",
        entry="trainers.sft.train:train",
        queue="gpu",
        primary_metrics=("train/loss", "eval/accuracy"),
        dataset_fields=("train_dataset", "eval_dataset"),
        presets={
            "tiny-cpu-demo": {
                "model_path": "tiny",
                # raw prompts, as the RL/DAPO tiny presets (see trainers/rl/spec.py)
                "chat_template": "none",
                "steps": 600,
                "batch_size": 32,
                "lr": 2e-3,
                "eval_every": 100,
            },
        },
        preset_hardware={"tiny-cpu-demo": CPU_ONLY},
        policy_checkpoints=True,
        evaluator="trainers.eval.run:evaluate_checkpoint",
        evaluation_settings="trainers.sft.spec:evaluation_settings",
        panels=("memory",),
    )
)
