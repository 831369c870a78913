"""Stage 3 of DAPO: the actor (seeds-spec 2.3).

At states s sampled from pi_ref's solutions, K candidate next steps a_i ~ pi_ref(.|s), advantages
A_i = V(s.a_i) - V(s) from the frozen critic (the verifier's reward replaces V(s.a_i) when a_i ends
the solution), and the loss

    L = mean_s (1/K) sum_i (log pi(a_i|s) - log pi_ref(a_i|s) - A_i/beta)^2,

the regression of the policy's log-ratio onto the scaled advantage, whose minimiser over all policies
is pi* ~ pi_ref exp(A/beta) when the log-partition log Z(s) is zero. ``center`` subtracts the
per-state mean over i of both the log-ratio and A/beta, which makes the loss blind to log Z(s): our
engineering choice, not the paper's stated form.

The update runs in token-budget micro-batches of whole states with gradient accumulation
(:func:`actor_backward`); log-probs come from the LM head at the candidate's positions only.

Several ranks (trainers.common.distributed; no-ops in one process): every rank passes the global batch
of states to :func:`actor_backward` and runs forward/backward on its contiguous share of them through
the DDP-wrapped :class:`~trainers.common.policy_step.PolicyLogprobs`; the loss keeps the global state mean and
the statistics are the global batch's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from trainers.common import distributed
from trainers.common.policy_step import PolicyLogprobs
from trainers.common.rollout import Completion, Prompts, RolloutEngine
from trainers.common.rollout_batch import build_batch
from trainers.common.token_batching import split_by_token_budget
from trainers.dapo.steps import StepSplitter
from trainers.dapo.values import prompt_keys_kwargs


@dataclass
class DapoLoss:
    loss: torch.Tensor
    abs_log_ratio: float  # mean |log pi/pi_ref| over candidates
    corr_log_ratio_adv: float  # Pearson correlation of log-ratio and advantage (NaN if constant)
    adv_mean: float


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double().flatten(), y.double().flatten()
    x, y = x - x.mean(), y - y.mean()
    denom = float(x.norm() * y.norm())
    return float((x * y).sum()) / denom if denom > 0 else float("nan")


def _stats(loss: torch.Tensor, log_ratio: torch.Tensor, adv: torch.Tensor) -> DapoLoss:
    detached = log_ratio.detach()
    return DapoLoss(
        loss=loss,
        abs_log_ratio=float(detached.abs().mean()),
        corr_log_ratio_adv=_pearson(detached, adv),
        adv_mean=float(adv.mean()),
    )


def dapo_loss(
    logp: torch.Tensor, ref_logp: torch.Tensor, adv: torch.Tensor, *, beta: float, center: bool = False
) -> DapoLoss:
    """The DAPO loss for S states x K candidates: ``logp`` (S, K) log pi(a_i|s) of the trained policy
    (summed over the step's tokens, with gradient), ``ref_logp`` and ``adv`` (S, K) constants."""
    if logp.shape != ref_logp.shape or logp.shape != adv.shape or logp.dim() != 2:
        raise ValueError(f"expected equal (S, K) shapes, got {logp.shape}, {ref_logp.shape}, {adv.shape}")
    log_ratio = logp - ref_logp
    target = adv / beta
    if center:
        log_ratio_c = log_ratio - log_ratio.mean(dim=1, keepdim=True)
        target = target - target.mean(dim=1, keepdim=True)
    else:
        log_ratio_c = log_ratio
    return _stats(((log_ratio_c - target) ** 2).mean(), log_ratio, adv)


@dataclass
class Candidate:
    """One sampled next step: its text and token ids (with the stop token when the model stopped
    there), and whether it ends the solution."""

    text: str
    ids: list[int]
    terminal: bool
    #: "stop" (a step boundary or a stop token ended it) or "length" (cut at ``max_step_tokens``)
    finish_reason: str = "stop"


def step_stop_ids(tokenizer, splitter: StepSplitter) -> set[int]:
    """Extra stop tokens that end a candidate step early: the delimiter's id when it is one token
    (the char tokenizer's "\\n"); otherwise none, and the candidate is cut from a longer sample."""
    if splitter.mode != "delimiter":
        return set()
    ids = tokenizer.encode(splitter.delimiter, add_special_tokens=False)
    return {ids[0]} if len(ids) == 1 else set()


def to_candidate(completion: Completion, tokenizer, splitter: StepSplitter, eos_ids: set[int]) -> Candidate:
    """The first step of a sampled continuation. It ends the solution only when the model stopped
    (a stop token) before any step boundary. A step cut at ``max_step_tokens`` without a boundary or
    a stop is not an answer: it is an intermediate step, valued by the critic like any other, never
    sent to the verifier as the final solution."""
    text, boundary = splitter.first_step(completion.completion_text)
    ids = tokenizer.encode(text, add_special_tokens=False)
    stopped = bool(completion.completion_ids) and completion.completion_ids[-1] in eos_ids
    if not boundary and stopped:
        ids.append(completion.completion_ids[-1])  # stopping is part of the final step's action
    return Candidate(
        text,
        ids,
        terminal=not boundary and stopped,
        finish_reason="stop" if boundary or stopped else "length",
    )


def sample_candidates(
    engine: RolloutEngine,
    contexts: Prompts,
    *,
    k: int,
    temperature: float,
    max_step_tokens: int,
    seed: int,
    tokenizer,
    splitter: StepSplitter,
    eos_ids: set[int],
    prompt_keys: Sequence[int] | None = None,
) -> list[list[Candidate]]:
    """K next steps from pi_ref for every state (its token ids, or text). ``prompt_keys`` (default: the
    positions) name the states for the sampling noise: a rank sampling a share of the states passes
    their global positions, so a state's candidates do not depend on the world size."""
    if not contexts:
        return []  # a rank whose share is empty
    keys = prompt_keys_kwargs(prompt_keys, len(contexts)) if prompt_keys is not None else {}
    groups = engine.generate(
        list(contexts), n=k, temperature=temperature, max_new_tokens=max_step_tokens, seed=seed, **keys
    )
    return [[to_candidate(c, tokenizer, splitter, eos_ids) for c in group] for group in groups]


def _summed_logprobs(
    forward: torch.nn.Module,
    contexts: Sequence[list[int]],
    actions: Sequence[list[int]],
    pad_id: int,
    *,
    with_entropy: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    """log pi(a|s) summed over each action's tokens (N,) from the LM head at response positions only
    (``forward``: a :class:`PolicyLogprobs`, maybe DDP-wrapped), the sum of the full-vocabulary entropy
    over all action tokens (no gradient: a metric) when asked, and the number of action tokens."""
    device = next(forward.parameters()).device
    batch = build_batch([(list(c), list(a)) for c, a in zip(contexts, actions, strict=True)], pad_id)
    mask = batch.response_mask.to(device)
    logp, entropy = forward(
        batch.input_ids.to(device), batch.attention_mask.to(device), mask,
        temperature=1.0, with_entropy=with_entropy, entropy_grad=False,
    )  # fmt: skip
    entropy_sum = (entropy * mask).sum().detach() if entropy is not None else None
    return (logp * mask).sum(-1), entropy_sum, int(mask.sum())


def _padding_pass(
    forward: torch.nn.Module, pad_id: int, autocast: Callable[[], AbstractContextManager]
) -> None:
    """A zero-loss forward/backward: keeps a rank with fewer micro-batches in step with the others (DDP
    reduces gradients in every backward, and every rank must join each reduction)."""
    with autocast():
        summed, _, _ = _summed_logprobs(forward, [[pad_id] * 2], [[pad_id] * 2], pad_id, with_entropy=False)
    (summed.sum() * 0.0).backward()


@torch.no_grad()
def step_logprobs(
    model,
    contexts: Sequence[list[int]],
    actions: Sequence[list[int]],
    pad_id: int,
    *,
    token_budget: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> torch.Tensor:
    """log pi(a|s) summed over each action's tokens (N,), float32 on the model's device, computed in
    micro-batches of at most ``token_budget`` padded tokens (pi_ref's log-probs)."""
    device = next(model.parameters()).device
    out = torch.zeros(len(actions), dtype=torch.float32, device=device)
    lengths = [len(c) + len(a) for c, a in zip(contexts, actions, strict=True)]
    for group in split_by_token_budget(lengths, token_budget):
        with autocast():
            summed, _, _ = _summed_logprobs(
                PolicyLogprobs(model), [contexts[i] for i in group], [actions[i] for i in group], pad_id,
                with_entropy=False,
            )  # fmt: skip
        out[torch.tensor(group, device=device)] = summed.float()
    return out


def actor_backward(
    model,
    contexts: Sequence[list[int]],
    actions: Sequence[Sequence[list[int]]],
    ref_logp: torch.Tensor,
    adv: torch.Tensor,
    pad_id: int,
    *,
    beta: float,
    center: bool,
    token_budget: int,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    forward: torch.nn.Module | None = None,
) -> tuple[DapoLoss, float]:
    """Accumulate the gradient of the DAPO loss of S states (``contexts[s]`` with its K candidates
    ``actions[s]``; ``ref_logp``, ``adv`` (S, K)) and return the loss with its statistics and the
    mean entropy over all candidate tokens.

    Micro-batches hold whole states (centering couples a state's K candidates), at most
    ``token_budget`` padded tokens each; the loss is a mean over states, so each micro-batch's mean is
    weighted by its share of the states, and loss and gradients equal those of the un-split batch.

    Several ranks: every rank passes the same S states and works on its contiguous share of them,
    through ``forward`` (the DDP-wrapped ``PolicyLogprobs(model)``; default: ``model`` unwrapped). The
    weights stay shares of all S states and the loss is multiplied by the world size (DDP averages the
    gradients), ranks with fewer micro-batches pad them with zero-loss passes, and loss, entropy and
    the log-ratio statistics are summed / gathered over the ranks: the global batch's."""
    S, K = ref_logp.shape
    forward = forward if forward is not None else PolicyLogprobs(model)
    world = distributed.world_size()
    mine = list(range(*distributed.shard_bounds(S)))
    # a state's K rows padded to its longest candidate: K x that length is its padded size
    lengths = [K * max(len(contexts[s]) + len(a) for a in actions[s]) for s in mine]
    groups = [[mine[i] for i in g] for g in split_by_token_budget(lengths, token_budget)]
    padding = int(distributed.all_reduce_max(float(len(groups)))) - len(groups) if world > 1 else 0
    log_ratio = torch.zeros_like(ref_logp)
    loss, entropy_sum, tokens = 0.0, 0.0, 0
    for group in groups:
        rows = torch.tensor(group, device=ref_logp.device)
        with autocast():
            summed, entropy, n = _summed_logprobs(
                forward, [contexts[s] for s in group for _ in range(K)], [a for s in group for a in actions[s]],
                pad_id, with_entropy=True,
            )  # fmt: skip
        part = dapo_loss(summed.view(len(group), K), ref_logp[rows], adv[rows], beta=beta, center=center)
        weighted = part.loss * (len(group) / S)
        (weighted * world if world > 1 else weighted).backward()
        loss += float(weighted.detach())
        log_ratio[rows] = summed.detach().view(len(group), K).float() - ref_logp[rows]
        entropy_sum += float(entropy)
        tokens += n
    for _ in range(padding):
        _padding_pass(forward, pad_id, autocast)
    if world > 1:
        sums = distributed.all_reduce_sums({"loss": loss, "entropy": entropy_sum, "tokens": float(tokens)})
        loss, entropy_sum, tokens = sums["loss"], sums["entropy"], int(sums["tokens"])
        log_ratio = distributed.all_reduce_sum(log_ratio)  # each row is set on one rank, 0 elsewhere
    return _stats(torch.tensor(loss), log_ratio, adv), entropy_sum / max(1, tokens)
