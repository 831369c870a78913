"""A small MLP learns a fixed random teacher network from generated data.

Every step draws a global batch that depends only on (seed, step); with several ranks each takes its
contiguous share, the loss is the mean squared error over the whole global batch (the row count is
summed over the ranks), and DDP averages the gradients. So N ranks compute the one-process update,
up to the order of floating-point sums. Rank 0 writes the checkpoints; every rank resumes from them."""

from __future__ import annotations

import time

import torch
from torch import nn

from trainers.base import Sink
from trainers.common import distributed
from trainers.regression.config import RegressionConfig

STATE_FILE = "state.pt"


def mlp(features: int, hidden: int, seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, 1))


def batch_at(cfg: RegressionConfig, teacher: nn.Module, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step``: inputs and the teacher's outputs with a little noise."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    x = torch.randn(cfg.batch_size, cfg.features, generator=g)
    with torch.no_grad():
        y = teacher(x) + 0.01 * torch.randn(cfg.batch_size, 1, generator=g)
    return x, y


class Trainer:
    def __init__(self, cfg: RegressionConfig, sink: Sink):
        self.cfg, self.sink = cfg, sink
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        self.device = self.device or torch.device("cpu")
        self.teacher = mlp(cfg.features, 2 * cfg.hidden, cfg.seed + 1)
        self.model = mlp(cfg.features, cfg.hidden, cfg.seed).to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.start = 1
        self.last_checkpoint: int | None = None
        if sink.resume_from is not None:
            state = torch.load(sink.resume_from / STATE_FILE, map_location=self.device, weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.start = int(state["step"]) + 1
        self.ddp = self.model
        if distributed.world_size() > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def step(self, step: int) -> dict[str, float]:
        x, y = batch_at(self.cfg, self.teacher, step)
        lo, hi = distributed.shard_bounds(len(x))
        x, y = x[lo:hi].to(self.device), y[lo:hi].to(self.device)
        squared = ((self.ddp(x) - y) ** 2).sum()
        rows = distributed.all_reduce_sum(float(hi - lo))
        self.optimizer.zero_grad(set_to_none=True)
        (squared * distributed.mean_loss_scale(rows)).backward()
        self.optimizer.step()
        total = distributed.all_reduce_sum(float(squared.detach()))
        return {"train/loss": total / rows, "train/rows": rows, "train/world_size": distributed.world_size()}

    def checkpoint(self, step: int, metrics: dict[str, float]) -> None:
        if step == self.last_checkpoint:
            return  # a stop right after a periodic checkpoint: nothing new to save
        self.last_checkpoint = step
        directory = self.sink.checkpoint_dir(step)
        if distributed.is_rank_zero():
            state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": step}
            torch.save(state, directory / STATE_FILE)
        self.sink.save_checkpoint(step, directory, metrics)


def train(cfg: RegressionConfig, sink: Sink) -> dict:
    t = Trainer(cfg, sink)
    last = {}
    step = t.start - 1
    for step in range(t.start, cfg.steps + 1):
        if sink.should_stop():
            if step - 1 >= t.start:
                t.checkpoint(step - 1, last)
            return {"stopped": True, "step": step - 1}
        if cfg.fail_at_step == step and distributed.rank() == distributed.world_size() - 1:
            raise RuntimeError(
                f"regression failure at step {step} on rank {distributed.rank()} (fail_at_step)"
            )
        last = t.step(step)
        sink.log(step, last)
        if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step != cfg.steps:
            t.checkpoint(step, {"train/loss": last["train/loss"]})
        if cfg.sleep_per_step:
            time.sleep(cfg.sleep_per_step)
    if step >= t.start:
        t.checkpoint(step, {"train/loss": last["train/loss"]})
    return {"stopped": False, "step": step, "train/loss": last.get("train/loss")}
