"""Stage 2 of DAPO: the critic, a language-model backbone with a value head (seeds-spec 2.2).

One sequence per sampled solution, prompt + steps[:T-1]; the head's output at the last token of
every prefix s_t is a logit whose sigmoid predicts v(s_t). One forward pass scores all T prefixes of
a solution (the backbone is causal). Terminal states are not trained on: the actor uses the
verifier's reward there.

Calibration is measured on held-out prompts: ECE over equal-width bins of the predicted value,
against the Monte-Carlo values (each the mean of ``mc_rollouts`` Bernoulli outcomes, so an unbiased,
lower-variance stand-in for the 0/1 outcome); AUC of the predicted value for the sampled
solution's final verdict.

Training and scoring run in token-budget micro-batches (``micro_batch_tokens``) of whole sequences;
the loss is a mean over prefix states, so each micro-batch's mean is weighted by its share of them
and the accumulated update equals the un-split one. Several ranks: every rank passes the global batch
to :func:`critic_backward` and trains on its contiguous share of the sequences through the
DDP-wrapped critic (trainers.common.distributed; no-ops in one process)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from trainers.common import distributed
from trainers.common.models import ValueModel
from trainers.common.token_batching import split_by_token_budget
from trainers.dapo.encoding import StateEncoder


@dataclass
class PrefixSequence:
    ids: list[int]  # prompt + steps[:T-1]
    ends: list[int]  # position of the last token of s_t, t = 0..len(ends)-1
    labels: list[float]  # Monte-Carlo v(s_t)
    correct: bool  # the sampled solution's final verdict


def encode_row(encoder: StateEncoder, row: Mapping[str, Any], max_length: int) -> PrefixSequence:
    """A step-value row as one critic sequence (the prompt rendered as every model reads it);
    prefixes ending beyond ``max_length`` are dropped (the prompt-only state s_0 is always kept, the
    prompt cut from the left if it must be)."""
    steps = row["steps"]
    ids = encoder.prompt(row["prompt"])[-max_length:]
    ends, labels = [len(ids) - 1], [float(row["values"][0])]
    for t, step in enumerate(steps[:-1], start=1):
        more = encoder.steps([step])
        if not more or len(ids) + len(more) > max_length:
            if not more:
                continue  # an empty step leaves the state's last token where it was
            break
        ids += more
        ends.append(len(ids) - 1)
        labels.append(float(row["values"][t]))
    return PrefixSequence(ids, ends, labels, bool(row["correct"]))


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def prefix_logits(model: torch.nn.Module, batch: Sequence[PrefixSequence], pad_id: int) -> torch.Tensor:
    """The head's logits at every prefix end of every sequence, flattened in order (one forward).
    ``model``: a :class:`ValueModel`, or one wrapped in DDP."""
    device = next(model.parameters()).device
    ids, mask = _pad([s.ids for s in batch], pad_id)
    out = model(ids.to(device), attention_mask=mask.to(device))
    rows = torch.tensor([i for i, s in enumerate(batch) for _ in s.ends], device=device)
    cols = torch.tensor([e for s in batch for e in s.ends], device=device)
    return out[rows, cols]


def micro_batches(batch: Sequence[PrefixSequence], token_budget: int) -> list[list[int]]:
    """Indices of ``batch`` in micro-batches of at most ``token_budget`` padded tokens."""
    return split_by_token_budget([len(s.ids) for s in batch], token_budget)


def critic_backward(
    model: ValueModel,
    batch: Sequence[PrefixSequence],
    pad_id: int,
    *,
    loss: str,
    token_budget: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    forward: torch.nn.Module | None = None,
) -> float:
    """Accumulate the gradient of the critic loss of ``batch`` (a mean over all its prefix states)
    micro-batch by micro-batch, and return the loss. Each micro-batch's mean is weighted by its share
    of the batch's prefixes, so the loss and the gradients equal those of the un-split batch.

    Several ranks: every rank passes the same (global) ``batch`` and trains on its contiguous share of
    the sequences through ``forward`` (``model`` in DDP; default ``model``). The weights stay shares
    of the global batch's prefixes, the loss is multiplied by the world size (DDP averages the
    gradients), ranks with fewer micro-batches pad them with zero-loss passes (every rank must join
    each gradient reduction), and the returned loss is summed over the ranks."""
    forward = forward if forward is not None else model
    device = next(model.parameters()).device
    world = distributed.world_size()
    total = sum(len(s.ends) for s in batch)
    lo, hi = distributed.shard_bounds(len(batch))
    mine = list(batch[lo:hi])
    groups = micro_batches(mine, token_budget) if mine else []
    padding = int(distributed.all_reduce_max(float(len(groups)))) - len(groups) if world > 1 else 0
    value = 0.0
    for group in groups:
        part = [mine[i] for i in group]
        labels = torch.tensor([v for s in part for v in s.labels], device=device)
        with autocast():
            logits = prefix_logits(forward, part, pad_id)
        weighted = critic_loss(logits.float(), labels, loss) * (len(labels) / total)
        (weighted * world if world > 1 else weighted).backward()
        value += float(weighted.detach())
    for _ in range(padding):  # zero-loss passes: one short sequence whose loss is multiplied by 0
        with autocast():
            logits = prefix_logits(forward, [PrefixSequence([pad_id] * 2, [1], [0.0], False)], pad_id)
        (logits.float().sum() * 0.0).backward()
    return float(distributed.all_reduce_sum(value))


@torch.no_grad()
def all_prefix_logits(
    model: ValueModel,
    seqs: Sequence[PrefixSequence],
    pad_id: int,
    *,
    token_budget: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> torch.Tensor:
    """:func:`prefix_logits` of many sequences (float32, on the CPU, in their order), computed in
    micro-batches of at most ``token_budget`` padded tokens."""
    per_seq: list[torch.Tensor] = [torch.zeros(0)] * len(seqs)
    for group in micro_batches(seqs, token_budget):
        with autocast():
            out = prefix_logits(model, [seqs[i] for i in group], pad_id).float().cpu()
        for i, chunk in zip(group, out.split([len(seqs[i].ends) for i in group]), strict=True):
            per_seq[i] = chunk
    return torch.cat(per_seq) if per_seq else torch.zeros(0)


def critic_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """BCE with soft labels (the MC values), or MSE between sigmoid(logit) and the label."""
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, labels)
    if kind == "mse":
        return F.mse_loss(torch.sigmoid(logits), labels)
    raise ValueError(f"unknown critic loss {kind!r}")


def state_values(
    model: ValueModel,
    states: Sequence[Sequence[int]],
    pad_id: int,
    *,
    token_budget: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> torch.Tensor:
    """V(s) = sigmoid(head at the last token of s) for token-id states, as a float tensor."""
    was_training = model.training
    model.eval()
    seqs = [PrefixSequence(list(s), [len(s) - 1], [0.0], False) for s in states]
    logits = all_prefix_logits(model, seqs, pad_id, token_budget=token_budget, autocast=autocast)
    model.train(was_training)
    return torch.sigmoid(logits)


def calibration(
    pred: torch.Tensor, target: torch.Tensor, bins: int
) -> tuple[float, list[tuple[float, float, int]]]:
    """Expected calibration error sum_b n_b/N |mean pred_b - mean target_b| over equal-width bins of
    ``pred`` in [0, 1], and each bin's (mean prediction, mean target, count); empty bins give NaNs."""
    index = (pred.clamp(0, 1) * bins).long().clamp(max=bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        sel = index == b
        n = int(sel.sum())
        if n == 0:
            table.append((math.nan, math.nan, 0))
            continue
        p, t = float(pred[sel].mean()), float(target[sel].mean())
        ece += n / len(pred) * abs(p - t)
        table.append((p, t, n))
    return ece, table


def roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties); NaN with one class."""
    positive = positive.bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = torch.argsort(scores.double())
    sorted_scores = scores.double()[order]
    ranks = torch.empty(len(scores), dtype=torch.float64)
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1  # average rank of the tied block
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def evaluate_critic(
    model: ValueModel,
    seqs: Sequence[PrefixSequence],
    pad_id: int,
    *,
    loss: str,
    bins: int,
    token_budget: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> tuple[dict[str, float], list[tuple[float, float, int]]]:
    """Held-out loss, ECE (vs the MC values), Brier score and AUC (vs the final verdict)."""
    was_training = model.training
    model.eval()
    logits = all_prefix_logits(model, seqs, pad_id, token_budget=token_budget, autocast=autocast)
    model.train(was_training)
    labels = torch.tensor([v for s in seqs for v in s.labels])
    verdicts = torch.tensor([s.correct for s in seqs for _ in s.ends])
    pred = torch.sigmoid(logits)
    ece, table = calibration(pred, labels, bins)
    metrics = {
        "val_loss": float(critic_loss(logits, labels, loss)),
        "ece": ece,
        "brier": float(((pred - labels) ** 2).mean()),
        "auc": roc_auc(pred, verdicts),
        "value_mean": float(pred.mean()),
        "label_mean": float(labels.mean()),
    }
    return metrics, table
