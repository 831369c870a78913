"""The rollout engine a trainer samples with (moved here from trainers.rl.train, which the DAPO trainer
and the evaluation shared): vLLM when asked for and available, else the KV-cache torch sampler."""

from __future__ import annotations

from pathlib import Path

import torch

from trainers.common.rollout import TorchSampler

SAMPLER_BATCH = 256  # rows the torch sampler decodes at once


def make_engine(
    kind: str,
    model,
    tokenizer,
    model_dir: Path,
    *,
    compute_dtype: torch.dtype | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
    sync_bucket_mb: int | None = None,
):
    """The rollout engine: vLLM when asked for (or ``auto`` and available), else the KV-cache torch
    sampler on the policy's device, computing in ``compute_dtype`` (autocast; bf16 on CUDA).

    vLLM is sized by ``max_model_len`` (the caller's longest prompt + generation; default: the model's
    own context, vLLM's default) and shares the GPU at ``gpu_memory_utilization``. It has never run on
    a GPU in orlab's tests (README, "The GPU path")."""
    if kind in ("auto", "vllm"):
        from trainers.common import vllm_engine

        if vllm_engine.available():
            if max_model_len is None:
                max_model_len = int(model.config.max_position_embeddings)
            extra = {}
            if gpu_memory_utilization is not None:
                extra["gpu_memory_utilization"] = gpu_memory_utilization
            if sync_bucket_mb is not None:
                extra["sync_bucket_bytes"] = sync_bucket_mb << 20
            return vllm_engine.VllmEngine(
                model_dir,
                tokenizer=tokenizer,
                max_model_len=max_model_len,
                dtype=compute_dtype or torch.bfloat16,
                **extra,
            )
        if kind == "vllm":
            raise RuntimeError("rollout.engine = vllm, but vllm or CUDA is not available on this worker")
    return TorchSampler(model, tokenizer, batch_size=SAMPLER_BATCH, compute_dtype=compute_dtype)
