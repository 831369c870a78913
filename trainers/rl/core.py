"""The algorithmic core of the OR1/MAGIC recipe as pure tensor functions (seeds-spec section 1).

Shapes: B sequences (prompt groups laid out contiguously), T response tokens, masks are 1 for real
response tokens. Nothing here knows about models, data or logging."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO outcome advantage: A_ij = (r_ij - mean_j r_ij) / (std_j r_ij + eps), std unbiased (N-1),
    eps added to the std (not the variance). A group of one gets mean 0 and std 1, as in the repo.

    rewards: (B,) float; group_ids: (B,) int, equal ids share a prompt. Returns (B,)."""
    rewards = rewards.to(torch.float64)
    uniq, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    sums = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, rewards)
    means = sums / counts
    sq = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, (rewards - means[inverse]) ** 2)
    denom = (counts - 1).clamp(min=1)
    std = torch.sqrt(sq / denom)
    mean = torch.where(counts > 1, means, torch.zeros_like(means))
    std = torch.where(counts > 1, std, torch.ones_like(std))
    return ((rewards - mean[inverse]) / (std[inverse] + eps)).to(torch.float32)


def informative_groups(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """Rejection sampling: a (B,) bool mask keeping groups whose rewards are not all equal (OR1 drops
    all-0 and all-1 groups: their advantages are all zero and they only dilute the batch)."""
    uniq, inverse = torch.unique(group_ids, return_inverse=True)
    lo = torch.full((len(uniq),), float("inf"), dtype=torch.float64).scatter_reduce(
        0, inverse, rewards.double(), reduce="amin"
    )
    hi = torch.full((len(uniq),), float("-inf"), dtype=torch.float64).scatter_reduce(
        0, inverse, rewards.double(), reduce="amax"
    )
    return (hi > lo)[inverse]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Full-vocabulary entropy per token, logsumexp(z) - sum softmax(z) z, for logits already divided by
    the sampling temperature. (..., V) -> (...)"""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def aggregation_weights(
    mask: torch.Tensor, aggregation: str = "token_mean_global", micro_batch_seqs: int | None = None
) -> torch.Tensor:
    """Per-sequence weights ``w`` (B,) with ``loss = sum_b w_b sum_t objective[b, t] mask[b, t]``.

    ``token_mean_global``: ``w_b = 1 / (response tokens of the batch)``, the paper's global token mean.
    ``verl_compat``: the rows, in order, form groups of ``micro_batch_seqs`` sequences (verl's
    micro-batches; the trainer uses half the mini-batch); each group's token mean is weighted by its
    share of the sequences, so ``w_b = (n_g / B) / (response tokens of group g)``.

    Written as weights because they are fixed by the whole mini-batch: any split of its rows into
    memory micro-batches then sums ``w``-weighted token sums to exactly the un-split loss."""
    tokens = mask.to(torch.float32).sum(-1)
    B = mask.shape[0]
    if aggregation == "token_mean_global":
        return torch.full((B,), 1.0, dtype=torch.float32, device=mask.device) / tokens.sum().clamp(min=1)
    if aggregation != "verl_compat":
        raise ValueError(f"unknown aggregation {aggregation!r}")
    if not micro_batch_seqs:
        raise ValueError("verl_compat aggregation needs micro_batch_seqs")
    weights = torch.empty(B, dtype=torch.float32, device=mask.device)
    for start in range(0, B, micro_batch_seqs):
        sl = slice(start, start + micro_batch_seqs)
        n = tokens[sl].numel()
        weights[sl] = (n / B) / tokens[sl].sum().clamp(min=1)
    return weights


@dataclass
class PolicyLoss:
    loss: torch.Tensor  # what backward() is called on
    pg_loss: torch.Tensor
    entropy: torch.Tensor  # masked mean full-vocab entropy
    clipfrac: torch.Tensor
    approx_kl: torch.Tensor  # masked mean of (old_logp - logp): the drift from the rollout policy
    kl_loss: torch.Tensor
    tokens: int  # response tokens the masked means are over (to combine micro-batches' metrics)


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    ref_logp: torch.Tensor | None = None,
    kl_coef: float = 0.0,
    aggregation: str = "token_mean_global",
    micro_batch_seqs: int | None = None,
    row_weights: torch.Tensor | None = None,
) -> PolicyLoss:
    """Token-level PPO-clip loss with an entropy bonus and an optional KL term.

    logp/old_logp/mask: (B, T); advantages: (B,) broadcast over tokens (the same scalar for every
    token of a response). ``token_mean_global`` averages over every response token of the batch (the
    paper's form); ``verl_compat`` averages tokens within micro-batches of ``micro_batch_seqs``
    sequences and weights each micro-batch by its share of sequences (the repo's form); see
    :func:`aggregation_weights`. ``row_weights`` (B,) overrides both: the loss of a slice of a larger
    batch whose weights were computed on the whole of it (token-budget micro-batches)."""
    mask = mask.to(logp.dtype)
    adv = advantages[:, None].to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    ent = entropy if entropy is not None else torch.zeros_like(logp)
    kl = torch.zeros_like(logp)
    if ref_logp is not None and kl_coef:
        # k3 estimator of KL(pi || ref), non-negative and unbiased (as in GRPO's paper)
        log_r = ref_logp - logp
        kl = torch.exp(log_r) - log_r - 1
    objective = per_token - entropy_coef * ent + kl_coef * kl

    if row_weights is None:
        row_weights = aggregation_weights(mask, aggregation, micro_batch_seqs)
    loss = (objective * mask * row_weights[:, None].to(logp.dtype)).sum()

    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).to(logp.dtype), mask)
        approx_kl = masked_mean(old_logp - logp, mask)
    return PolicyLoss(
        loss=loss,
        pg_loss=masked_mean(per_token, mask).detach(),
        entropy=masked_mean(ent, mask).detach(),
        clipfrac=clipfrac,
        approx_kl=approx_kl,
        kl_loss=masked_mean(kl, mask).detach(),
        tokens=int(mask.sum().item()),
    )


@dataclass
class EntropyController:
    """Adaptive entropy control (OR1's EntController, seeds-spec 1.2), as a value object.

    After each step with measured entropy e: c += delta if e < target else c -= delta, clipped to
    [min, max], and the bonus is enabled only while e < target. The coefficient used in the loss at
    step k+1 is c * enabled as left by step k (the repo's one-step lag). Saved in checkpoints (the
    original code loses it on resume)."""

    target: float = 0.2
    delta: float = 1e-4
    min: float = 0.0
    max: float = 5e-3
    value: float = 0.0
    enabled: bool = True

    @property
    def coef(self) -> float:
        """The coefficient the next loss uses."""
        return self.value if self.enabled else 0.0

    def update(self, entropy: float) -> EntropyController:
        below = entropy < self.target
        value = self.value + (self.delta if below else -self.delta)
        return EntropyController(
            self.target, self.delta, self.min, self.max, min(max(value, self.min), self.max), below
        )

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> EntropyController:
        return cls(**state)
