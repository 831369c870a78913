"""Scoring encoded pairs in batches, and the evaluation metrics (accuracy per subset, RewardBench
sections). Shared by the training loop and trainers.reward.score."""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

from trainers.common.data import EncodedPairs, pad_batch
from trainers.reward.losses import bt_loss
from trainers.reward.rewardbench import section_scores


def sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name) or "_"


def collate(enc: EncodedPairs, idx: list[int], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(input_ids, attention_mask) of ``[chosen_0..n-1, rejected_0..n-1]``, right-padded together."""
    seqs = [enc.chosen[i] for i in idx] + [enc.rejected[i] for i in idx]
    ids, mask = pad_batch(seqs, pad_id, side="right")
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)


@torch.no_grad()
def score_encoded(
    forward: Callable[..., torch.Tensor],
    enc: EncodedPairs,
    batch_size: int,
    pad_id: int,
    device: torch.device,
    autocast: Any = nullcontext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rewards, rejected rewards) of every pair, float32 on the CPU."""
    chosen, rejected = [], []
    for start in range(0, len(enc), batch_size):
        idx = list(range(start, min(start + batch_size, len(enc))))
        ids, mask = collate(enc, idx, pad_id, device)
        with autocast():
            rewards = forward(ids, mask).float().cpu()
        chosen.append(rewards[: len(idx)])
        rejected.append(rewards[len(idx) :])
    return torch.cat(chosen), torch.cat(rejected)


def eval_metrics(
    chosen: torch.Tensor, rejected: torch.Tensor, sources: list[str], margin: float | None
) -> dict[str, float]:
    metrics = {
        "eval/loss": float(bt_loss(chosen, rejected, margin)),
        "eval/accuracy": float((chosen > rejected).float().mean()),
        "eval/margin_mean": float((chosen - rejected).mean()),
    }
    correct = (chosen > rejected).tolist()
    per_subset: dict[str, list[bool]] = {}
    for source, ok in zip(sources, correct, strict=True):
        if source:
            per_subset.setdefault(source, []).append(ok)
    accuracy = {name: sum(oks) / len(oks) for name, oks in per_subset.items()}
    for name, acc in sorted(accuracy.items()):
        metrics[f"eval/subset/{sanitize(name)}"] = acc
    for section, score in section_scores(accuracy).items():
        metrics["eval/overall" if section == "overall" else f"eval/section/{section}"] = score
    return metrics
