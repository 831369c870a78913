from typing import Literal

from pydantic import Field, model_validator

from trainers.base import DatasetRef, TrainerConfig, dataset_field
from trainers.common.compute_config import ModelComputeFields, ProcessLayoutFields


class SFTConfig(ModelComputeFields, ProcessLayoutFields, TrainerConfig):
    """Supervised fine-tuning on (prompt, solution) pairs, each rendered with the chat template; the
    loss is on the assistant turn (the solution and its end-of-turn token) only. With several ranks
    (``nproc_per_node`` x ``nodes``) each takes its share of every global batch and DDP averages the
    gradients; the loss stays the global batch's token mean."""

    model_path: str = Field(
        "tiny",
        description="'tiny', a model name from the workers' catalogue (ORLAB_MODEL_ROOTS, e.g. Qwen/Qwen2.5-7B), or "
        "'checkpoint:<id>' (a policy checkpoint of a run in the same project). A directory path only when "
        "run standalone (the platform refuses paths); 'tiny' builds the tiny CPU model",
    )
    train_dataset: DatasetRef | None = dataset_field(
        "problems",
        "problems with a 'solution' (in the row or its metadata); unset: generated arithmetic",
        default=None,
    )
    eval_dataset: DatasetRef | None = dataset_field(
        "problems", "held-out problems for greedy accuracy; unset: generated arithmetic", default=None
    )
    generated_train: int = Field(
        4000, ge=1, description="generated arithmetic problems when no train_dataset"
    )
    generated_eval: int = Field(200, ge=1, description="generated held-out problems when no eval_dataset")
    generated_slip_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of generated training solutions whose boxed answer is one too high (like "
        "unverified distillation traces); the RL demo shows a verifier-rewarded policy dropping the habit",
    )
    steps: int = Field(600, ge=1, le=10_000_000, description="optimizer steps")
    batch_size: int = Field(
        32, ge=1, description="sequences per step, for all ranks together (each takes its share)"
    )
    lr: float = Field(2e-3, gt=0, description="peak learning rate (AdamW); tiny models need a large one")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    warmup_steps: int = Field(30, ge=0, description="linear warmup steps, then cosine decay to 10%")
    max_length: int = Field(
        96, ge=8, description="tokens per sequence (prompt + solution); longer ones are cut"
    )
    eval_every: int = Field(100, ge=0, description="greedy evaluation every N steps (0: only at the end)")
    checkpoint_every: int = Field(0, ge=0, description="checkpoint every N steps (0: only at the end)")
    max_new_tokens: int = Field(48, ge=1, description="generation budget for evaluation")
    seed: int = Field(0, description="seed for data order and initialisation")
    threads: int = Field(0, ge=0, description="torch CPU threads (0: torch's default)")
    engine: Literal["torch"] = Field("torch", description="training engine")

    @model_validator(mode="after")
    def _check(self):
        if self.warmup_steps > self.steps:
            raise ValueError("warmup_steps cannot exceed steps")
        return self
