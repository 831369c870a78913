"""Config fields every model trainer (RL, DAPO, SFT, reward) shares: precision, micro-batching,
gradient checkpointing, chat templates, checkpoint retention and process layout.

One definition so the launch form, the memory estimator and the worker registry read the same names
in every trainer. No torch import: the web app validates configs with these models.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DTYPES = ("auto", "bfloat16", "float32")


class RetentionConfig(BaseModel):
    """Which checkpoints the platform keeps. A checkpoint is kept when any rule keeps it; the newest one
    and any with a pending evaluation are never deleted. All zero / unset: keep everything."""

    model_config = ConfigDict(extra="forbid")

    keep_last: int = Field(
        0,
        ge=0,
        le=100_000,
        description="keep the newest K checkpoints (0: this rule keeps none; with every rule unset all are kept)",
    )
    keep_every: int = Field(
        0,
        ge=0,
        le=100_000_000,
        description="also keep every checkpoint whose step is a multiple of M (0: none)",
    )
    best_metric: str | None = Field(
        None,
        max_length=200,
        description="also keep the best checkpoint so far by this metric (e.g. val/avg@8)",
    )
    best_mode: Literal["max", "min"] = Field(
        "max", description="whether higher or lower best_metric is better"
    )


class ModelComputeFields(BaseModel):
    """Mixed into a trainer's config (a pydantic model with ``extra="forbid"``)."""

    dtype: Literal["auto", "bfloat16", "float32"] = Field(
        "auto",
        description="training precision: auto = bfloat16 on CUDA, float32 on the CPU. With the torch engine "
        "parameters and optimizer state stay float32 and the forward runs under bf16 autocast; with "
        "DeepSpeed its bf16 mode (fp32 master weights in the optimizer)",
    )
    micro_batch_tokens: int = Field(
        16384,
        ge=16,
        le=10_000_000,
        description="token budget of one micro-batch (rows x padded length); a batch is split into "
        "micro-batches of similar lengths and gradients are accumulated, so the update equals the "
        "un-split one",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass (less memory, ~30% more compute)"
    )
    chat_template: str = Field(
        "auto",
        max_length=65536,
        description="how prompts are rendered: auto = the tokenizer's chat template with the generation "
        "prompt (refused at launch when the model has none), none = the raw text, or a Jinja template",
    )
    save_optimizer: bool = Field(
        True, description="store the optimizer state with each checkpoint (needed to resume exactly)"
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
