"""Config fields every model trainer (RL, DAPO, SFT, reward) shares: precision, micro-batching,
gradient checkpointing, chat templates, checkpoint retention and process layout.

One definition so the launch form, the memory estimator and the worker registry read the same names
in every trainer. No torch import: the web app validates configs with these models.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
    # rollout samples (webapp.runs.retention); unset: the server's ORLAB_SAMPLE_KEEP_* settings
    samples_keep_last_steps: int | None = Field(
        None,
        ge=0,
        le=10_000_000,
        description="keep every rollout sample of the last K steps and a fraction of older groups (0: keep all)",
    )
    samples_keep_fraction: float | None = Field(
        None, ge=0.0, le=1.0, description="the (seeded) fraction of older steps' sample groups kept"
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
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig,
        description="which checkpoints the platform keeps (keep last K, every M-th, the best by a metric)",
    )


MAX_NPROC_PER_NODE = 256


class ProcessLayoutFields(BaseModel):
    """How many processes train one run: mixed into the configs of trainers that run across ranks
    (trainers.common.distributed); a trainer that cannot does not offer these fields."""

    nproc_per_node: Annotated[int, Field(ge=1, le=MAX_NPROC_PER_NODE)] | Literal["auto"] = Field(
        1,
        description="training processes per node, started by torch.distributed's elastic launcher "
        "(torchrun); auto = the worker's visible GPUs (1 on a CPU worker). Several CPU processes use gloo",
    )
    nodes: int = Field(
        1,
        ge=1,
        le=1024,
        description="hosts that train this run together: one node task per host on the run's queue, "
        "joined through torch.distributed's c10d rendezvous (the run fails if not all join in time)",
    )

    @field_validator("nproc_per_node", mode="before")
    @classmethod
    def _one_message(cls, value):
        """One error naming the field (the union would report each of its branches)."""
        if value == "auto" or (type(value) is int and 1 <= value <= MAX_NPROC_PER_NODE):
            return value
        raise ValueError(f"must be an integer from 1 to {MAX_NPROC_PER_NODE}, or 'auto'")


class VllmEngineFields(BaseModel):
    """The colocated vLLM engine's knobs, shared by RL's ``rollout`` and DAPO's ``generate`` sections."""

    gpu_memory_utilization: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="share of the GPU's memory vLLM may take for its bf16 weights and KV cache while it "
        "samples (TRL's colocate default: the trainer's parameters, gradients and optimizer state stay "
        "on the same GPU); vLLM only, has never run on a GPU in orlab's tests",
    )
    vllm_sync_bucket_mb: int = Field(
        512,
        ge=1,
        le=65536,
        description="weights are copied into vLLM in buckets of at most this many MB, each cast to bf16 "
        "only when sent (no full converted copy of the model); vLLM only, has never run on a GPU in "
        "orlab's tests",
        json_schema_extra={"x-orlab-vllm-only": True},  # launch refuses it where no worker has vLLM
    )
