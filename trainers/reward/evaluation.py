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
from trainers.reward.rewardbench import is_rewardbench_subset, section_scores


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


#: resamples and seed of the reward model's accuracy intervals (fixed: the same pairs give the same band)
INTERVAL_RESAMPLES = 1000
INTERVAL_SEED = 0


def accuracy_intervals(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    sources: list[str],
    *,
    resamples: int = INTERVAL_RESAMPLES,
    seed: int = INTERVAL_SEED,
) -> dict[str, list[float]]:
    """``<name>_ci`` = [lo, hi], the percentile-bootstrap 95 % interval over pairs, for ``accuracy``,
    each ``subset/<source>``, and the RewardBench ``section/<id>`` and ``overall`` scores (the names
    :func:`eval_metrics` gives without ``eval/``), as the policies' pass@k carry theirs
    (trainers.eval.estimators). Resampling is stratified by source: each resample keeps every subset's
    pair count, so a section score, a fixed weighting of subsets, is resampled as RewardBench computes
    it. Pairs without a source are resampled among themselves (they count in ``accuracy`` only)."""
    correct = (chosen > rejected).to(torch.float64)
    n = len(correct)
    if n == 0:
        return {}
    groups: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        groups.setdefault(source or "", []).append(i)
    gen = torch.Generator().manual_seed(seed)
    # per source: (resamples,) accuracy of a with-replacement draw of its pairs
    draws: dict[str, torch.Tensor] = {}
    for source, idx in groups.items():
        values = correct[torch.tensor(idx)]
        picks = torch.randint(len(idx), (resamples, len(idx)), generator=gen)
        draws[source] = values[picks].mean(dim=1)
    total = sum(draws[s] * len(groups[s]) for s in groups) / n
    series: dict[str, torch.Tensor] = {"accuracy": total}
    named = {s: d for s, d in draws.items() if s}
    for source, d in named.items():
        series[f"subset/{sanitize(source)}"] = d
    # section scores of every resample (pure Python per resample: a handful of subsets)
    rewardbench = {s: d.tolist() for s, d in named.items() if is_rewardbench_subset(s)}
    per_resample = (
        [section_scores({s: d[r] for s, d in rewardbench.items()}) for r in range(resamples)]
        if rewardbench
        else []
    )
    for section in per_resample[0] if per_resample else ():
        name = "overall" if section == "overall" else f"section/{section}"
        series[name] = torch.tensor([scores[section] for scores in per_resample], dtype=torch.float64)
    out = {}
    for name, values in series.items():
        lo, hi = torch.quantile(values, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
        out[f"{name}_ci"] = [float(lo), float(hi)]
    return out
