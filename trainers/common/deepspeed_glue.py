"""DeepSpeed on the CPU (gloo) or GPUs (NCCL), in one process or across the launcher's ranks:
environment, init and engine.

Why a module: two first-time costs make DeepSpeed unusable in CPU tests unless avoided
(docs/packaging.md), and every trainer that uses DeepSpeed needs the same workarounds:

* ``deepspeed.init_distributed`` JIT-compiles a shared-memory comm op for the CPU (35-130 s in every
  new virtualenv). One process has nobody to share memory with, and CPU ranks do well enough without
  it (DeepSpeed then uses torch.distributed's gloo collectives), so :func:`skip_shm_op_build` replaces
  the builder with a no-op. It must be patched on the module object that
  ``importlib.import_module("deepspeed.comm.torch")`` returns: ``import deepspeed.comm.torch as m``
  binds the global ``torch`` that module re-exports instead.
* An optimizer declared in the DeepSpeed config compiles FusedAdam (~150 s): :func:`initialize`
  always takes a torch optimizer built by the caller.

The launcher's variables (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK) get single-process
defaults when missing; the default port is a free one, so two runs on one machine do not collide. Under
the launcher the process group usually exists already (trainers.common.distributed), and DeepSpeed
joins it.
DeepSpeed is imported lazily: importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import torch


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_single_process_env() -> dict[str, str]:
    """Set the launcher's variables that are missing to a one-process world; return all five."""
    defaults = {"MASTER_ADDR": "127.0.0.1", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())
    return {k: os.environ[k] for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def skip_shm_op_build() -> None:
    """Make DeepSpeed's CPU shared-memory comm op a no-op instead of a JIT build (see module doc)."""
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def init_distributed(device: torch.device) -> None:
    """Initialise torch.distributed through DeepSpeed once per process: gloo on the CPU, NCCL on CUDA.
    Later calls (a second run in the same process) reuse the process group."""
    import deepspeed

    ensure_single_process_env()
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    else:
        skip_shm_op_build()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    deepspeed.init_distributed(
        dist_backend="nccl" if device.type == "cuda" else "gloo", auto_mpi_discovery=False, verbose=False
    )


def destroy_process_group() -> None:
    """Tear down the process group (tests: leave the process as it was; a later init starts anew).
    Through deepspeed.comm, which also drops DeepSpeed's cached groups: torch's own teardown leaves
    them pointing at the dead world group and the next engine fails to broadcast."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        import deepspeed.comm

        deepspeed.comm.destroy_process_group()


def ds_config(
    *,
    micro_batch: int,
    grad_accum: int,
    zero_stage: int,
    grad_clip: float = 1.0,
    bf16: bool = False,
) -> dict[str, Any]:
    """The DeepSpeed config: no optimizer or scheduler entries (the caller passes torch ones, which
    avoids the FusedAdam build), gradient clipping, a ZeRO stage, and bf16 when asked."""
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": micro_batch * grad_accum * world_size(),
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": bool(bf16)},
        "steps_per_print": 10**9,  # we log ourselves
        "wall_clock_breakdown": False,
    }


def initialize(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: Any = None,
    *,
    device: torch.device,
    micro_batch: int,
    grad_accum: int,
    zero_stage: int,
    grad_clip: float = 1.0,
    bf16: bool = False,
) -> Any:
    """``deepspeed.initialize`` with a caller-built torch optimizer (and scheduler); returns the
    engine. The engine's ``backward`` divides the loss by ``grad_accum`` and its ``step`` updates
    (and clips, and steps the scheduler) only every ``grad_accum`` micro-batches."""
    import deepspeed

    init_distributed(device)
    config = ds_config(
        micro_batch=micro_batch, grad_accum=grad_accum, zero_stage=zero_stage, grad_clip=grad_clip, bf16=bf16
    )
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=lr_scheduler, config=config
    )
    return engine


@contextlib.contextmanager
def full_parameters(module: torch.nn.Module, zero_stage: int) -> Iterator[None]:
    """Inside, every parameter of ``module`` is whole (ZeRO-3 partitions them; gathering is needed to
    save or read them). A no-op for the other stages."""
    if zero_stage < 3:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        yield


def global_grad_norm(engine: Any) -> float:
    """The gradient norm before clipping of the engine's last optimizer step (NaN if unknown)."""
    norm = engine.get_global_grad_norm()
    if norm is None:
        return float("nan")
    return float(norm.item() if hasattr(norm, "item") else norm)
