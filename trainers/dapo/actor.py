"""Stage 3 of DAPO: the actor (seeds-spec 2.3).

At states s sampled from pi_ref's solutions, K candidate next steps a_i ~ pi_ref(.|s), advantages
A_i = V(s.a_i) - V(s) from the frozen critic (the verifier's reward replaces V(s.a_i) when a_i ends
the solution), and the loss

    L = mean_s (1/K) sum_i (log pi(a_i|s) - log pi_ref(a_i|s) - A_i/beta)^2,

the regression of the policy's log-ratio onto the scaled advantage, whose minimiser over all policies
is pi* ~ pi_ref exp(A/beta) when the log-partition log Z(s) is zero. ``center`` subtracts the
per-state mean over i of both the log-ratio and A/beta, which makes the loss blind to log Z(s): our
engineering choice, not the paper's stated form."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trainers.common.rollout import Completion, RolloutEngine
from trainers.dapo.steps import StepSplitter
from trainers.rl.batch import build_batch, logprobs_and_entropy


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
    loss = ((log_ratio_c - target) ** 2).mean()
    detached = log_ratio.detach()
    return DapoLoss(
        loss=loss,
        abs_log_ratio=float(detached.abs().mean()),
        corr_log_ratio_adv=_pearson(detached, adv),
        adv_mean=float(adv.mean()),
    )


@dataclass
class Candidate:
    """One sampled next step: its text and token ids (with the EOS when the model stopped there), and
    whether it ends the solution (no step boundary in it)."""

    text: str
    ids: list[int]
    terminal: bool


def step_stop_ids(tokenizer, splitter: StepSplitter) -> set[int]:
    """Extra stop tokens that end a candidate step early: the delimiter's id when it is one token
    (the char tokenizer's "\\n"); otherwise none, and the candidate is cut from a longer sample."""
    if splitter.mode != "delimiter":
        return set()
    ids = tokenizer.encode(splitter.delimiter, add_special_tokens=False)
    return {ids[0]} if len(ids) == 1 else set()


def to_candidate(completion: Completion, tokenizer, splitter: StepSplitter, eos_ids: set[int]) -> Candidate:
    text, boundary = splitter.first_step(completion.completion_text)
    ids = tokenizer.encode(text, add_special_tokens=False)
    ended = bool(completion.completion_ids) and completion.completion_ids[-1] in eos_ids
    if not boundary and ended:
        ids.append(completion.completion_ids[-1])  # stopping is part of the final step's action
    return Candidate(text, ids, terminal=not boundary)


def sample_candidates(
    engine: RolloutEngine,
    contexts: Sequence[str],
    *,
    k: int,
    temperature: float,
    max_step_tokens: int,
    seed: int,
    tokenizer,
    splitter: StepSplitter,
    eos_ids: set[int],
) -> list[list[Candidate]]:
    """K next steps from pi_ref for every state text (prompt + steps so far)."""
    groups = engine.generate(
        list(contexts), n=k, temperature=temperature, max_new_tokens=max_step_tokens, seed=seed
    )
    return [[to_candidate(c, tokenizer, splitter, eos_ids) for c in group] for group in groups]


def step_logprobs(
    model, contexts: Sequence[list[int]], actions: Sequence[list[int]], pad_id: int, *, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(a|s) summed over each action's tokens (N,), and the mean full-vocabulary entropy over
    all action tokens (a scalar) when asked."""
    device = next(model.parameters()).device
    batch = build_batch([(list(c), list(a)) for c, a in zip(contexts, actions, strict=True)], pad_id)
    batch = type(batch)(
        *(t.to(device) for t in (batch.input_ids, batch.attention_mask, batch.response_mask, batch.targets))
    )
    logp, entropy = logprobs_and_entropy(model, batch, 1.0, with_entropy=with_entropy)
    mask = batch.response_mask
    summed = (logp * mask).sum(-1)
    mean_entropy = (entropy * mask).sum() / mask.sum().clamp(min=1) if with_entropy else None
    return summed, mean_entropy
