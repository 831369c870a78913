"""Several processes of one run: the launcher's environment, the process group, side effects that
happen once (RankZeroSink), a global batch split across the ranks, and sums over the ranks.

torch.distributed's elastic launcher (``torch.distributed.run``, what the worker starts) gives every
rank RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and the rendezvous address. A process without
them is a world of one, and every helper here is then a no-op: a trainer written for N ranks runs
unchanged in one process (the tests, the CLI, a worker with ``nproc_per_node: 1``).

Control messages (stop, checkpoint directories) go through a gloo group even when the gradients go
through NCCL: they are a few bytes from the CPU, and NCCL would make each one a device sync.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

#: How long a collective may wait for the other ranks. Rank 0 evaluates and writes checkpoints while
#: the others wait at the next collective, so this is generous; a rank that dies is noticed at once
#: anyway (its sockets close, and the launcher stops the others).
DEFAULT_TIMEOUT_S = 1800.0

_control_group: Any = None


@dataclass(frozen=True)
class Layout:
    """Where this process sits among the run's processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_rank_zero(self) -> bool:
        return self.rank == 0


def layout() -> Layout:
    """The launcher's variables (a world of one without them)."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    return Layout(
        rank=int(env.get("RANK", "0")),
        world_size=world,
        local_rank=int(env.get("LOCAL_RANK", "0")),
        local_world_size=int(env.get("LOCAL_WORLD_SIZE", str(world))),
    )


def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(timeout_s: float = DEFAULT_TIMEOUT_S) -> Layout:
    """Join the process group of the launched ranks (NCCL on CUDA, with each rank on GPU LOCAL_RANK;
    gloo on the CPU). Nothing to do in a world of one, or when the group already exists."""
    global _control_group
    lay = layout()
    if not lay.distributed or initialized():
        return lay
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(lay.local_rank)
    timeout = timedelta(seconds=timeout_s)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    _control_group = dist.new_group(backend="gloo", timeout=timeout) if cuda else None
    return lay


#: How long a finishing rank waits at the closing barrier for the others before leaving anyway.
CLOSE_BARRIER_TIMEOUT_S = 60.0


def close(synchronise: bool = True) -> None:
    """Leave the process group (DeepSpeed's cached groups too, when DeepSpeed made it).

    ``synchronise`` (the normal end of a run): wait at a barrier until every rank is done first. A rank
    that tore its sockets down while a peer still finished its last collective got that peer aborted
    by gloo (SIGABRT, "connection closed by peer": seen once in CI on a 2-rank reward resume). The
    monitored barrier times out instead of hanging when a peer is gone; pass ``False`` on an error
    path, where the others may never arrive."""
    global _control_group
    if not initialized():
        return
    import sys

    if synchronise and world_size() > 1:
        group = _control_group  # gloo on every device: monitored_barrier exists only there
        with contextlib.suppress(Exception):  # a peer died at the end: leaving is all that is left
            dist.monitored_barrier(
                group=group, timeout=timedelta(seconds=CLOSE_BARRIER_TIMEOUT_S), wait_all_ranks=True
            )

    ds_comm = sys.modules.get("deepspeed.comm")
    if ds_comm is not None and ds_comm.is_initialized():  # DeepSpeed made the group: it drops its caches
        from trainers.common import deepspeed_glue

        deepspeed_glue.destroy_process_group()
    else:  # also when deepspeed.comm is merely imported (its backend is None until an engine starts)
        dist.destroy_process_group()
    _control_group = None


def rank() -> int:
    return dist.get_rank() if initialized() else layout().rank


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def is_rank_zero() -> bool:
    return rank() == 0


def is_peer_loss(exc: BaseException) -> bool:
    """Whether ``exc`` only says that another rank went away (a consequence, not a cause: the launcher
    reports the rank that failed first)."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text
        for marker in (
            "Connection closed by peer",
            "Connection reset by peer",
            "Broken pipe",
            "NCCL communicator",
        )
    )


# --- a global batch across the ranks ----------------------------------------------------------------
def shard_bounds(n: int, rank_: int | None = None, world: int | None = None) -> tuple[int, int]:
    """This rank's contiguous share [lo, hi) of n items: sizes differ by at most one, and the shares of
    ranks 0..world-1 concatenated are the items in order (so results gathered in rank order are the
    one-process results)."""
    rank_ = rank() if rank_ is None else rank_
    world = world_size() if world is None else world
    return n * rank_ // world, n * (rank_ + 1) // world


def shard(items: Sequence[T]) -> list[T]:
    lo, hi = shard_bounds(len(items))
    return list(items[lo:hi])


def _comm_device() -> torch.device:
    if initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(value: float | torch.Tensor) -> float | torch.Tensor:
    """The sum over the ranks (a float stays a float, a tensor a tensor on its device)."""
    if world_size() == 1:
        return value
    if isinstance(value, torch.Tensor):
        out = value.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def all_reduce_max(value: float) -> float:
    if world_size() == 1:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_reduce_sums(values: Mapping[str, float]) -> dict[str, float]:
    """Several sums in one collective. Every rank passes the same keys."""
    if world_size() == 1:
        return {k: float(v) for k, v in values.items()}
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist(), strict=True))


def gather_objects(obj: T) -> list[T]:
    """Every rank's ``obj`` in rank order, on every rank (small things: samples to log, counters)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj, group=_control_group)
    return out


def gather_lists(items: Sequence[T]) -> list[T]:
    """Every rank's ``items`` concatenated in rank order, on every rank: with contiguous shards, the
    global batch's items in their one-process order."""
    return [item for part in gather_objects(list(items)) for item in part]


def offset_and_total(n: int) -> tuple[int, int]:
    """(index of this rank's first item in the global order, items on all ranks), for ``n`` items here
    and ranks holding consecutive stretches in rank order."""
    counts = gather_objects(int(n))
    r = rank() if world_size() > 1 else 0
    return sum(counts[:r]), sum(counts)


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=_control_group)
    return box[0]


def broadcast_flag(flag: bool, src: int = 0) -> bool:
    if world_size() == 1:
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.uint8)
    dist.broadcast(t, src=src, group=_control_group)
    return bool(t.item())


def barrier() -> None:
    if world_size() > 1:
        dist.barrier(group=_control_group)


def mean_loss_scale(global_count: float) -> float:
    """The factor that turns this rank's *sum* (of token losses, squared errors, ...) into its share of
    the mean over the whole global batch: DDP and DeepSpeed average gradients over the ranks, so
    ``world_size / global_count`` makes the averaged gradient that of ``global_sum / global_count``."""
    return world_size() / max(float(global_count), 1.0)


# --- the sink, seen from N ranks -----------------------------------------------------------------------
class RankZeroSink:
    """The run's sink as every rank sees it. Rank 0 holds the real sink and forwards to it; the other
    ranks hold None and drop what they would log (a trainer gathers what must be logged to rank 0
    itself). Stop requests and checkpoint directories are decided on rank 0 and broadcast, so every
    rank stops at the same step and writes into the same directory; a checkpoint is recorded once,
    after every rank has finished writing its part.

    ``should_stop``, ``checkpoint_dir`` and ``save_checkpoint`` are collectives: every rank calls them
    at the same point (trainers do: their control flow is the same on every rank). The constructor is
    one too (rank 0 tells the others its workdir and the checkpoint to resume from)."""

    def __init__(self, inner: Any | None):
        self.rank = rank()
        if self.rank == 0 and inner is None:
            raise ValueError("rank 0 needs the real sink")
        self.inner = inner if self.rank == 0 else None
        here = (
            (str(inner.workdir), str(inner.resume_from) if inner.resume_from else None)
            if self.inner
            else None
        )
        workdir, resume = broadcast_object(here)
        self.workdir = Path(workdir)
        self.resume_from = Path(resume) if resume else None

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.inner is not None:
            self.inner.log(step, metrics)

    def log_samples(self, step: int, samples: Sequence[Mapping[str, Any]]) -> None:
        if self.inner is not None:
            self.inner.log_samples(step, samples)

    def log_evaluation(self, step, benchmark, metrics, protocol) -> None:
        if self.inner is not None:
            self.inner.log_evaluation(step, benchmark, metrics, protocol)

    def publish_dataset(
        self, kind: str, name: str, path: Path, meta: Mapping[str, Any] | None = None
    ) -> None:
        if self.inner is not None:
            self.inner.publish_dataset(kind, name, path, meta)

    def should_stop(self) -> bool:
        return broadcast_flag(self.inner.should_stop() if self.inner is not None else False)

    def checkpoint_dir(self, step: int) -> Path:
        path = str(self.inner.checkpoint_dir(step)) if self.inner is not None else None
        return Path(broadcast_object(path))

    def save_checkpoint(self, step: int, directory: Path, metrics: Mapping[str, float] | None = None) -> None:
        barrier()  # every rank has written its part (sharded optimizer states, ...)
        if self.inner is not None:
            self.inner.save_checkpoint(step, directory, metrics)


def launched_sink(sink: Any) -> Any:
    """``sink`` as this process should use it: unchanged in a world of one; under the launcher, the
    process group is joined and the sink wrapped in a RankZeroSink (rank 0's sink is the real one, the
    other ranks' is dropped). What a standalone entry point (``torchrun -m trainers.rl``) calls."""
    if not layout().distributed:
        return sink
    init()
    return RankZeroSink(sink if is_rank_zero() else None)
