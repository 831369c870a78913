"""Where a model lives and in which precision it trains.

The rule (issue 10; what verl and TRL do on a GPU):

* ``dtype: auto`` is bfloat16 on CUDA and float32 on the CPU.
* torch engine + bfloat16: parameters and optimizer state stay float32 (master weights) and the
  forward/backward run under ``torch.autocast(bfloat16)``; the checkpoint is written in bfloat16.
* DeepSpeed + bfloat16: the module is loaded in bfloat16 and DeepSpeed's bf16 mode keeps the fp32
  master copy inside the optimizer.
* Weights load straight onto their device (``device_map``), never as an fp32 host copy first.

Only torch APIs that exist across the versions we meet (2.4 .. 2.13) are used here: the GPU hosts
carry their own torch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

_NAMES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def pick_device(local_rank: int | None = None) -> torch.device:
    """CUDA (this process's local rank's GPU) when available, else the CPU."""
    if torch.cuda.is_available():
        index = local_rank if local_rank is not None else torch.cuda.current_device()
        return torch.device("cuda", index)
    return torch.device("cpu")


@dataclass(frozen=True)
class Precision:
    """How one trainer holds and runs its model."""

    device: torch.device
    #: what the training computation runs in (bf16 or fp32)
    compute_dtype: torch.dtype
    #: what the trained parameters are stored in while training (fp32 for the torch engine)
    param_dtype: torch.dtype
    #: what checkpoints are written in (the training dtype)
    save_dtype: torch.dtype

    @property
    def autocast_enabled(self) -> bool:
        return self.compute_dtype != self.param_dtype

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context every training forward (and the backward it feeds) runs under."""
        if not self.autocast_enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.compute_dtype)

    @property
    def name(self) -> str:
        return "bfloat16" if self.compute_dtype == torch.bfloat16 else "float32"


def resolve_precision(dtype: str, engine: str = "torch", device: torch.device | None = None) -> Precision:
    """The :class:`Precision` of a config's ``dtype`` ("auto" | "bfloat16" | "float32") and ``engine``."""
    device = device or pick_device()
    if dtype == "auto":
        name = "bfloat16" if device.type == "cuda" else "float32"
    elif dtype in _NAMES:
        name = dtype
    else:
        raise ValueError(f"dtype must be auto, bfloat16 or float32, got {dtype!r}")
    compute = _NAMES[name]
    # DeepSpeed's bf16 mode wants the module in bf16 (it keeps the fp32 master copy itself).
    param = compute if engine == "deepspeed" else torch.float32
    return Precision(device=device, compute_dtype=compute, param_dtype=param, save_dtype=compute)


def inference_precision(dtype: str, device: torch.device | None = None) -> Precision:
    """For models that are never trained (a reference policy, a frozen critic, a sampler copy): held in
    the compute dtype itself, no fp32 master copy."""
    p = resolve_precision(dtype, "deepspeed", device)
    return p


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Turn on activation recomputation for a Hugging Face model (or a wrapper whose ``backbone`` is
    one). Non-reentrant checkpointing: works with frozen inputs and under autocast."""
    target = getattr(model, "backbone", model)
    target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(target, "config"):
        target.config.use_cache = False


def peak_memory_bytes(device: torch.device) -> int | None:
    """``torch.cuda.max_memory_allocated`` on CUDA; None on the CPU (no allocator statistics)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None
