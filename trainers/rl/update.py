"""The policy update of one PPO mini-batch, in token-budget micro-batches (issue 10, point 2).

Why: a long-CoT batch does not fit one forward. Each mini-batch is split by
:func:`~trainers.common.token_batching.split_by_token_budget` on the rows' prompt + response lengths
(similar lengths together, little padding), every micro-batch is cut to its own longest row, and its
log-probs come from :func:`~trainers.common.token_batching.token_logprobs` (response positions only, the
LM head in chunks). Gradients accumulate over the micro-batches, and the loss of each is weighted so that
their sum is the loss of the un-split mini-batch (:func:`trainers.rl.core.aggregation_weights`):

* ``token_mean_global``: every token weighs 1 / (response tokens of the mini-batch), so the sum is OR1's
  global token mean whatever the split;
* ``verl_compat``: verl's micro-batches are the mini-batch's rows, in order, in two halves (as before
  micro-batching); each half's token mean is weighted by its share of the sequences. Those weights are
  fixed by the mini-batch, not by the memory split, so the loss and gradient do not depend on
  ``micro_batch_tokens`` either.

Both engines accumulate the same way: torch sums ``.grad`` over the backward calls and steps once; DeepSpeed
is told which backward closes the accumulation (``set_gradient_accumulation_boundary``) and its loss is
not divided again (``scale_wrt_gas=False``; its configured ``gradient_accumulation_steps`` is 1).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any

import torch

from trainers.common import distributed
from trainers.common.policy_step import DeepSpeedStepper, TorchStepper
from trainers.common.rollout_batch import RolloutBatch
from trainers.common.token_batching import split_by_token_budget
from trainers.rl.core import aggregation_weights, policy_loss


def micro_batches(batch: RolloutBatch, rows: list[int], budget: int) -> list[list[int]]:
    """``rows`` of ``batch`` grouped into micro-batches of at most ``budget`` padded tokens (a longer row
    alone)."""
    lengths = batch.attention_mask[torch.tensor(rows, device=batch.attention_mask.device)].sum(-1).tolist()
    return [[rows[i] for i in group] for group in split_by_token_budget(lengths, budget)]


def batch_logprobs(
    policy: Any,
    batch: RolloutBatch,
    *,
    temperature: float,
    budget: int,
    autocast: contextlib.AbstractContextManager | None = None,
    dummy: RolloutBatch | None = None,
) -> torch.Tensor:
    """log pi(target) of every response position of ``batch`` (B, L-1; 0 elsewhere), no gradient, in
    micro-batches: the old-policy and reference log-probs. With several ranks, ``dummy`` pads this
    rank's passes to the others' count (see _padded)."""
    logp, _ = _batch_stats(
        policy, batch, temperature=temperature, budget=budget, autocast=autocast, dummy=dummy,
        with_entropy=False,
    )  # fmt: skip
    return logp


def batch_logprobs_and_entropy(
    policy: Any,
    batch: RolloutBatch,
    *,
    temperature: float,
    budget: int,
    autocast: contextlib.AbstractContextManager | None = None,
    dummy: RolloutBatch | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`batch_logprobs` and the full-vocabulary entropy of every response position (B, L-1), from
    the same logits: the per-token arrays of the logged samples (trainers.rl.train._token_stats)."""
    logp, entropy = _batch_stats(
        policy, batch, temperature=temperature, budget=budget, autocast=autocast, dummy=dummy,
        with_entropy=True,
    )  # fmt: skip
    assert entropy is not None
    return logp, entropy


def _batch_stats(
    policy: Any,
    batch: RolloutBatch,
    *,
    temperature: float,
    budget: int,
    autocast: contextlib.AbstractContextManager | None,
    dummy: RolloutBatch | None,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    out = torch.zeros(batch.response_mask.shape, dtype=torch.float32, device=batch.input_ids.device)
    ent = torch.zeros_like(out) if with_entropy else None
    groups = micro_batches(batch, list(range(len(batch))), budget) if len(batch) else []
    with torch.no_grad():
        for rows in _padded(groups, dummy):
            sub = batch.narrow(rows) if rows is not None else dummy
            with autocast or contextlib.nullcontext():
                logp, entropy = policy(
                    sub.input_ids, sub.attention_mask, sub.response_mask,
                    temperature=temperature, with_entropy=with_entropy, entropy_grad=False,
                )  # fmt: skip
            if rows is not None:
                at = torch.tensor(rows, device=out.device)
                out[at, : logp.shape[1]] = logp.float()
                if ent is not None:
                    ent[at, : entropy.shape[1]] = entropy.float()
    return out, ent


def _padded(groups: list[list[int]], dummy: RolloutBatch | None) -> list[list[int] | None]:
    """``groups`` followed by None (a pass over ``dummy``) up to the most micro-batches any rank has:
    under ZeRO-3 every forward gathers parameters and every backward reduces gradients with the other
    ranks (DDP too), so all ranks make as many passes. Without ``dummy`` (one process): ``groups``."""
    if dummy is None:
        return list(groups)
    count = int(distributed.all_reduce_max(float(len(groups))))
    return [*groups, *([None] * (count - len(groups)))]


def shared_weights(
    row_tokens: list[float],
    minibatch: list[int],
    offset: int,
    local_rows: int,
    aggregation: str,
    device: torch.device,
) -> torch.Tensor:
    """The loss weights of this rank's rows (``offset`` .. ``offset + local_rows - 1`` of the step) when
    several ranks share the mini-batch ``minibatch`` (its rows in the step's order): the weights one
    process gives them (the global token mean, or verl's halves), from every row's response tokens
    (``row_tokens``, all ranks'), times the world size because DDP and DeepSpeed average gradients."""
    counts = torch.tensor([float(row_tokens[g]) for g in minibatch], dtype=torch.float32).unsqueeze(-1)
    whole = aggregation_weights(counts, aggregation, micro_batch_seqs=max(1, len(minibatch) // 2))
    out = torch.zeros(local_rows, dtype=torch.float32)
    for j, g in enumerate(minibatch):
        if offset <= g < offset + local_rows:
            out[g - offset] = whole[j]
    return (out * distributed.world_size()).to(device)


def update_minibatch(
    policy: Any,
    stepper: TorchStepper | DeepSpeedStepper,
    batch: RolloutBatch,
    rows: list[int],
    advantages: torch.Tensor,
    old_logp: torch.Tensor,
    *,
    old_from_forward: bool,
    ref_logp: torch.Tensor | None,
    algo: Any,
    temperature: float,
    entropy_coef: float,
    budget: int,
    autocast: contextlib.AbstractContextManager | None = None,
    weights: torch.Tensor | None = None,
    dummy: RolloutBatch | None = None,
) -> dict[str, float]:
    """One optimizer step on the mini-batch ``rows`` of ``batch``, accumulated over token-budget
    micro-batches. ``old_from_forward``: the ratio's denominator is this forward's own detached log-probs
    (the one on-policy update of OR1), written into ``old_logp``; otherwise ``old_logp`` holds them.
    Returns the mini-batch's loss (sum over micro-batches), its token-mean metrics and the grad norm.

    Several ranks: ``rows`` are this rank's rows of the mini-batch (possibly none), ``weights`` their
    share of the whole mini-batch's loss (:func:`shared_weights`), ``dummy`` the row that pads this rank's
    passes to the others' count; the returned metrics are the whole mini-batch's."""
    device = batch.input_ids.device
    if weights is None:  # weights fixed by the whole mini-batch (verl's halves in its row order)
        index = torch.tensor(rows, device=device)
        weights = torch.zeros(len(batch), dtype=torch.float32, device=device)
        weights[index] = aggregation_weights(
            batch.response_mask[index], algo.loss_agg, micro_batch_seqs=max(1, len(rows) // 2)
        )
    groups = micro_batches(batch, rows, budget) if rows else []
    passes = _padded(groups, dummy)
    sums: dict[str, float] = defaultdict(float)
    tokens = 0
    stepper.begin()
    for i, group in enumerate(passes):
        if group is None:  # a pass that only keeps this rank in step with the others: zero loss
            with autocast or contextlib.nullcontext():  # called as a real pass is (ZeRO-3 traces the calls)
                logp, entropy = policy(
                    dummy.input_ids, dummy.attention_mask, dummy.response_mask,
                    temperature=temperature, entropy_grad=entropy_coef != 0,
                )  # fmt: skip
            zero = logp.sum() * 0.0 + (entropy.sum() * 0.0 if entropy is not None else 0.0)
            stepper.backward(zero, last=i == len(passes) - 1)
            continue
        sub = batch.narrow(group)
        at = torch.tensor(group, device=device)
        width = sub.response_mask.shape[1]
        with autocast or contextlib.nullcontext():
            logp, entropy = policy(
                sub.input_ids, sub.attention_mask, sub.response_mask,
                temperature=temperature, entropy_grad=entropy_coef != 0,
            )  # fmt: skip
        if old_from_forward:
            old_logp[at, :width] = logp.detach()
        out = policy_loss(
            logp, old_logp[at, :width], advantages[at], sub.response_mask,
            clip_low=algo.clip_low, clip_high=algo.clip_high, entropy=entropy, entropy_coef=entropy_coef,
            ref_logp=ref_logp[at, :width] if ref_logp is not None else None, kl_coef=algo.kl_coef,
            row_weights=weights[at],
        )  # fmt: skip
        stepper.backward(out.loss, last=i == len(passes) - 1)
        sums["loss"] += out.loss.item()
        for name in ("pg_loss", "entropy", "clipfrac", "approx_kl", "kl_loss"):
            sums[name] += float(getattr(out, name)) * out.tokens
        tokens += out.tokens
    names = ("pg_loss", "entropy", "clipfrac", "approx_kl", "kl_loss")
    if dummy is not None:  # the whole mini-batch's sums; each rank's loss carried world_size x its share
        total = distributed.all_reduce_sums(
            {**{n: sums[n] for n in names}, "loss": sums["loss"], "tokens": tokens}
        )
        sums, tokens = {**total, "loss": total["loss"] / distributed.world_size()}, total["tokens"]
    stats = {name: sums[name] / max(tokens, 1) for name in names}
    stats["loss"] = sums["loss"]
    stats["grad_norm"] = stepper.step()
    stats["micro_batches"] = float(len(passes))
    return stats
