"""Configuration of the Bradley-Terry reward-model trainer (what the web form and the CLI validate).

The defaults are starting points, not paper values: the Skywork-Reward paper's learning rate, epochs,
batch size and maximum length could not be read (seeds-spec 3.1 marks them [U]). ``lr = 2e-6`` is in
the range used for 8B-27B reward models; a random-init tiny model needs far more (the
``tiny-cpu-demo`` preset uses 1e-3).

This module imports no torch: the web app reads it to draw the form and check launches.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from trainers.base import DatasetRef, TrainerConfig, dataset_field
from trainers.common.compute_config import ModelComputeFields, ProcessLayoutFields

#: ``model_path`` value that builds the tiny char-level Qwen2-style model (trainers.common.tiny).
TINY = "tiny"


class RewardConfig(ModelComputeFields, ProcessLayoutFields, TrainerConfig):
    """Pairwise Bradley-Terry reward model: r(x, y) is a scalar read at the last token of the rendered
    (prompt, response); the loss is -log sigmoid(r(x, y_chosen) - r(x, y_rejected) [- margin]).

    Precision (``dtype``), ``micro_batch_tokens``, ``gradient_checkpointing``, ``chat_template`` (how each
    side is rendered), ``save_optimizer`` and ``retention`` are the fields every model trainer shares
    (trainers.common.compute_config). With several ranks (``nproc_per_node`` x ``nodes``) each takes its
    share of every optimizer step's pairs; DDP (engine torch) or DeepSpeed ZeRO averages the gradients
    and the loss stays the pair mean of the whole step."""

    # --- model -------------------------------------------------------------------------------------
    model_path: str = Field(
        TINY,
        min_length=1,
        description="a causal LM or a sequence classifier: a model name from the workers' catalogue "
        "(ORLAB_MODEL_ROOTS), 'checkpoint:<id>' (a policy checkpoint of a run in the same project), or "
        "'tiny': a random-init tiny Qwen2-style model with a character tokenizer, built (seeded) in the "
        "run's folder. A directory path only when run standalone (the platform refuses paths)",
    )
    head: Literal["seq_cls", "value_head"] = Field(
        "seq_cls",
        description="seq_cls: AutoModelForSequenceClassification with num_labels=1 (Skywork-Reward's form); "
        "value_head: the causal LM's backbone with a scalar head; either is read at the last non-pad token",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None,
        description="attention kernel (default: the model's own). Gemma-2 reward models need eager or "
        "flash_attention_2: SDPA degrades them (Skywork-Reward README)",
    )

    # --- data --------------------------------------------------------------------------------------
    train_dataset: DatasetRef = dataset_field(
        "preference",
        "preference pairs to train on (an orlab dataset, or the path of its JSONL export when run standalone)",
    )
    eval_dataset: DatasetRef | None = dataset_field(
        "preference",
        "held-out preference pairs; each row's `source` names its subset, and RewardBench subset names "
        "(alpacaeval-easy, math-prm, ...) also give section scores and the overall score",
        default=None,
    )
    max_length: int = Field(
        2048,
        ge=8,
        le=131072,
        description="tokens per rendered (prompt, response); longer ones lose tokens from the left (the "
        "prompt side), so the end of the response, where the reward is read, is always kept",
    )

    # --- optimisation ------------------------------------------------------------------------------
    lr: float = Field(
        2e-6,
        gt=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="peak learning rate of AdamW. 2e-6 is a starting point for 8B-27B models, not a "
        "value from the paper; a random-init tiny model needs about 1e-3",
    )
    epochs: int = Field(1, ge=1, le=1000, description="passes over the training pairs")
    max_steps: int = Field(
        0, ge=0, description="stop after this many optimizer steps (0: run all the epochs)"
    )
    batch_size: int = Field(
        8,
        ge=1,
        le=4096,
        description="pairs per forward at most (chosen and rejected go through one forward: 2 x batch_size "
        "sequences); a forward also holds at most micro_batch_tokens tokens (pairs of similar lengths "
        "together, a pair's two sides always in the same forward). Each epoch drops the few pairs that do "
        "not fill a last batch_size x grad_accum batch",
    )
    grad_accum: int = Field(
        1,
        ge=1,
        le=4096,
        description="slices of batch_size pairs per optimizer step (global batch = batch_size x grad_accum "
        "pairs, for all ranks together: each rank takes its share and cuts it into forwards of at most "
        "batch_size pairs); the loss is the mean over the global batch's pairs however it is split",
    )
    margin: float | None = Field(
        None,
        allow_inf_nan=False,
        description="optional constant margin m in the loss -log sigmoid(r_c - r_r - m) (none in Skywork-Reward)",
    )
    weight_decay: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="AdamW weight decay (not applied to biases and norms)",
    )
    warmup_ratio: float = Field(
        0.03, ge=0.0, le=1.0, allow_inf_nan=False, description="fraction of the steps with a linear warmup"
    )
    scheduler: Literal["cosine", "constant"] = Field(
        "cosine", description="learning-rate shape after the warmup: cosine decay to 0, or constant"
    )
    seed: int = Field(0, ge=0, description="seeds the tiny model, the new reward head and the data order")

    # --- bookkeeping -------------------------------------------------------------------------------
    eval_every: int = Field(
        0,
        ge=0,
        description="evaluate every N optimizer steps (0: only before the first step and at the end; "
        "there is always an evaluation before training and one at the end when eval_dataset is set)",
    )
    checkpoint_every: int = Field(
        0, ge=0, description="also checkpoint every N optimizer steps (0: only a final checkpoint)"
    )

    # --- engine ------------------------------------------------------------------------------------
    engine: Literal["torch", "deepspeed"] = Field(
        "torch",
        description="torch: a plain loop (DDP across several ranks); deepspeed: deepspeed.initialize with a "
        "ZeRO stage, in one process or across nproc_per_node x nodes ranks (gloo on the CPU, NCCL on GPUs; "
        "several ranks have been tested on the CPU only)",
    )
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage 0-3 (engine=deepspeed only)")
    threads: int = Field(
        0, ge=0, le=1024, description="torch.set_num_threads on the CPU (0: leave torch's default)"
    )

    @field_validator("model_path")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()
